//! `decode(payloads, topics=None, received_ns=None)` and the `ReadingBatch` class.
//!
//! Inputs are borrowed (`bytes`) or copied (`bytearray`, other buffers) before the GIL is
//! released; outputs are built on first access and cached, with site, zone, kind and reason
//! strings shared between rows.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use infrawatch_core::batch::ReadingBatch;
use infrawatch_core::decode::{decode as decode_core, REASON_CODES};
use infrawatch_core::fields::Kind;
use numpy::PyArray1;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

/// Decoded readings in columns (DESIGN.md §2). Immutable; each attribute is built once.
#[pyclass(name = "ReadingBatch", module = "infrawatch._core", frozen)]
pub struct PyReadingBatch {
    inner: ReadingBatch,
    sensor_id: PyOnceLock<Py<PyList>>,
    kind: PyOnceLock<Py<PyList>>,
    site: PyOnceLock<Py<PyList>>,
    zone: PyOnceLock<Py<PyList>>,
    timestamp_ns: PyOnceLock<Py<PyArray1<i64>>>,
    fields: PyOnceLock<Py<PyDict>>,
    source: PyOnceLock<Py<PyArray1<i32>>>,
    errors: PyOnceLock<Py<PyList>>,
}

impl PyReadingBatch {
    #[must_use]
    pub fn new(inner: ReadingBatch) -> Self {
        PyReadingBatch {
            inner,
            sensor_id: PyOnceLock::new(),
            kind: PyOnceLock::new(),
            site: PyOnceLock::new(),
            zone: PyOnceLock::new(),
            timestamp_ns: PyOnceLock::new(),
            fields: PyOnceLock::new(),
            source: PyOnceLock::new(),
            errors: PyOnceLock::new(),
        }
    }

    /// The core batch, for the other kernels' bindings (`FeatureStore.update(batch)`).
    #[must_use]
    pub fn batch(&self) -> &ReadingBatch {
        &self.inner
    }

    /// A list of interned strings picked by `ids` (sites or zones).
    fn interned_list(&self, py: Python<'_>, ids: &[u32]) -> PyResult<Py<PyList>> {
        let table: Vec<Bound<'_, PyString>> = self
            .inner
            .interned()
            .iter()
            .map(|s| PyString::new(py, s))
            .collect();
        let empty = PyString::new(py, "");
        let items = ids.iter().map(|&i| table.get(i as usize).unwrap_or(&empty));
        Ok(PyList::new(py, items)?.unbind())
    }
}

#[pymethods]
impl PyReadingBatch {
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        let b = &self.inner;
        let mut counts = [0usize; 3];
        for k in b.kinds() {
            counts[Kind::ALL.iter().position(|x| x == k).unwrap_or(0)] += 1;
        }
        let kinds: Vec<String> = Kind::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{}={n}", k.as_str()))
            .collect();
        let fields: Vec<&str> = b.field_names().collect();
        format!(
            "ReadingBatch({} readings from {} messages, {} errors; kinds: {}; fields: {})",
            b.len(),
            b.messages,
            b.errors.len(),
            if kinds.is_empty() {
                "-".into()
            } else {
                kinds.join(", ")
            },
            if fields.is_empty() {
                "-".into()
            } else {
                fields.join(", ")
            },
        )
    }

    /// Number of input messages.
    #[getter]
    fn messages(&self) -> usize {
        self.inner.messages
    }

    #[getter]
    fn sensor_id(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.sensor_id
            .get_or_try_init(py, || sensor_list(py, &self.inner))
            .map(|l| l.clone_ref(py))
    }

    #[getter]
    fn kind(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.kind
            .get_or_try_init(py, || {
                let names = Kind::ALL.map(|k| PyString::intern(py, k.as_str()));
                let items = self
                    .inner
                    .kinds()
                    .iter()
                    .map(|k| &names[Kind::ALL.iter().position(|x| x == k).unwrap_or(0)]);
                Ok::<_, PyErr>(PyList::new(py, items)?.unbind())
            })
            .map(|l| l.clone_ref(py))
    }

    #[getter]
    fn site(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.site
            .get_or_try_init(py, || self.interned_list(py, self.inner.site_ids()))
            .map(|l| l.clone_ref(py))
    }

    #[getter]
    fn zone(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.zone
            .get_or_try_init(py, || self.interned_list(py, self.inner.zone_ids()))
            .map(|l| l.clone_ref(py))
    }

    #[getter]
    fn timestamp_ns(&self, py: Python<'_>) -> Py<PyArray1<i64>> {
        self.timestamp_ns
            .get_or_init(py, || {
                PyArray1::from_slice(py, &self.inner.timestamp_ns).unbind()
            })
            .clone_ref(py)
    }

    #[getter]
    fn source(&self, py: Python<'_>) -> Py<PyArray1<i32>> {
        self.source
            .get_or_init(py, || PyArray1::from_slice(py, &self.inner.source).unbind())
            .clone_ref(py)
    }

    /// Canonical columns first (fixed order), then unknown fields; NaN where missing.
    #[getter]
    fn fields(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        self.fields
            .get_or_try_init(py, || {
                let d = PyDict::new(py);
                for (name, values) in self.inner.fields() {
                    d.set_item(PyString::intern(py, name), PyArray1::from_slice(py, values))?;
                }
                Ok::<_, PyErr>(d.unbind())
            })
            .map(|d| d.clone_ref(py))
    }

    /// `(input index, reason code, message)` per rejected message or gateway element.
    #[getter]
    fn errors(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.errors
            .get_or_try_init(py, || {
                let items = self
                    .inner
                    .errors
                    .iter()
                    .map(|e| (e.index, PyString::intern(py, e.reason), e.message.as_str()));
                Ok::<_, PyErr>(PyList::new(py, items)?.unbind())
            })
            .map(|l| l.clone_ref(py))
    }
}

/// The sensor ids as a list of str. When they are all ASCII (the usual case), one str holds them
/// all and each row's is a slice of it (`PyUnicode_Substring`: a copy, no UTF-8 decoding —
/// about half the cost of a str per id from UTF-8).
fn sensor_list(py: Python<'_>, b: &ReadingBatch) -> PyResult<Py<PyList>> {
    let text = b.sensor_text();
    if text.is_empty() || !text.is_ascii() {
        return Ok(PyList::new(py, b.sensor_ids())?.unbind());
    }
    let all = PyString::new(py, text);
    let ends = b.sensor_ends();
    let n = ffi::Py_ssize_t::try_from(ends.len())
        .map_err(|_| PyValueError::new_err("batch too large"))?;
    // SAFETY: PyList_New returns a new reference (or NULL with an exception set); its items
    // start NULL, which list deallocation allows should we fail half-way.
    let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(n))? };
    let mut start: ffi::Py_ssize_t = 0;
    for (i, &end) in ends.iter().enumerate() {
        // ASCII: byte offsets are character offsets. `i < n`, so the casts are lossless.
        #[allow(clippy::cast_possible_wrap)]
        let (i, end) = (i as ffi::Py_ssize_t, end as ffi::Py_ssize_t);
        // SAFETY: `all` is a live str and 0 <= start <= end <= len(all); Substring returns a new
        // reference or NULL with an exception set. PyList_SetItem steals the reference (also on
        // failure) and `i` is within the list.
        unsafe {
            let item = ffi::PyUnicode_Substring(all.as_ptr(), start, end);
            if item.is_null() {
                return Err(PyErr::fetch(py));
            }
            if ffi::PyList_SetItem(list.as_ptr(), i, item) != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        start = end;
    }
    Ok(list.cast_into::<PyList>()?.unbind())
}

/// The payload bytes of one message: borrowed from an immutable `bytes`, or copied.
enum Payload<'py> {
    Bytes(Bound<'py, PyBytes>),
    Owned(Vec<u8>),
}

fn payload<'py>(item: Bound<'py, PyAny>, index: usize) -> PyResult<Payload<'py>> {
    let item = match item.cast_into::<PyBytes>() {
        Ok(b) => return Ok(Payload::Bytes(b)),
        Err(e) => e.into_inner(),
    };
    // A bytearray (or any writable buffer) can change while the GIL is released: copy it.
    if let Ok(b) = item.cast::<PyByteArray>() {
        return Ok(Payload::Owned(b.to_vec()));
    }
    if !item.is_instance_of::<PyString>() {
        if let Ok(buf) = PyBuffer::<u8>::get(&item) {
            return Ok(Payload::Owned(buf.to_vec(item.py())?));
        }
    }
    Err(PyTypeError::new_err(format!(
        "payloads[{index}] is {}, not bytes, bytearray or memoryview",
        item.get_type().name()?
    )))
}

/// The payloads of one call, held (borrowed or copied) for as long as the core reads them.
pub(crate) struct HeldPayloads<'py>(Vec<Payload<'py>>);

impl HeldPayloads<'_> {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Plain byte slices: `Send`, so they can cross into `py.detach`.
    pub(crate) fn slices(&self) -> Vec<&[u8]> {
        self.0
            .iter()
            .map(|p| match p {
                Payload::Bytes(b) => b.as_bytes(),
                Payload::Owned(v) => v.as_slice(),
            })
            .collect()
    }
}

/// Accept any iterable of bytes-like objects (not a single `bytes`/`str`).
pub(crate) fn hold_payloads<'py>(payloads: &Bound<'py, PyAny>) -> PyResult<HeldPayloads<'py>> {
    if payloads.is_instance_of::<PyBytes>() || payloads.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "payloads must be a sequence of bytes objects, not a single one",
        ));
    }
    let mut held = Vec::with_capacity(payloads.len().unwrap_or(0));
    for (i, item) in payloads.try_iter()?.enumerate() {
        held.push(payload(item?, i)?);
    }
    Ok(HeldPayloads(held))
}

/// The topic objects of one call (checked: a sequence of str, one per payload), or `None`.
pub(crate) fn topic_objects<'py>(
    topics: Option<&Bound<'py, PyAny>>,
    n_payloads: usize,
) -> PyResult<Option<Vec<Bound<'py, PyString>>>> {
    let Some(t) = topics else { return Ok(None) };
    if t.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "topics must be a sequence of str, not a single str",
        ));
    }
    let mut held = Vec::with_capacity(n_payloads);
    for item in t.try_iter()? {
        let s = item?.cast_into::<PyString>().map_err(|e| {
            PyTypeError::new_err(format!(
                "topics must be str, not {}",
                e.into_inner().get_type()
            ))
        })?;
        held.push(s);
    }
    if held.len() != n_payloads {
        return Err(PyValueError::new_err(format!(
            "got {} topics for {} payloads; pass one topic per payload",
            held.len(),
            n_payloads
        )));
    }
    Ok(Some(held))
}

/// The text of each topic: borrowed from the str's cached UTF-8 (no copy for the usual ASCII
/// topic), or a lossy copy for a str with lone surrogates (which cannot come from MQTT; its
/// replacement text fails later as `bad_topic`).
pub(crate) fn topic_texts<'a>(topics: &'a [Bound<'_, PyString>]) -> Vec<Cow<'a, str>> {
    topics
        .iter()
        .map(|s| {
            s.to_str()
                .map_or_else(|_| s.to_string_lossy(), Cow::Borrowed)
        })
        .collect()
}

/// Decode MQTT/HTTP payloads into a columnar `ReadingBatch` (see DESIGN.md §1–2 and
/// docs/reason-codes.md). `topics`, when given, must have one topic per payload;
/// `received_ns` (default: now) stands in for missing timestamps.
#[pyfunction]
#[pyo3(signature = (payloads, topics = None, received_ns = None))]
fn decode(
    py: Python<'_>,
    payloads: &Bound<'_, PyAny>,
    topics: Option<&Bound<'_, PyAny>>,
    received_ns: Option<i64>,
) -> PyResult<PyReadingBatch> {
    let held = hold_payloads(payloads)?;
    let topics = topic_objects(topics, held.len())?;
    let slices = held.slices();
    let texts = topics.as_deref().map(topic_texts);
    let topic_refs: Option<Vec<&str>> = texts
        .as_ref()
        .map(|v| v.iter().map(AsRef::as_ref).collect());
    let received_ns = received_ns.unwrap_or_else(now_ns);
    let batch = py.detach(|| decode_core(&slices, topic_refs.as_deref(), received_ns));
    Ok(PyReadingBatch::new(batch))
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyReadingBatch>()?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add("REASON_CODES", PyTuple::new(m.py(), REASON_CODES)?)?;
    Ok(())
}
