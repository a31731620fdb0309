//! Payload decoding: MQTT/HTTP payloads (nested, flat, gateway arrays) → a columnar `ReadingBatch`.
//! (Placeholder: the decode work item replaces this.)

use crate::batch::ReadingBatch;

/// Decode `payloads` (with their MQTT topics, when known) received at `received_ns`.
/// Never panics; every per-message problem becomes a `MessageError` in `batch.errors`.
#[must_use]
pub fn decode(payloads: &[&[u8]], topics: Option<&[&str]>, received_ns: i64) -> ReadingBatch {
    let _ = (payloads, topics, received_ns);
    ReadingBatch::default()
}
