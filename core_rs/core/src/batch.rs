//! `ReadingBatch`: the columnar result of decoding — one row per good reading.
//!
//! Other kernels read a batch only through the accessors below, so the decoder is free to
//! change how it stores the columns.

use crate::fields::Kind;

/// A per-message decode problem: which input message, a stable reason code, a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    pub index: usize,
    pub reason: &'static str,
    pub message: String,
}

/// Decoded readings in columns. `fields` holds the canonical columns first (in
/// `CANONICAL_FIELDS` order, only those present in the batch), then unknown fields in order of
/// first appearance; NaN where a reading lacks the field.
#[derive(Debug, Clone, Default)]
pub struct ReadingBatch {
    pub sensor_id: Vec<String>,
    pub kind: Vec<Kind>,
    pub site: Vec<String>,
    pub zone: Vec<String>,
    pub timestamp_ns: Vec<i64>,
    pub fields: Vec<(String, Vec<f64>)>,
    /// Index of the input message each reading came from.
    pub source: Vec<i32>,
    pub errors: Vec<MessageError>,
}

impl ReadingBatch {
    #[must_use]
    pub fn len(&self) -> usize {
        self.timestamp_ns.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.timestamp_ns.is_empty()
    }

    #[must_use]
    pub fn sensor_id(&self, i: usize) -> &str {
        &self.sensor_id[i]
    }

    #[must_use]
    pub fn site(&self, i: usize) -> &str {
        &self.site[i]
    }

    #[must_use]
    pub fn zone(&self, i: usize) -> &str {
        &self.zone[i]
    }

    #[must_use]
    pub fn kind(&self, i: usize) -> Kind {
        self.kind[i]
    }

    /// The column of a field by name, if any reading in the batch has it.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&[f64]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }
}
