//! `TokenBucket`: the per-sensor rate limiter (core `limiter`), shared with `Pipeline`.
//!
//! The core bucket lives in an `Arc<Mutex<_>>` so a `Pipeline` given this object locks the same
//! state with the GIL released. Keys are hashed while the GIL is held (the strings are Python
//! objects), then the table is touched with the GIL released.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use infrawatch_core::limiter::{KeyHasher, TokenBucket};
use numpy::PyArray1;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::errors::value_error;

#[pyclass(name = "TokenBucket", module = "infrawatch._core", frozen)]
pub struct PyTokenBucket {
    inner: Arc<Mutex<TokenBucket>>,
    /// A copy of the core's key hasher, so keys are hashed without taking the lock.
    hasher: KeyHasher,
    rate_per_s: f64,
    burst: f64,
    max_keys: Option<usize>,
}

impl PyTokenBucket {
    /// The shared core limiter (the pipeline binding locks it with the GIL released).
    #[allow(dead_code)] // used by the pipeline binding
    pub(crate) fn shared(&self) -> Arc<Mutex<TokenBucket>> {
        Arc::clone(&self.inner)
    }

    /// Run `f` on the locked core. Uncontended: take the lock directly (cheaper than releasing the
    /// GIL); contended (a pipeline batch is running): wait for it with the GIL released.
    fn with_bucket<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut TokenBucket) -> R + Send,
    ) -> R {
        if let Ok(mut guard) = self.inner.try_lock() {
            return f(&mut guard);
        }
        py.detach(|| f(&mut lock(&self.inner)))
    }
}

/// Lock, recovering from a poisoned mutex: the bucket table is valid after any panic point.
fn lock(m: &Mutex<TokenBucket>) -> MutexGuard<'_, TokenBucket> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wall clock in ns since the epoch (what `time.time_ns()` returns).
fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Hash every key of a sequence of `str` (a bare `str`/`bytes` is refused: it would iterate chars).
fn hash_keys(hasher: KeyHasher, keys: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    fn one(hasher: KeyHasher, item: &Bound<'_, PyAny>) -> PyResult<u64> {
        let s = item
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("keys must be a sequence of str"))?;
        Ok(hasher.hash(s.to_str()?))
    }
    if keys.is_instance_of::<PyString>() || keys.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "keys must be a sequence of str, not a single str",
        ));
    }
    if let Ok(list) = keys.cast::<PyList>() {
        return list.iter().map(|k| one(hasher, &k)).collect();
    }
    if let Ok(tuple) = keys.cast::<PyTuple>() {
        return tuple.iter().map(|k| one(hasher, &k)).collect();
    }
    let mut out = Vec::with_capacity(keys.len().unwrap_or(0));
    for k in keys.try_iter()? {
        out.push(one(hasher, &k?)?);
    }
    Ok(out)
}

#[pymethods]
impl PyTokenBucket {
    #[new]
    #[pyo3(signature = (rate_per_s = 1.0, burst = 1.0, max_keys = None))]
    fn new(rate_per_s: f64, burst: f64, max_keys: Option<usize>) -> PyResult<Self> {
        let core = TokenBucket::new(rate_per_s, burst, max_keys).map_err(value_error)?;
        Ok(Self {
            hasher: core.key_hasher(),
            inner: Arc::new(Mutex::new(core)),
            rate_per_s,
            burst,
            max_keys,
        })
    }

    /// Take one token from `key`'s bucket if one is available.
    #[pyo3(signature = (key, now_ns = None))]
    fn allow(&self, py: Python<'_>, key: &str, now_ns: Option<i64>) -> bool {
        let hash = self.hasher.hash(key);
        let now = now_ns.unwrap_or_else(wall_ns);
        self.with_bucket(py, |b| b.allow_hashed(hash, now))
    }

    /// `allow` for each key in order (a repeated key consumes each time); a bool array.
    #[pyo3(signature = (keys, now_ns = None))]
    fn allow_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        now_ns: Option<i64>,
    ) -> PyResult<Bound<'py, PyArray1<bool>>> {
        let hashes = hash_keys(self.hasher, keys)?;
        let now = now_ns.unwrap_or_else(wall_ns);
        let inner = &self.inner;
        let allowed = py.detach(|| {
            let mut bucket = lock(inner);
            hashes
                .iter()
                .map(|&h| bucket.allow_hashed(h, now))
                .collect::<Vec<bool>>()
        });
        Ok(PyArray1::from_vec(py, allowed))
    }

    /// Seconds until `allow(key)` would succeed (0.0 when a token is available); exact to the ns.
    #[pyo3(signature = (key, now_ns = None))]
    fn retry_after_s(&self, py: Python<'_>, key: &str, now_ns: Option<i64>) -> f64 {
        let hash = self.hasher.hash(key);
        let now = now_ns.unwrap_or_else(wall_ns);
        self.with_bucket(py, |b| b.retry_after_hashed(hash, now))
    }

    /// Give `key` its own rate and burst (its current token count is kept, capped at `burst`).
    fn set_rate(&self, py: Python<'_>, key: &str, rate_per_s: f64, burst: f64) -> PyResult<()> {
        self.with_bucket(py, |b| b.set_rate(key, rate_per_s, burst))
            .map_err(value_error)
    }

    /// Return `key` to the default rate; True when it had an override.
    fn clear_rate(&self, py: Python<'_>, key: &str) -> bool {
        self.with_bucket(py, |b| b.clear_rate(key))
    }

    /// `(rate_per_s, burst)` of `key`'s override, or None when it uses the default.
    fn rate_of(&self, py: Python<'_>, key: &str) -> Option<(f64, f64)> {
        self.with_bucket(py, |b| b.rate_of(key))
    }

    #[getter]
    fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }

    #[getter]
    fn burst(&self) -> f64 {
        self.burst
    }

    #[getter]
    fn max_keys(&self) -> Option<usize> {
        self.max_keys
    }

    /// Keys evicted before their bucket refilled (only under `max_keys` pressure).
    #[getter]
    fn evictions(&self, py: Python<'_>) -> u64 {
        self.with_bucket(py, |b| b.evictions())
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.with_bucket(py, |b| b.len())
    }

    fn __repr__(&self) -> String {
        let max = self
            .max_keys
            .map_or_else(|| "None".to_owned(), |m| m.to_string());
        format!(
            "TokenBucket(rate_per_s={:?}, burst={:?}, max_keys={max})",
            self.rate_per_s, self.burst
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenBucket>()
}
