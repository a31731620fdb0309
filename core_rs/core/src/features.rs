//! Per-sensor rolling-window features. (Placeholder: the features work item replaces this.)

use crate::batch::ReadingBatch;

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct FeatureStore {
    names: Vec<String>,
}

impl FeatureStore {
    /// # Errors
    /// On a zero window or an unknown field.
    pub fn new(window: usize, fields: &[String]) -> Result<Self, FeatureError> {
        let _ = (window, fields);
        Ok(Self { names: Vec::new() })
    }

    #[must_use]
    pub fn feature_names(&self) -> &[String] {
        &self.names
    }

    #[must_use]
    pub fn n_features(&self) -> usize {
        self.names.len()
    }

    #[must_use]
    pub fn n_sensors(&self) -> usize {
        0
    }

    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// # Errors
    /// Placeholder.
    pub fn restore(data: &[u8]) -> Result<Self, FeatureError> {
        let _ = data;
        Ok(Self { names: Vec::new() })
    }

    /// Fold `rows` of `batch` in order, appending `rows.len() × n_features` values (row-major)
    /// to `out`. Returns, per row, whether it was folded in (false for a reading not newer than
    /// its sensor's newest; its feature row is all NaN).
    pub fn update_rows(
        &mut self,
        batch: &ReadingBatch,
        rows: &[usize],
        out: &mut Vec<f64>,
    ) -> Vec<bool> {
        let _ = (batch, out);
        vec![true; rows.len()]
    }
}
