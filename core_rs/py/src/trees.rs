//! `TreeEnsemble`: scikit-learn tree ensembles scored by `infrawatch_core::trees`. Reading the
//! sklearn estimator happens in `infrawatch._sklearn_export`; this file converts arrays, releases
//! the GIL for scoring and builds NumPy outputs.

use std::sync::Arc;

use infrawatch_core::trees::{Ensemble, TreeSpec};
use numpy::ndarray::Array2;
use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyType};

use crate::errors::value_error;

/// A tree ensemble exported from scikit-learn (see DESIGN.md §2).
#[pyclass(name = "TreeEnsemble", module = "infrawatch._core")]
pub struct PyTreeEnsemble {
    /// Shared with the pipeline binding.
    pub inner: Arc<Ensemble>,
    /// `classes_` as a NumPy array of the estimator's dtype (None for non-classifiers).
    classes: Option<Py<PyAny>>,
}

impl PyTreeEnsemble {
    /// The core model (for other bindings, e.g. the pipeline).
    #[must_use]
    pub fn ensemble(&self) -> Arc<Ensemble> {
        Arc::clone(&self.inner)
    }

    fn wrap(py: Python<'_>, e: Ensemble) -> PyResult<Self> {
        let classes = match (e.classes_json(), &e.info().classes_dtype) {
            (Some(c), dtype) => {
                let list = json_to_py(py, &c)?;
                let np = py.import("numpy")?;
                let arr = match dtype {
                    Some(d) => np.call_method1("asarray", (list, d.as_str()))?,
                    None => np.call_method1("asarray", (list,))?,
                };
                Some(arr.unbind())
            }
            (None, _) => None,
        };
        Ok(PyTreeEnsemble {
            inner: Arc::new(e),
            classes,
        })
    }
}

fn json_to_py<'py>(py: Python<'py>, s: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (s,))
}

fn py_to_json(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<String> {
    py.import("json")?
        .call_method1("dumps", (obj,))
        .map_err(|e| PyValueError::new_err(format!("metadata must be JSON-serialisable: {e}")))?
        .extract()
}

/// X as a C-contiguous float64 matrix, with sklearn-like shape errors. Such an array is used as
/// is (no Python call, no copy: this is most of a one-row call's overhead); anything else goes
/// through `numpy.ascontiguousarray(x, "float64")`.
fn as_matrix<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    n_features: usize,
) -> PyResult<PyReadonlyArray2<'py, f64>> {
    let arr = match x.cast::<PyArray2<f64>>() {
        Ok(a) if a.is_c_contiguous() => a.clone(),
        _ => {
            let arr = py
                .import("numpy")?
                .call_method1("ascontiguousarray", (x, "float64"))?;
            let ndim: usize = arr.getattr("ndim")?.extract()?;
            if ndim != 2 {
                let hint = if ndim == 1 {
                    " Reshape your data either using array.reshape(-1, 1) if your data has a \
                     single feature or array.reshape(1, -1) if it contains a single sample."
                } else {
                    ""
                };
                return Err(PyValueError::new_err(format!(
                    "Expected a 2D array, got {ndim}D array instead.{hint}"
                )));
            }
            arr.cast_into::<PyArray2<f64>>()?
        }
    };
    let m = arr.try_readonly()?;
    let shape = m.shape();
    if shape[0] == 0 {
        return Err(PyValueError::new_err(format!(
            "Found array with 0 sample(s) (shape=({}, {})) while a minimum of 1 is required.",
            shape[0], shape[1]
        )));
    }
    if shape[1] != n_features {
        return Err(PyValueError::new_err(format!(
            "X has {} features, but TreeEnsemble is expecting {n_features} features as input.",
            shape[1]
        )));
    }
    Ok(m)
}

fn spec_from_dict(d: &Bound<'_, PyAny>) -> PyResult<TreeSpec> {
    let i64s = |k: &str| -> PyResult<Vec<i64>> {
        Ok(d.get_item(k)?
            .extract::<PyReadonlyArray1<i64>>()?
            .as_array()
            .to_vec())
    };
    let f64s = |k: &str| -> PyResult<Vec<f64>> {
        Ok(d.get_item(k)?
            .extract::<PyReadonlyArray1<f64>>()?
            .as_array()
            .to_vec())
    };
    Ok(TreeSpec {
        children_left: i64s("children_left")?,
        children_right: i64s("children_right")?,
        feature: i64s("feature")?,
        threshold: f64s("threshold")?,
        missing_left: d
            .get_item("missing_left")?
            .extract::<PyReadonlyArray1<u8>>()?
            .as_array()
            .iter()
            .map(|&b| b != 0)
            .collect(),
        value: f64s("value")?,
        count: f64s("count")?,
        fill_internal: d.get_item("fill_internal")?.extract()?,
        output: d.get_item("output")?.extract()?,
    })
}

type Scorer = fn(&Ensemble, &[f64], usize) -> Result<Vec<f64>, infrawatch_core::trees::TreeError>;

impl PyTreeEnsemble {
    /// Validate X, score without the GIL, return (values, n_rows).
    fn run(&self, py: Python<'_>, x: &Bound<'_, PyAny>, f: Scorer) -> PyResult<(Vec<f64>, usize)> {
        let m = as_matrix(py, x, self.inner.n_features())?;
        let n = m.shape()[0];
        let xs = m.as_slice().map_err(value_error)?;
        let e = &*self.inner;
        let out = py.detach(|| f(e, xs, n)).map_err(value_error)?;
        Ok((out, n))
    }
}

/// An (n, len / n) array owning `v` (no copy, no reshape call).
fn matrix<'py>(py: Python<'py>, v: Vec<f64>, n: usize) -> PyResult<Bound<'py, PyAny>> {
    let k = v.len() / n.max(1);
    let a = Array2::from_shape_vec((n, k), v).map_err(value_error)?;
    Ok(PyArray2::from_owned_array(py, a).into_any())
}

#[pymethods]
impl PyTreeEnsemble {
    /// Export a fitted scikit-learn estimator.
    #[classmethod]
    #[pyo3(signature = (estimator, feature_names=None, metadata=None))]
    fn from_sklearn(
        cls: &Bound<'_, PyType>,
        estimator: &Bound<'_, PyAny>,
        feature_names: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = cls.py();
        let export = py.import("infrawatch._sklearn_export")?.getattr("export")?;
        let (header, trees): (String, Bound<'_, PyList>) = export
            .call1((estimator, feature_names, metadata))?
            .extract()?;
        let specs = trees
            .iter()
            .map(|d| spec_from_dict(&d))
            .collect::<PyResult<Vec<_>>>()?;
        let e = py
            .detach(|| Ensemble::from_json_header(&header, &specs))
            .map_err(value_error)?;
        Self::wrap(py, e)
    }

    /// Class probabilities, shape (n, n_classes).
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (v, n) = self.run(py, x, Ensemble::predict_proba)?;
        matrix(py, v, n)
    }

    /// Class labels (classifiers), values (regressors) or ±1 (IsolationForest), shape (n,).
    fn predict<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(classes) = &self.classes {
            let m = as_matrix(py, x, self.inner.n_features())?;
            let n = m.shape()[0];
            let xs = m.as_slice().map_err(value_error)?;
            let e = &*self.inner;
            let idx = py.detach(|| e.predict_class(xs, n)).map_err(value_error)?;
            let idx: Vec<i64> = idx
                .into_iter()
                .map(|i| i64::try_from(i).unwrap_or(0))
                .collect();
            return classes
                .bind(py)
                .call_method1("take", (PyArray1::from_vec(py, idx),));
        }
        let f: Scorer = if self.inner.is_isolation() {
            Ensemble::predict_outlier
        } else {
            Ensemble::predict_value
        };
        let (v, _) = self.run(py, x, f)?;
        Ok(PyArray1::from_vec(py, v).into_any())
    }

    /// IsolationForest anomaly score (lower = more abnormal), shape (n,).
    fn score_samples<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (v, _) = self.run(py, x, Ensemble::score_samples)?;
        Ok(PyArray1::from_vec(py, v).into_any())
    }

    /// IsolationForest: score_samples − offset_; boosting classifiers: raw scores ((n,) binary,
    /// (n, n_classes) multiclass).
    fn decision_function<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (v, n) = self.run(py, x, Ensemble::decision_function)?;
        if v.len() == n {
            Ok(PyArray1::from_vec(py, v).into_any())
        } else {
            matrix(py, v, n)
        }
    }

    /// Saabas contributions: (n, n_features + 1) — bias last — or (n, n_features + 1, n_classes).
    fn contributions<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (v, n) = self.run(py, x, Ensemble::contributions)?;
        let k = self.inner.contribution_outputs();
        let nf = self.inner.n_features() + 1;
        let a = PyArray1::from_vec(py, v);
        if k == 1 {
            Ok(a.reshape([n, nf])?.into_any())
        } else {
            Ok(a.reshape([n, nf, k])?.into_any())
        }
    }

    /// The artifact bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let b = py.detach(|| self.inner.to_bytes());
        PyBytes::new(py, &b)
    }

    /// Load from artifact bytes (no scikit-learn needed).
    #[classmethod]
    fn from_bytes(cls: &Bound<'_, PyType>, data: &[u8]) -> PyResult<Self> {
        let py = cls.py();
        let e = py
            .detach(|| Ensemble::from_bytes(data))
            .map_err(value_error)?;
        Self::wrap(py, e)
    }

    /// Write the artifact to `path`.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let b = self.inner.to_bytes();
        py.detach(|| std::fs::write(path, b))?;
        Ok(())
    }

    /// Read an artifact from `path`.
    #[classmethod]
    fn load(cls: &Bound<'_, PyType>, path: std::path::PathBuf) -> PyResult<Self> {
        let py = cls.py();
        let data = py.detach(|| std::fs::read(path))?;
        let e = py
            .detach(|| Ensemble::from_bytes(&data))
            .map_err(value_error)?;
        Self::wrap(py, e)
    }

    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }

    #[getter]
    fn feature_names(&self) -> Vec<String> {
        self.inner.feature_names().to_vec()
    }

    #[getter]
    fn classes<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.classes
            .as_ref()
            .map(|c| c.bind(py).call_method0("tolist"))
            .transpose()
    }

    #[getter]
    fn estimator(&self) -> String {
        self.inner.info().estimator.clone()
    }

    #[getter]
    fn sklearn_version(&self) -> String {
        self.inner.info().sklearn_version.clone()
    }

    #[getter]
    fn n_trees(&self) -> usize {
        self.inner.n_trees()
    }

    /// Creation time of the model (RFC 3339, UTC).
    #[getter]
    fn created(&self) -> String {
        self.inner.info().created.clone()
    }

    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.metadata_json())
    }

    #[setter]
    fn set_metadata(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = py_to_json(py, value)?;
        Arc::make_mut(&mut self.inner)
            .set_metadata_json(&v)
            .map_err(value_error)?;
        Ok(())
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        let ctor = slf.get_type().getattr("from_bytes")?;
        Ok((ctor, (slf.borrow().to_bytes(py),)))
    }

    fn __repr__(&self) -> String {
        format!(
            "TreeEnsemble(estimator={:?}, n_trees={}, n_features={}, n_classes={})",
            self.inner.info().estimator,
            self.inner.n_trees(),
            self.inner.n_features(),
            self.inner.n_classes()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTreeEnsemble>()
}
