//! `FeatureStore`: per-sensor rolling-window features (binding of `infrawatch_core::features`).

use infrawatch_core::features::{default_fields, FeatureStore};
use numpy::ndarray::Array2;
use numpy::{AllowTypeChange, IntoPyArray, PyArray2, PyArrayLike1};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMapping, PyTuple};

use crate::decode::PyReadingBatch;
use crate::errors::value_error;

/// Per-sensor rolling-window features; see DESIGN.md §2 and the `.pyi` stub.
#[pyclass(name = "FeatureStore", module = "infrawatch._core")]
pub struct PyFeatureStore {
    inner: FeatureStore,
}

#[pymethods]
impl PyFeatureStore {
    #[new]
    #[pyo3(signature = (window = 60, fields = None))]
    fn new(window: usize, fields: Option<Vec<String>>) -> PyResult<Self> {
        let fields = fields.unwrap_or_else(default_fields);
        let inner = FeatureStore::new(window, &fields).map_err(value_error)?;
        Ok(Self { inner })
    }

    /// Fold a decoded batch in order; one feature row per reading (all NaN for stale readings).
    fn update<'py>(
        &mut self,
        py: Python<'py>,
        batch: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        // A decoded batch is read in place (no copy) with the GIL released; any other object
        // with the same attributes goes through the column path.
        if let Ok(b) = batch.cast::<PyReadingBatch>() {
            let b = b.get();
            let n = b.batch().len();
            let k = self.inner.n_features();
            let inner = &mut self.inner;
            let x = py.detach(|| {
                let rows: Vec<usize> = (0..n).collect();
                let mut x = Vec::with_capacity(n * k);
                inner.update_rows(b.batch(), &rows, &mut x);
                x
            });
            let x = Array2::from_shape_vec((n, k), x).map_err(value_error)?;
            return Ok(x.into_pyarray(py));
        }
        let ids = batch.getattr("sensor_id")?;
        let ts = batch.getattr("timestamp_ns")?;
        let fields = batch.getattr("fields")?;
        self.update_arrays(py, &ids, ts.extract()?, fields.cast::<PyMapping>()?)
    }

    /// The same as `update()` for data you already hold in columns.
    fn update_arrays<'py>(
        &mut self,
        py: Python<'py>,
        sensor_id: &Bound<'py, PyAny>,
        timestamp_ns: PyArrayLike1<'py, i64, AllowTypeChange>,
        fields: &Bound<'py, PyMapping>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        if sensor_id.is_instance_of::<pyo3::types::PyString>() {
            return Err(value_error(
                "sensor_id must be a sequence of str, not a str",
            ));
        }
        let ids: Vec<String> = sensor_id.extract()?;
        let ts: Vec<i64> = timestamp_ns.as_array().to_vec();
        // copy the store's columns out of NumPy so the work can run without the GIL
        let mut cols: Vec<Option<Vec<f64>>> = vec![None; self.inner.fields().len()];
        for item in fields.items()?.iter() {
            let (name, arr): (String, Bound<'py, PyAny>) = item.extract()?;
            if let Some(j) = self.inner.fields().iter().position(|f| *f == name) {
                let a: PyArrayLike1<'py, f64, AllowTypeChange> = arr.extract()?;
                cols[j] = Some(a.as_array().to_vec());
            }
        }
        let n = ids.len();
        let k = self.inner.n_features();
        let inner = &mut self.inner;
        let x = py.detach(|| {
            let views: Vec<Option<&[f64]>> = cols.iter().map(|c| c.as_deref()).collect();
            let mut x = Vec::with_capacity(n * k);
            inner.update_columns(&ids, &ts, &views, &mut x).map(|_| x)
        });
        let x = x.map_err(value_error)?;
        let x = Array2::from_shape_vec((n, k), x).map_err(value_error)?;
        Ok(x.into_pyarray(py))
    }

    #[getter]
    fn feature_names(&self) -> Vec<String> {
        self.inner.feature_names().to_vec()
    }

    #[getter]
    fn window(&self) -> usize {
        self.inner.window()
    }

    #[getter]
    fn fields(&self) -> Vec<String> {
        self.inner.fields().to_vec()
    }

    #[getter]
    fn stale_count(&self) -> u64 {
        self.inner.stale_count()
    }

    fn __len__(&self) -> usize {
        self.inner.n_sensors()
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let blob = py.detach(|| self.inner.snapshot());
        PyBytes::new(py, &blob)
    }

    #[staticmethod]
    fn restore(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let inner = py
            .detach(|| FeatureStore::restore(data))
            .map_err(value_error)?;
        Ok(Self { inner })
    }

    /// Pickle support: a store pickles as its snapshot.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let restore = slf.get_type().getattr("restore")?;
        let blob = slf.borrow().snapshot(py);
        PyTuple::new(
            py,
            [restore.into_any(), PyTuple::new(py, [blob])?.into_any()],
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "FeatureStore(window={}, fields={:?}, sensors={})",
            self.inner.window(),
            self.inner.fields(),
            self.inner.n_sensors()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFeatureStore>()
}
