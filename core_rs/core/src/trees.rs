//! Tree ensembles exported from scikit-learn, scored in Rust. (Placeholder: the trees work item replaces this.)

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Ensemble {
    feature_names: Vec<String>,
}

impl Ensemble {
    #[must_use]
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    #[must_use]
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    #[must_use]
    pub fn n_classes(&self) -> usize {
        0
    }

    /// # Errors
    /// Placeholder.
    pub fn predict_proba(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        let _ = (x, n_rows);
        Err(TreeError::Invalid("not implemented".into()))
    }

    /// # Errors
    /// Placeholder.
    pub fn predict_value(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        let _ = (x, n_rows);
        Err(TreeError::Invalid("not implemented".into()))
    }

    /// # Errors
    /// Placeholder.
    pub fn score_samples(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        let _ = (x, n_rows);
        Err(TreeError::Invalid("not implemented".into()))
    }
}
