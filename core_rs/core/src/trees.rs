//! Tree ensembles exported from scikit-learn, scored in Rust. (Placeholder: the trees work item replaces this.)

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Ensemble {
    pub feature_names: Vec<String>,
}

impl Ensemble {
    #[must_use]
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }
}
