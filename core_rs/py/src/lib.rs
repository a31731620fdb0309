//! `infrawatch._core`: thin PyO3 bindings over `infrawatch-core`. Declares; the modules convert.

use pyo3::prelude::*;

mod decode;
mod errors;
mod features;
mod limiter;
mod pipeline;
mod trees;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // benchmarks refuse to measure a debug build
    m.add(
        "__build_profile__",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    decode::register(m)?;
    limiter::register(m)?;
    features::register(m)?;
    trees::register(m)?;
    pipeline::register(m)?;
    Ok(())
}
