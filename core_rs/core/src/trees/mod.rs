//! Tree ensembles exported from scikit-learn, scored in Rust with exact scikit-learn parity.
//!
//! One representation covers every supported estimator: a list of binary trees whose leaves hold
//! a vector of `width` values added into an output slot range (`TreeMeta::output`), combined by an
//! [`Aggregation`] (forest mean, boosting sum + link, isolation path length). The compact layout
//! (what artifacts store) lives in `model.rs`; float32 models are scored from a derived layout
//! built at construction and load (`flat.rs`: transposed row blocks, branch-free lane walks,
//! leaf root-path tables for contributions); the output transforms are in `predict.rs`, Saabas
//! contributions in `contrib.rs` and the versioned binary artifact in `artifact.rs`.
//!
//! Missing values: a NaN feature value follows its node's `missing_left` flag. scikit-learn
//! trees (forests, `IsolationForest`, `HistGradientBoosting*`) route NaN exactly this way; for
//! `GradientBoosting*`, which rejects NaN, we apply the same rule with the tree's exported
//! `missing_go_to_left` flags.

mod artifact;
mod contrib;
mod flat;
mod model;
mod predict;

use serde::{Deserialize, Serialize};

pub use model::TreeSpec;
use model::{Nodes, TreeMeta};

/// Why an ensemble could not be built, loaded or applied.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The ensemble description is inconsistent (bad node arrays, sizes, parameters).
    #[error("invalid tree ensemble: {0}")]
    Invalid(String),
    /// Input rows do not match the model (shape, length).
    #[error("{0}")]
    Input(String),
    /// The operation does not exist for this kind of model (e.g. `predict_proba` of a regressor).
    #[error("{0}")]
    Unsupported(String),
    /// A serialized artifact is corrupt, truncated, foreign or from a future version.
    #[error("not a valid infrawatch tree artifact: {0}")]
    Artifact(String),
}

/// How thresholds are compared. scikit-learn's `tree_` based models cast X to float32 before
/// comparing with float64 thresholds; `HistGradientBoosting*` compares in float64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    F64,
}

/// Inverse link applied to boosting raw scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Regressors with an identity link.
    Identity,
    /// Regressors with a log link (HGB `poisson`/`gamma`): value = exp(raw).
    Exp,
    /// Binary classifiers: p1 = expit(raw), p0 = 1 − p1.
    Logistic,
    /// Multiclass classifiers: softmax over the raw scores.
    Softmax,
}

/// How the trees' leaf values combine into the model output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Aggregation {
    /// Forests: Σ_t leaf_t / n_trees (class probabilities for classifiers).
    Mean,
    /// Gradient boosting: raw = init + Σ_t scale·leaf_t (in tree order), then `link`.
    Boosting {
        init: Vec<f64>,
        scale: f64,
        link: Link,
        /// Binary `predict`: class 1 when raw ≥ 0 (`GradientBoostingClassifier`) or raw > 0
        /// (`HistGradientBoostingClassifier`).
        zero_is_positive: bool,
    },
    /// Isolation forest: leaves hold depth + c(n) − 1; score = −2^(−Σ/(n_trees·c_max)).
    Isolation {
        /// c(max_samples), the average path length of the sub-sample size.
        average_path_length_max_samples: f64,
        /// `offset_`: decision_function = score_samples − offset.
        offset: f64,
    },
}

/// Everything about a model except its trees; this is the artifact's JSON header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Source estimator class name, e.g. `RandomForestClassifier`.
    pub estimator: String,
    pub sklearn_version: String,
    pub feature_names: Vec<String>,
    /// Class labels as JSON values (None for regressors and isolation forests).
    pub classes: Option<Vec<serde_json::Value>>,
    /// NumPy dtype string of `classes_` so labels come back with the estimator's dtype.
    pub classes_dtype: Option<String>,
    /// Values per leaf.
    pub width: usize,
    pub aggregation: Aggregation,
    pub precision: Precision,
    /// JSON-able user metadata (training data description, metrics, version…).
    pub metadata: serde_json::Value,
    /// Creation time (RFC 3339, UTC); filled in by [`Ensemble::new`] when empty.
    pub created: String,
}

/// A validated tree ensemble ready to score.
#[derive(Debug, Clone)]
pub struct Ensemble {
    info: ModelInfo,
    trees: Vec<TreeMeta>,
    nodes: Nodes,
    /// n_leaves_total × width.
    leaf_values: Vec<f64>,
    /// n_internal_total × width: the value of each split node (for contributions).
    node_values: Vec<f64>,
    /// The scoring layout of float32 models, derived from the arrays above by [`Self::validate`]
    /// (`None` for float64 models, which use the generic walk).
    flat: Option<flat::Flat>,
}

impl Ensemble {
    /// Build an ensemble from scikit-learn-like per-tree arrays.
    ///
    /// # Errors
    /// [`TreeError::Invalid`] when the description is inconsistent.
    pub fn new(mut info: ModelInfo, specs: &[TreeSpec]) -> Result<Self, TreeError> {
        if info.created.is_empty() {
            info.created = artifact::now_rfc3339();
        }
        let (trees, nodes, leaf_values, node_values) =
            model::compile(specs, info.feature_names.len(), info.width, info.precision)?;
        let mut e = Ensemble {
            info,
            trees,
            nodes,
            leaf_values,
            node_values,
            flat: None,
        };
        e.validate()?;
        Ok(e)
    }

    /// [`Ensemble::new`] with the [`ModelInfo`] given as its JSON header (the bindings' path).
    ///
    /// # Errors
    /// [`TreeError::Invalid`] for a malformed header or inconsistent trees.
    pub fn from_json_header(header: &str, specs: &[TreeSpec]) -> Result<Self, TreeError> {
        let info: ModelInfo = serde_json::from_str(header)
            .map_err(|e| TreeError::Invalid(format!("bad header: {e}")))?;
        Self::new(info, specs)
    }

    /// The metadata as a JSON string.
    #[must_use]
    pub fn metadata_json(&self) -> String {
        self.info.metadata.to_string()
    }

    /// Replace the metadata from a JSON string.
    ///
    /// # Errors
    /// [`TreeError::Invalid`] when `json` does not parse.
    pub fn set_metadata_json(&mut self, json: &str) -> Result<(), TreeError> {
        self.info.metadata = serde_json::from_str(json)
            .map_err(|e| TreeError::Invalid(format!("bad metadata JSON: {e}")))?;
        Ok(())
    }

    /// The class labels as a JSON list, if any.
    #[must_use]
    pub fn classes_json(&self) -> Option<String> {
        self.info
            .classes
            .as_ref()
            .map(|c| serde_json::Value::from(c.clone()).to_string())
    }

    /// Everything but the trees.
    #[must_use]
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    #[must_use]
    pub fn n_features(&self) -> usize {
        self.info.feature_names.len()
    }

    #[must_use]
    pub fn feature_names(&self) -> &[String] {
        &self.info.feature_names
    }

    /// Number of classes (0 for regressors and isolation forests).
    #[must_use]
    pub fn n_classes(&self) -> usize {
        self.info.classes.as_ref().map_or(0, Vec::len)
    }

    #[must_use]
    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Number of accumulated outputs (raw scores / mean values) per row.
    #[must_use]
    pub fn n_outputs(&self) -> usize {
        match &self.info.aggregation {
            Aggregation::Mean => self.info.width,
            Aggregation::Boosting { init, .. } => init.len(),
            Aggregation::Isolation { .. } => 1,
        }
    }

    #[must_use]
    pub fn metadata(&self) -> &serde_json::Value {
        &self.info.metadata
    }

    pub fn set_metadata(&mut self, metadata: serde_json::Value) {
        self.info.metadata = metadata;
    }

    /// Whether the model has classes (`predict_proba`, `predict_class`).
    #[must_use]
    pub fn is_classifier(&self) -> bool {
        self.info.classes.is_some()
    }

    /// Whether the model is an isolation forest (`score_samples`, `predict_outlier`).
    #[must_use]
    pub fn is_isolation(&self) -> bool {
        matches!(self.info.aggregation, Aggregation::Isolation { .. })
    }

    /// Structural checks shared by the constructor and the artifact loader: every index in
    /// range, each tree a real tree (no node reachable twice, so traversal terminates), sizes
    /// consistent with the aggregation. After this, scoring cannot index out of bounds.
    fn validate(&mut self) -> Result<(), TreeError> {
        let bad = |m: String| Err(TreeError::Invalid(m));
        let info = &self.info;
        if info.width == 0 {
            return bad("width must be ≥ 1".into());
        }
        if info.feature_names.is_empty() {
            return bad("a model needs at least one feature".into());
        }
        if self.trees.is_empty() {
            return bad("a model needs at least one tree".into());
        }
        let n_out = self.n_outputs();
        match &info.aggregation {
            Aggregation::Mean => {}
            Aggregation::Boosting {
                init, scale, link, ..
            } => {
                if init.is_empty() || !scale.is_finite() {
                    return bad("boosting needs a non-empty init and a finite scale".into());
                }
                if info.width != 1 {
                    return bad("boosting trees hold one value per leaf".into());
                }
                let want = match link {
                    Link::Logistic => Some(1),
                    Link::Identity | Link::Exp => Some(1),
                    Link::Softmax => None,
                };
                if want.is_some_and(|w| w != init.len())
                    || (init.len() < 2 && *link == Link::Softmax)
                {
                    return bad(format!("{link:?} link with {} outputs", init.len()));
                }
            }
            Aggregation::Isolation { .. } => {
                if info.width != 1 {
                    return bad("isolation trees hold one value per leaf".into());
                }
            }
        }
        if let Some(classes) = &info.classes {
            let ok = match &info.aggregation {
                Aggregation::Mean => classes.len() == info.width && classes.len() >= 2,
                Aggregation::Boosting { link, init, .. } => match link {
                    Link::Logistic => classes.len() == 2,
                    Link::Softmax => classes.len() == init.len(),
                    _ => false,
                },
                Aggregation::Isolation { .. } => false,
            };
            if !ok {
                return bad(format!(
                    "{} classes do not fit the model's outputs",
                    classes.len()
                ));
            }
        } else if let Aggregation::Boosting { link, .. } = &info.aggregation {
            if matches!(link, Link::Logistic | Link::Softmax) {
                return bad("a classification link needs classes".into());
            }
        }
        model::validate(
            &mut self.trees,
            &self.nodes,
            self.leaf_values.len(),
            self.node_values.len(),
            info.feature_names.len(),
            info.width,
            n_out,
        )?;
        self.flat = match &self.nodes {
            Nodes::F32(nodes) => flat::build(
                &self.trees,
                nodes,
                &self.leaf_values,
                &self.node_values,
                info.feature_names.len(),
                info.width,
                n_out,
                &info.aggregation,
            ),
            Nodes::F64(_) => None,
        };
        Ok(())
    }

    fn check_input(&self, x: &[f64], n_rows: usize) -> Result<(), TreeError> {
        let nf = self.n_features();
        if n_rows.checked_mul(nf) != Some(x.len()) {
            return Err(TreeError::Input(format!(
                "X has {} values, expected {n_rows} rows × {nf} features",
                x.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A depth-1 stump: `x[feature] <= thr` → left value, else right value.
    pub fn stump(
        feature: i64,
        thr: f64,
        root: &[f64],
        left: &[f64],
        right: &[f64],
        output: usize,
    ) -> TreeSpec {
        let mut value = root.to_vec();
        value.extend_from_slice(left);
        value.extend_from_slice(right);
        TreeSpec {
            children_left: vec![1, -1, -1],
            children_right: vec![2, -1, -1],
            feature: vec![feature, -2, -2],
            threshold: vec![thr, -2.0, -2.0],
            missing_left: vec![true, false, false],
            value,
            count: vec![3.0, 1.0, 2.0],
            fill_internal: false,
            output,
        }
    }

    pub fn info(
        n_features: usize,
        width: usize,
        aggregation: Aggregation,
        classes: Option<usize>,
    ) -> ModelInfo {
        ModelInfo {
            estimator: "Test".into(),
            sklearn_version: "0".into(),
            feature_names: (0..n_features).map(|i| format!("x{i}")).collect(),
            classes: classes.map(|k| (0..k).map(serde_json::Value::from).collect()),
            classes_dtype: classes.map(|_| "int64".into()),
            width,
            aggregation,
            precision: Precision::F32,
            metadata: serde_json::Value::Null,
            created: String::new(),
        }
    }
}
