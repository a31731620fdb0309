//! infrawatch kernels in plain Rust. No Python here: the `infrawatch-py` crate binds these.
//!
//! Each module holds one kernel; `pipeline` fuses them into the per-batch hot path.

pub mod batch;
pub mod decode;
pub mod explain;
pub mod features;
pub mod fields;
pub mod limiter;
pub mod line_protocol;
pub mod pipeline;
pub mod risk;
pub mod trees;
