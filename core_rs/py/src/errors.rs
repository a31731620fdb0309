//! The one place where core errors become Python exceptions: invalid arguments and corrupt
//! inputs raise `ValueError` with the core error's message; nothing else crosses the edge.

use pyo3::exceptions::PyValueError;
use pyo3::PyErr;

/// Turn any core error into a `ValueError` carrying its message.
pub fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}
