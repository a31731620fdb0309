//! The fused hot path (DESIGN.md §2): one call per batch of raw payloads —
//! decode → per-sensor token bucket → rolling features → tree-ensemble scores → risk level →
//! InfluxDB line protocol (one `reading` point per reading, reading and verdict together, plus an
//! `alert` point whenever a sensor's risk rises to HIGH or CRITICAL).
//!
//! Its output is, by construction and by test, what composing the separate kernels gives.

use std::fmt::Write as _;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::batch::{MessageError, ReadingBatch};
use crate::decode::decode;
use crate::explain::{strongest, Reason, Toward};
use crate::features::{FeatureError, FeatureStore};
use crate::fields::Kind;
use crate::limiter::TokenBucket;
use crate::line_protocol::{Key, LineWriter, OwnedKey};
use crate::risk::{
    confidence, default_quality_limits, QualityLimit, RiskLevel, ScoreBands, WaterFlowPersistence,
    ZonePolicy,
};
use crate::trees::{Ensemble, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("model {slot:?} of {kind}: {reason}")]
    Model {
        kind: &'static str,
        slot: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Features(#[from] FeatureError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("corrupt pipeline snapshot: {0}")]
    Snapshot(String),
}

/// The models of the water-flow kind: binary classifiers whose positive class is the incident.
#[derive(Debug, Clone)]
pub struct WaterFlowModels {
    pub version: String,
    pub leak: Arc<Ensemble>,
    pub burst: Arc<Ensemble>,
    /// k-of-n confirmation per model before a verdict pages (off by default).
    pub persistence: WaterFlowPersistence,
}

/// The water-quality model (optional: the hard limits apply without one).
#[derive(Debug, Clone)]
pub struct WaterQualityModels {
    pub version: String,
    pub contamination: Option<Arc<Ensemble>>,
    pub bands: ScoreBands,
}

/// The energy models: a regressor for the expected kWh and an anomaly model, either an
/// IsolationForest (score = Liu et al.'s anomaly score) or a classifier trained on labelled
/// anomalies (score = 1 − P(class 0 = normal)).
#[derive(Debug, Clone)]
pub struct EnergyModels {
    pub version: String,
    pub expected_kwh: Arc<Ensemble>,
    pub anomaly: Arc<Ensemble>,
    pub bands: ScoreBands,
    /// Relative deviation from expected use beyond which an anomaly is high/low consumption.
    pub tolerance: f64,
    /// For a multiclass anomaly classifier: the anomaly type of each class (class 0 is normal).
    /// The type of a verdict is then its most probable anomalous class; otherwise it comes from
    /// the deviation from expected use.
    pub anomaly_types: Option<Vec<String>>,
}

/// The anomaly types an energy verdict can carry (a closed set: dashboards filter on them).
pub const ENERGY_ANOMALY_TYPES: [&str; 3] =
    ["high_consumption", "low_consumption", "unusual_pattern"];

fn energy_type(name: &str) -> &'static str {
    ENERGY_ANOMALY_TYPES
        .iter()
        .find(|t| **t == name)
        .copied()
        .unwrap_or("unusual_pattern")
}

/// Every kind's models; a kind without models stores its readings without a verdict (water
/// quality still gets its hard limits).
#[derive(Debug, Clone, Default)]
pub struct Models {
    pub water_flow: Option<WaterFlowModels>,
    pub water_quality: Option<WaterQualityModels>,
    pub energy: Option<EnergyModels>,
}

/// A model with the map from its input columns to the kind's feature columns.
#[derive(Debug, Clone)]
struct Bound {
    model: Arc<Ensemble>,
    cols: Vec<usize>,
    /// The model reads the store row as it is (the store's features, in order): no gather.
    identity: bool,
    /// Per model feature: how to say it in words (resolved against the store's columns).
    reasons: Vec<Reason>,
}

impl Bound {
    fn new(
        model: &Arc<Ensemble>,
        store: &FeatureStore,
        kind: Kind,
        slot: &'static str,
        want_classes: Option<usize>,
    ) -> Result<Self, PipelineError> {
        let err = |reason: String| PipelineError::Model {
            kind: kind.as_str(),
            slot,
            reason,
        };
        let names = store.feature_names();
        let cols = model
            .feature_names()
            .iter()
            .map(|f| {
                names.iter().position(|n| n == f).ok_or_else(|| {
                    err(format!(
                        "feature {f:?} is not produced by the {} feature store",
                        kind.as_str()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(n) = want_classes {
            if model.n_classes() != n {
                return Err(err(format!(
                    "expected a classifier with {n} classes, got {}",
                    model.n_classes()
                )));
            }
        }
        let identity = cols.len() == names.len() && cols.iter().enumerate().all(|(i, &c)| i == c);
        let reasons = model
            .feature_names()
            .iter()
            .map(|f| Reason::new(f, names))
            .collect();
        Ok(Bound {
            model: Arc::clone(model),
            cols,
            identity,
            reasons,
        })
    }

    /// The model's input matrix for `n` rows of the kind's feature matrix `x` (row-major): `x`
    /// itself when the model reads the store row as it is, else gathered into `scratch`.
    fn input<'a>(
        &self,
        x: &'a [f64],
        n_store: usize,
        n: usize,
        scratch: &'a mut Vec<f64>,
    ) -> &'a [f64] {
        if self.identity {
            return &x[..n * n_store];
        }
        scratch.clear();
        scratch.reserve(n * self.cols.len());
        for row in x.chunks_exact(n_store).take(n) {
            scratch.extend(self.cols.iter().map(|&c| row[c]));
        }
        scratch
    }

    #[inline(never)]
    fn positive_proba(
        &self,
        x: &[f64],
        n_store: usize,
        n: usize,
        scratch: &mut Vec<f64>,
    ) -> Result<Vec<f64>, TreeError> {
        let p = self
            .model
            .predict_proba(self.input(x, n_store, n, scratch), n)?;
        Ok(p.chunks_exact(2).map(|c| c[1]).collect())
    }

    /// Append plain-words reasons (see [`crate::explain`]) to the verdicts of `rows` (indices
    /// into `x`'s rows and `verdicts`), up to three reasons per verdict: one contributions call
    /// for all the rows this model decides.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn explain(
        &self,
        x: &[f64],
        n_store: usize,
        rows: &[usize],
        toward: Toward,
        verdicts: &mut [Verdict],
        words: &mut String,
        scratch: &mut Vec<f64>,
    ) -> Result<(), TreeError> {
        if rows.is_empty() {
            return Ok(());
        }
        scratch.clear();
        scratch.reserve(rows.len() * self.cols.len());
        for &r in rows {
            let row = &x[r * n_store..(r + 1) * n_store];
            if self.identity {
                scratch.extend_from_slice(row);
            } else {
                scratch.extend(self.cols.iter().map(|&c| row[c]));
            }
        }
        // only the output `strongest` reads: one column (one allocation per model and batch)
        let n_out = self.model.contribution_outputs();
        let column = match toward {
            Toward::Up(o) | Toward::Down(o) => o.min(n_out - 1),
        };
        let toward = match toward {
            Toward::Up(_) => Toward::Up(0),
            Toward::Down(_) => Toward::Down(0),
        };
        let per_row = self.model.n_features() + 1;
        let mut contrib = vec![0.0; rows.len() * per_row];
        self.model
            .contributions_column_into(scratch, rows.len(), column, &mut contrib)?;
        for (&r, c) in rows.iter().zip(contrib.chunks_exact(per_row)) {
            let (top, n) = strongest::<3>(c, 1, toward);
            let row = &x[r * n_store..(r + 1) * n_store];
            let e = &mut verdicts[r].explanation;
            for &f in &top[..n] {
                if e.is_full() {
                    break;
                }
                let start = words.len();
                self.reasons[f].write(words, row);
                e.push(start, words.len());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum BoundModels {
    WaterFlow {
        version: Arc<str>,
        leak: Bound,
        burst: Bound,
        persistence: WaterFlowPersistence,
    },
    WaterQuality {
        version: Arc<str>,
        contamination: Option<Bound>,
        bands: ScoreBands,
    },
    Energy {
        version: Arc<str>,
        expected: Bound,
        anomaly: Bound,
        bands: ScoreBands,
        tolerance: f64,
        anomaly_types: Option<Vec<&'static str>>,
    },
}

impl BoundModels {
    fn version(&self) -> &str {
        match self {
            BoundModels::WaterFlow { version, .. }
            | BoundModels::WaterQuality { version, .. }
            | BoundModels::Energy { version, .. } => version,
        }
    }
}

/// An alert raised when a sensor's risk rises to HIGH or CRITICAL.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub sensor_id: String,
    pub site: String,
    pub kind: Kind,
    pub zone: String,
    pub risk: RiskLevel,
    pub alert_type: &'static str,
    pub message: String,
    pub timestamp_ns: i64,
    pub model_version: String,
    /// The verdict's scores by output name (e.g. `leak_probability`).
    pub scores: Vec<(&'static str, f64)>,
    /// Up to three reasons in plain words (top feature contributions), strongest first.
    pub explanation: Vec<String>,
}

/// A verdict's model outputs by name: at most two, kept inline (no allocation per reading).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Scores {
    items: [(&'static str, f64); 2],
    len: usize,
}

impl Scores {
    fn of(items: &[(&'static str, f64)]) -> Self {
        let mut s = Scores::default();
        for &it in items.iter().take(2) {
            s.items[s.len] = it;
            s.len += 1;
        }
        s
    }

    fn iter(&self) -> impl Iterator<Item = &(&'static str, f64)> {
        self.items[..self.len].iter()
    }
}

/// Up to three reasons in words, strongest first, as byte ranges of the batch's shared text
/// (no allocation per verdict).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Explanation {
    spans: [(u32, u32); 3],
    len: u8,
}

impl Explanation {
    fn is_full(&self) -> bool {
        self.len as usize == self.spans.len()
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, start: usize, end: usize) {
        if !self.is_full() {
            // the text of one batch stays far below 4 GiB (a few hundred bytes per verdict)
            self.spans[self.len as usize] = (start as u32, end as u32);
            self.len += 1;
        }
    }

    /// The reasons, given the text the spans point into.
    fn reasons<'a>(&self, words: &'a str) -> [&'a str; 3] {
        let mut out = [""; 3];
        for (o, &(s, e)) in out.iter_mut().zip(&self.spans[..self.len as usize]) {
            *o = &words[s as usize..e as usize];
        }
        out
    }
}

/// The verdict for one reading.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    risk: RiskLevel,
    confidence: f64,
    scores: Scores,
    anomaly_type: Option<&'static str>,
    alert_type: &'static str,
    /// For HIGH and CRITICAL verdicts: up to three reasons in plain words, strongest first.
    explanation: Explanation,
}

/// What one `process` call produced.
#[derive(Debug, Default)]
pub struct ProcessOutput {
    pub line_protocol: Vec<u8>,
    pub errors: Vec<MessageError>,
    /// Input message index of each reading dropped by the rate limiter (a gateway message can
    /// appear once per dropped reading).
    pub rate_limited: Vec<usize>,
    /// Sensor id of each rate-limited reading, parallel to `rate_limited`.
    pub rate_limited_sensors: Vec<String>,
    pub alerts: Vec<Alert>,
    /// `reading` points written.
    pub count: usize,
    /// Readings stored without a verdict because they were not newer than their sensor's newest.
    pub stale: usize,
    /// Per written reading, in line-protocol order: its risk level (0–3), or −1 without a verdict.
    pub risk: Vec<i8>,
    /// Per written reading: the index of the input message it came from.
    pub source: Vec<i32>,
}

/// Pipeline configuration other than the models.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub window: usize,
    pub zone_policy: ZonePolicy,
    pub quality_limits: Vec<QualityLimit>,
    pub limit_clock: LimitClock,
}

/// Which clock the token bucket runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitClock {
    /// The time the batch was received: what an HTTP client is limited by.
    #[default]
    Arrival,
    /// Each reading's own timestamp, capped at the time of receipt: a backlog the broker
    /// delivers at once after an outage (readings published one a second, hours ago) passes, as
    /// it passed when it was sent; a runaway sensor (many readings per second of its own clock)
    /// is still held to its rate, and a clock running ahead cannot buy tokens from the future.
    Event,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            window: 60,
            zone_policy: ZonePolicy::default(),
            quality_limits: default_quality_limits(),
            limit_clock: LimitClock::Arrival,
        }
    }
}

/// The stateful per-worker pipeline: one feature store per kind and each sensor's last risk.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: PipelineConfig,
    stores: Vec<FeatureStore>, // indexed like Kind::ALL
    bound: [Option<BoundModels>; 3],
    last_risk: HashMap<String, RiskLevel>,
    /// Each water-flow sensor's recent HIGH-by-the-table bits (leak, burst), for persistence.
    history: hashbrown::HashMap<String, [u64; 2]>,
    scratch: Scratch,
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::WaterFlow => 0,
        Kind::WaterQuality => 1,
        Kind::Energy => 2,
    }
}

/// The fields each kind's feature store keeps.
#[must_use]
pub fn kind_fields(kind: Kind) -> Vec<String> {
    kind.model_fields()
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

impl Pipeline {
    /// # Errors
    /// When a model's features are not produced by its kind's feature store, or a classifier is
    /// not binary.
    pub fn new(models: &Models, config: PipelineConfig) -> Result<Self, PipelineError> {
        let stores = Kind::ALL
            .iter()
            .map(|k| FeatureStore::new(config.window, &kind_fields(*k)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut p = Pipeline {
            config,
            stores,
            bound: [None, None, None],
            last_risk: HashMap::new(),
            history: hashbrown::HashMap::new(),
            scratch: Scratch::default(),
        };
        p.set_models(models)?;
        Ok(p)
    }

    /// Swap the models (hot reload) keeping every sensor's rolling state and last risk.
    ///
    /// # Errors
    /// As `new`; on error the previous models stay in place.
    pub fn set_models(&mut self, models: &Models) -> Result<(), PipelineError> {
        let wf = &self.stores[0];
        let wq = &self.stores[1];
        let en = &self.stores[2];
        let bound = [
            models
                .water_flow
                .as_ref()
                .map(|m| -> Result<_, PipelineError> {
                    Ok(BoundModels::WaterFlow {
                        version: Arc::from(m.version.as_str()),
                        leak: Bound::new(&m.leak, wf, Kind::WaterFlow, "leak", Some(2))?,
                        burst: Bound::new(&m.burst, wf, Kind::WaterFlow, "burst", Some(2))?,
                        persistence: m.persistence,
                    })
                })
                .transpose()?,
            Some(match &models.water_quality {
                Some(m) => BoundModels::WaterQuality {
                    version: Arc::from(m.version.as_str()),
                    contamination: m
                        .contamination
                        .as_ref()
                        .map(|c| Bound::new(c, wq, Kind::WaterQuality, "contamination", Some(2)))
                        .transpose()?,
                    bands: m.bands,
                },
                None => BoundModels::WaterQuality {
                    version: Arc::from("limits"),
                    contamination: None,
                    bands: ScoreBands::CONTAMINATION,
                },
            }),
            models
                .energy
                .as_ref()
                .map(|m| -> Result<_, PipelineError> {
                    Ok(BoundModels::Energy {
                        version: Arc::from(m.version.as_str()),
                        expected: Bound::new(
                            &m.expected_kwh,
                            en,
                            Kind::Energy,
                            "expected_kwh",
                            None,
                        )?,
                        anomaly: Bound::new(&m.anomaly, en, Kind::Energy, "anomaly", None)?,
                        bands: m.bands,
                        tolerance: m.tolerance,
                        anomaly_types: m
                            .anomaly_types
                            .as_ref()
                            .map(|t| t.iter().map(|n| energy_type(n)).collect()),
                    })
                })
                .transpose()?,
        ];
        self.bound = bound;
        Ok(())
    }

    #[must_use]
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    #[must_use]
    pub fn store(&self, kind: Kind) -> &FeatureStore {
        &self.stores[kind_index(kind)]
    }

    /// Sensors with rolling state, over all kinds.
    #[must_use]
    pub fn n_sensors(&self) -> usize {
        self.stores.iter().map(FeatureStore::n_sensors).sum()
    }

    /// Process one batch of raw payloads. Per-message problems are data in the output; this
    /// never fails on input.
    ///
    /// # Errors
    /// Only if a model fails to score its own feature matrix (a bug, not bad input).
    pub fn process(
        &mut self,
        payloads: &[&[u8]],
        topics: Option<&[&str]>,
        received_ns: i64,
        limiter: Option<&mut TokenBucket>,
    ) -> Result<ProcessOutput, PipelineError> {
        let batch = decode_stage(payloads, topics, received_ns);
        self.process_batch(batch, received_ns, limiter)
    }

    /// The same as `process` for an already decoded batch.
    ///
    /// # Errors
    /// As `process`.
    pub fn process_batch(
        &mut self,
        mut batch: ReadingBatch,
        received_ns: i64,
        limiter: Option<&mut TokenBucket>,
    ) -> Result<ProcessOutput, PipelineError> {
        let n = batch.len();
        let mut out = ProcessOutput {
            errors: std::mem::take(&mut batch.errors),
            ..ProcessOutput::default()
        };

        // 1. rate limit, in batch order, keyed by sensor at the time of receipt
        let accepted = limit_stage(
            &batch,
            received_ns,
            self.config.limit_clock,
            &self.stores,
            limiter,
            &mut out,
        );

        // 2. features and verdicts per kind
        let scratch = &mut self.scratch;
        scratch.words.clear();
        let mut verdicts: Vec<Option<Verdict>> = vec![None; n];
        for kind in Kind::ALL {
            let mut rows: Vec<usize> = (0..n)
                .filter(|&i| accepted[i] && batch.kind(i) == kind)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let ki = kind_index(kind);
            let x = &mut scratch.x;
            x.clear();
            let folded = features_stage(&mut self.stores[ki], &batch, &rows, x);
            let n_stale = folded.iter().filter(|f| !**f).count();
            out.stale += n_stale;
            let Some(models) = &self.bound[ki] else {
                continue;
            };
            let n_store = self.stores[ki].n_features();
            // score only folded rows: a stale row is stored, its earlier verdict left untouched
            if n_stale > 0 {
                let mut kept = 0;
                for (r, &f) in folded.iter().enumerate() {
                    if f {
                        x.copy_within(r * n_store..(r + 1) * n_store, kept * n_store);
                        rows[kept] = rows[r];
                        kept += 1;
                    }
                }
                rows.truncate(kept);
                x.truncate(kept * n_store);
                if kept == 0 {
                    continue;
                }
            }
            let vs = score_kind(
                models,
                &self.config,
                &batch,
                &rows,
                x,
                n_store,
                &mut scratch.words,
                &mut scratch.gathered,
                &mut self.history,
            )?;
            for (&i, v) in rows.iter().zip(vs) {
                verdicts[i] = Some(v);
            }
        }

        // 3. line protocol: readings in batch order, then alerts
        self.write_stage(&batch, &accepted, &verdicts, &mut out);
        Ok(out)
    }

    /// The `reading` points in batch order, each sensor's risk rises as alerts, then the
    /// `alert` points.
    #[inline(never)]
    fn write_stage(
        &mut self,
        batch: &ReadingBatch,
        accepted: &[bool],
        verdicts: &[Option<Verdict>],
        out: &mut ProcessOutput,
    ) {
        let n = batch.len();
        let versions = self
            .bound
            .each_ref()
            .map(|b| b.as_ref().map(BoundModels::version));
        let estimate = n * self.scratch.bytes_per_reading.max(160) + n / 8;
        let mut w = LineWriter::with_capacity(estimate);
        let keys = BatchKeys::new(batch);
        out.risk.reserve(n);
        out.source.reserve(n);
        for i in 0..n {
            if !accepted[i] {
                continue;
            }
            let text = verdicts[i].as_ref().map(|v| VerdictText {
                verdict: v,
                version: versions[kind_index(batch.kind(i))].unwrap_or_default(),
                words: &self.scratch.words,
            });
            write_reading(&mut w, batch, &keys, i, text.as_ref());
            out.count += 1;
            out.risk
                .push(text.as_ref().map_or(-1, |t| t.verdict.risk as i8));
            out.source.push(batch.source[i]);
            if let Some(t) = &text {
                let risk = t.verdict.risk;
                let prev = match self.last_risk.get_mut(batch.sensor_id(i)) {
                    Some(r) => std::mem::replace(r, risk),
                    None => {
                        self.last_risk.insert(batch.sensor_id(i).into(), risk);
                        RiskLevel::default()
                    }
                };
                if risk >= RiskLevel::High && risk > prev {
                    out.alerts.push(make_alert(batch, i, t));
                }
            }
        }
        for a in &out.alerts {
            write_alert(&mut w, a);
        }
        // alert points included, and a margin: the next batch's buffer grows once at most
        self.scratch.bytes_per_reading = w.len() / out.count.max(1) * 17 / 16 + 1;
        out.line_protocol = w.into_bytes();
    }

    /// Serialise the rolling state (every kind's feature store, each sensor's last risk and its
    /// persistence history).
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        for s in &self.stores {
            let blob = s.snapshot();
            out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
            out.extend_from_slice(&blob);
        }
        out.extend_from_slice(&(self.last_risk.len() as u64).to_le_bytes());
        let mut risks: Vec<_> = self.last_risk.iter().collect();
        risks.sort();
        for (k, v) in risks {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.push(*v as u8);
        }
        out.extend_from_slice(&(self.history.len() as u64).to_le_bytes());
        let mut hist: Vec<_> = self.history.iter().collect();
        hist.sort();
        for (k, h) in hist {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&h[0].to_le_bytes());
            out.extend_from_slice(&h[1].to_le_bytes());
        }
        out
    }

    /// Restore the rolling state written by `snapshot` (the models and config stay as they are).
    ///
    /// # Errors
    /// On a corrupt or foreign blob, or one written with another window.
    pub fn restore(&mut self, data: &[u8]) -> Result<(), PipelineError> {
        let mut r = Reader { data, pos: 0 };
        if r.take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
            return Err(PipelineError::Snapshot(
                "not an infrawatch pipeline snapshot".into(),
            ));
        }
        let version = u32::from_le_bytes(r.array()?);
        if version != SNAPSHOT_VERSION && version != 1 {
            return Err(PipelineError::Snapshot(format!(
                "unsupported version {version}"
            )));
        }
        let mut stores = Vec::with_capacity(3);
        for kind in Kind::ALL {
            let len = r.len_u64()?;
            let s = FeatureStore::restore(r.take(len)?)?;
            let mine = &self.stores[kind_index(kind)];
            if s.window() != mine.window() || s.feature_names() != mine.feature_names() {
                return Err(PipelineError::Snapshot(format!(
                    "{} features differ from this pipeline's (another window or field set)",
                    kind.as_str()
                )));
            }
            stores.push(s);
        }
        let n = r.len_u64()?;
        let mut last_risk = HashMap::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let len = u32::from_le_bytes(r.array()?) as usize;
            let key = std::str::from_utf8(r.take(len)?)
                .map_err(|_| PipelineError::Snapshot("sensor id is not UTF-8".into()))?
                .to_owned();
            let level = r.take(1)?[0];
            if level > 3 {
                return Err(PipelineError::Snapshot(format!("bad risk level {level}")));
            }
            last_risk.insert(key, RiskLevel::from_u8(level));
        }
        let mut history = hashbrown::HashMap::new();
        if version >= 2 {
            let n = r.len_u64()?;
            for _ in 0..n {
                let len = u32::from_le_bytes(r.array()?) as usize;
                let key = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| PipelineError::Snapshot("sensor id is not UTF-8".into()))?
                    .to_owned();
                let leak = u64::from_le_bytes(r.array()?);
                history.insert(key, [leak, u64::from_le_bytes(r.array()?)]);
            }
        }
        if r.pos != data.len() {
            return Err(PipelineError::Snapshot("trailing bytes".into()));
        }
        self.stores = stores;
        self.last_risk = last_risk;
        self.history = history;
        Ok(())
    }
}

const SNAPSHOT_MAGIC: &[u8] = b"IWPIPE\0";
const SNAPSHOT_VERSION: u32 = 2; // 2: k-of-n persistence histories (1 still restores)

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PipelineError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| PipelineError::Snapshot("truncated".into()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PipelineError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len_u64(&mut self) -> Result<usize, PipelineError> {
        usize::try_from(u64::from_le_bytes(self.array()?))
            .map_err(|_| PipelineError::Snapshot("length overflows".into()))
    }
}

/// "ph 9.10 outside 6.50–8.50", "turbidity_ntu 7.20 above 5.00".
fn limit_words(out: &mut String, l: &QualityLimit, v: f64) {
    // writing into a String cannot fail
    let _ = match (l.min.is_finite(), l.max.is_finite()) {
        (true, true) => write!(out, "{} {v:.2} outside {:.2}–{:.2}", l.field, l.min, l.max),
        (false, _) => write!(out, "{} {v:.2} above {:.2}", l.field, l.max),
        (_, false) => write!(out, "{} {v:.2} below {:.2}", l.field, l.min),
    };
}

/// Per reading, whether the token bucket let it through; the others are reported in `out`.
///
/// A reading not newer than its sensor's newest is not judged by the bucket (nor takes a token):
/// it is a redelivery or late data, stored without a verdict (it overwrites itself in InfluxDB).
/// Charging it would turn the broker's redelivery after a worker crash into `rate_limited` loss.
#[inline(never)]
fn limit_stage(
    batch: &ReadingBatch,
    received_ns: i64,
    clock: LimitClock,
    stores: &[FeatureStore],
    limiter: Option<&mut TokenBucket>,
    out: &mut ProcessOutput,
) -> Vec<bool> {
    let mut accepted = vec![true; batch.len()];
    if let Some(lim) = limiter {
        for (i, ok) in accepted.iter_mut().enumerate() {
            let id = batch.sensor_id(i);
            let ts = batch.timestamp_ns[i];
            let store = &stores[kind_index(batch.kind(i))];
            if store.newest_ns(id).is_some_and(|newest| ts <= newest) {
                continue;
            }
            let now = match clock {
                LimitClock::Arrival => received_ns,
                LimitClock::Event => ts.min(received_ns),
            };
            if !lim.allow(id, now) {
                *ok = false;
                out.rate_limited
                    .push(usize::try_from(batch.source[i]).unwrap_or(0));
                out.rate_limited_sensors.push(batch.sensor_id(i).to_owned());
            }
        }
    }
    accepted
}

#[inline(never)]
fn decode_stage(payloads: &[&[u8]], topics: Option<&[&str]>, received_ns: i64) -> ReadingBatch {
    decode(payloads, topics, received_ns)
}

#[inline(never)]
fn features_stage(
    store: &mut FeatureStore,
    batch: &ReadingBatch,
    rows: &[usize],
    x: &mut Vec<f64>,
) -> Vec<bool> {
    store.update_rows(batch, rows, x)
}

/// Reusable buffers of the hot path (kept between batches: no page faults on multi-megabyte
/// allocations each call). Never part of the pipeline's state: cloning gives empty buffers.
#[derive(Debug, Default)]
struct Scratch {
    /// A kind's feature rows.
    x: Vec<f64>,
    /// A model's gathered input rows.
    gathered: Vec<f64>,
    /// The reasons in words of a batch's verdicts (see `Explanation`).
    words: String,
    /// Line-protocol bytes per reading of the last batch, to size the next one's buffer.
    bytes_per_reading: usize,
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

/// Verdicts for `rows` (batch indices) of one kind from their feature rows `x`; explanations
/// go to `words`. Water-flow verdicts are confirmed per sensor (`history`, in batch order, which
/// is each sensor's time order) before anything is explained: a held-back HIGH is reported as
/// MEDIUM and costs no explanation.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn score_kind(
    models: &BoundModels,
    config: &PipelineConfig,
    batch: &ReadingBatch,
    rows: &[usize],
    x: &[f64],
    n_store: usize,
    words: &mut String,
    scratch: &mut Vec<f64>,
    history: &mut hashbrown::HashMap<String, [u64; 2]>,
) -> Result<Vec<Verdict>, PipelineError> {
    let n = rows.len();
    Ok(match models {
        BoundModels::WaterFlow {
            leak,
            burst,
            persistence,
            ..
        } => {
            let pl = leak.positive_proba(x, n_store, n, scratch)?;
            let pb = burst.positive_proba(x, n_store, n, scratch)?;
            let (mut by_leak, mut by_burst) = (Vec::new(), Vec::new());
            let mut vs: Vec<Verdict> = rows
                .iter()
                .enumerate()
                .map(|(r, &i)| {
                    let t = config.zone_policy.thresholds(batch.zone(i));
                    let mut risk = t.level(pl[r], pb[r]);
                    if !persistence.is_off() {
                        let bits = history.entry_ref(batch.sensor_id(i)).or_insert([0, 0]);
                        risk = risk.min(persistence.apply(bits, t, pl[r], pb[r]));
                    }
                    // a burst is the incident when its probability crossed its own bound
                    let is_burst = pb[r] > t.high_burst
                        && (pb[r] > t.critical_burst || pl[r] <= t.critical_leak);
                    if risk >= RiskLevel::High {
                        // explained by the deciding model only
                        if is_burst {
                            &mut by_burst
                        } else {
                            &mut by_leak
                        }
                        .push(r);
                    }
                    Verdict {
                        risk,
                        confidence: confidence(pl[r].max(pb[r])),
                        scores: Scores::of(&[
                            ("leak_probability", pl[r]),
                            ("burst_probability", pb[r]),
                        ]),
                        anomaly_type: None,
                        alert_type: if is_burst { "burst" } else { "leak" },
                        explanation: Explanation::default(),
                    }
                })
                .collect();
            leak.explain(x, n_store, &by_leak, Toward::Up(0), &mut vs, words, scratch)?;
            burst.explain(
                x,
                n_store,
                &by_burst,
                Toward::Up(0),
                &mut vs,
                words,
                scratch,
            )?;
            vs
        }
        BoundModels::WaterQuality {
            contamination,
            bands,
            ..
        } => {
            let pc = match contamination {
                Some(b) => Some(b.positive_proba(x, n_store, n, scratch)?),
                None => None,
            };
            let limits: Vec<(&QualityLimit, Option<&[f64]>)> = config
                .quality_limits
                .iter()
                .map(|l| (l, batch.field(&l.field)))
                .collect();
            let mut by_model = Vec::new();
            let mut vs: Vec<Verdict> = rows
                .iter()
                .enumerate()
                .map(|(r, &i)| {
                    let p = pc.as_ref().map_or(f64::NAN, |v| v[r]);
                    let model_risk = bands.level(p);
                    let value = |c: Option<&[f64]>| c.map_or(f64::NAN, |c| c[i]);
                    let breached = |(l, c): &&(&QualityLimit, Option<&[f64]>)| {
                        let v = value(*c);
                        v < l.min || v > l.max
                    };
                    let limit_risk = limits
                        .iter()
                        .filter(breached)
                        .map(|(l, _)| l.level)
                        .max()
                        .unwrap_or_default();
                    let risk = model_risk.max(limit_risk);
                    let mut explanation = Explanation::default();
                    if risk >= RiskLevel::High {
                        // the limits breached first, then the model's reasons, three at most
                        for (l, c) in limits.iter().filter(breached) {
                            let start = words.len();
                            limit_words(words, l, value(*c));
                            explanation.push(start, words.len());
                        }
                        if model_risk >= RiskLevel::High && !explanation.is_full() {
                            by_model.push(r);
                        }
                    }
                    let scores = if pc.is_some() {
                        Scores::of(&[("contamination_probability", p)])
                    } else {
                        Scores::default()
                    };
                    Verdict {
                        risk,
                        confidence: if pc.is_some() { confidence(p) } else { 1.0 },
                        scores,
                        anomaly_type: None,
                        alert_type: if limit_risk > model_risk {
                            "quality_limit"
                        } else {
                            "contamination"
                        },
                        explanation,
                    }
                })
                .collect();
            if let Some(b) = contamination {
                b.explain(
                    x,
                    n_store,
                    &by_model,
                    Toward::Up(0),
                    &mut vs,
                    words,
                    scratch,
                )?;
            }
            vs
        }
        BoundModels::Energy {
            expected,
            anomaly,
            bands,
            tolerance,
            anomaly_types,
            ..
        } => {
            let exp = expected
                .model
                .predict_value(expected.input(x, n_store, n, scratch), n)?;
            let n_classes = anomaly.model.n_classes();
            // per row: (score in [0, 1], most probable anomalous class if a classifier)
            let scored: Vec<(f64, Option<usize>)> = if n_classes >= 2 {
                let p = anomaly
                    .model
                    .predict_proba(anomaly.input(x, n_store, n, scratch), n)?;
                p.chunks_exact(n_classes)
                    .map(|c| {
                        let top = (1..n_classes).max_by(|&a, &b| c[a].total_cmp(&c[b]));
                        (1.0 - c[0], top)
                    })
                    .collect()
            } else {
                // IsolationForest's score_samples is −2^(−E[h]/c) ∈ [−1, 0): its negation is the
                // anomaly score of Liu et al. in (0, 1], > 0.5 leaning anomalous.
                let ss = anomaly
                    .model
                    .score_samples(anomaly.input(x, n_store, n, scratch), n)?;
                ss.iter().map(|s| (-s, None)).collect()
            };
            let kwh = batch.field("energy_kwh");
            let mut explained = Vec::new();
            let mut vs: Vec<Verdict> = rows
                .iter()
                .enumerate()
                .map(|(r, &i)| {
                    let (score, top) = scored[r];
                    let risk = bands.level(score);
                    let actual = kwh.map_or(f64::NAN, |c| c[i]);
                    let typed = top.and_then(|c| anomaly_types.as_ref()?.get(c).copied());
                    let kind = typed.unwrap_or(if actual > exp[r] * (1.0 + tolerance) {
                        "high_consumption"
                    } else if actual < exp[r] * (1.0 - tolerance) {
                        "low_consumption"
                    } else {
                        "unusual_pattern"
                    });
                    let mut explanation = Explanation::default();
                    if risk >= RiskLevel::High {
                        if actual.is_finite() && exp[r].abs() > 1e-12 {
                            let pct = (actual - exp[r]) / exp[r].abs() * 100.0;
                            let start = words.len();
                            // writing into a String cannot fail
                            let _ = write!(
                                words,
                                "energy_kwh {actual:.3} vs {:.3} expected ({pct:+.0}%)",
                                exp[r]
                            );
                            explanation.push(start, words.len());
                        }
                        explained.push(r);
                    }
                    Verdict {
                        risk,
                        confidence: confidence(score),
                        scores: Scores::of(&[("anomaly_score", score), ("expected_kwh", exp[r])]),
                        anomaly_type: (risk >= RiskLevel::Medium).then_some(kind),
                        alert_type: kind,
                        explanation,
                    }
                })
                .collect();
            // towards the alert: less P(normal) for a classifier, shorter isolation paths
            let toward = if n_classes >= 2 && anomaly.model.contribution_outputs() > 1 {
                Toward::Down(0)
            } else if n_classes >= 2 {
                Toward::Up(0)
            } else {
                Toward::Down(0)
            };
            anomaly.explain(x, n_store, &explained, toward, &mut vs, words, scratch)?;
            vs
        }
    })
}

/// Field keys and tag values escaped once per batch.
struct BatchKeys<'b> {
    fields: Vec<(OwnedKey, &'b [f64])>,
    /// Per interned site/zone string of the batch: its tag-value escaping.
    interned: Vec<OwnedKey>,
}

impl<'b> BatchKeys<'b> {
    fn new(batch: &'b ReadingBatch) -> Self {
        BatchKeys {
            fields: batch
                .fields()
                .map(|(name, col)| (OwnedKey::new(name), col))
                .collect(),
            interned: batch.interned().iter().map(|s| OwnedKey::new(s)).collect(),
        }
    }
}

const READING: Key<'static> = Key::plain("reading");
const ALERT: Key<'static> = Key::plain("alert");
const KIND: Key<'static> = Key::plain("kind");
const SENSOR_ID: Key<'static> = Key::plain("sensor_id");
const SITE: Key<'static> = Key::plain("site");
const ZONE: Key<'static> = Key::plain("zone");
const SEVERITY: Key<'static> = Key::plain("severity");
const RISK: Key<'static> = Key::plain("risk");
const RISK_LEVEL: Key<'static> = Key::plain("risk_level");
const CONFIDENCE: Key<'static> = Key::plain("confidence");
const MODEL_VERSION: Key<'static> = Key::plain("model_version");
const ANOMALY_TYPE: Key<'static> = Key::plain("anomaly_type");
const EXPLANATION: Key<'static> = Key::plain("explanation");
const ALERT_TYPE: Key<'static> = Key::plain("alert_type");
const MESSAGE: Key<'static> = Key::plain("message");

/// One verdict's text to write: the model version and the reasons.
struct VerdictText<'a> {
    verdict: &'a Verdict,
    version: &'a str,
    words: &'a str,
}

fn write_reading(
    w: &mut LineWriter,
    batch: &ReadingBatch,
    keys: &BatchKeys<'_>,
    i: usize,
    verdict: Option<&VerdictText<'_>>,
) {
    w.begin_key(READING);
    // tags sorted by key: InfluxDB's fastest path
    w.tag_key(KIND, batch.kind(i).as_str());
    w.tag_key(SENSOR_ID, batch.sensor_id(i));
    w.tag_escaped(SITE, keys.interned[batch.site_ids()[i] as usize].key());
    w.tag_escaped(ZONE, keys.interned[batch.zone_ids()[i] as usize].key());
    for (key, col) in &keys.fields {
        w.field_f64_key(key.key(), col[i]);
    }
    if let Some(&VerdictText {
        verdict: v,
        version,
        words,
    }) = verdict
    {
        for &(name, s) in v.scores.iter() {
            // score names are the closed set in `score_kind`: none needs escaping
            w.field_f64(name, s);
        }
        w.field_i64_key(RISK, v.risk as i64);
        w.field_str_key(RISK_LEVEL, v.risk.as_str());
        w.field_f64_key(CONFIDENCE, v.confidence);
        w.field_str_key(MODEL_VERSION, version);
        if let Some(t) = v.anomaly_type {
            w.field_str_key(ANOMALY_TYPE, t);
        }
        if !v.explanation.is_empty() {
            let reasons = v.explanation.reasons(words);
            w.field_str_joined(EXPLANATION, &reasons[..v.explanation.len as usize], "; ");
        }
    }
    w.end(batch.timestamp_ns[i]);
}

#[inline(never)]
fn make_alert(batch: &ReadingBatch, i: usize, v: &VerdictText<'_>) -> Alert {
    let VerdictText {
        verdict: v,
        version,
        words,
    } = *v;
    let sensor = batch.sensor_id(i);
    let zone = batch.zone(i);
    let what = match v.alert_type {
        "burst" => "Possible pipe burst",
        "leak" => "Possible leak",
        "contamination" => "Possible contamination",
        "quality_limit" => "Water-quality limit breached",
        "high_consumption" => "Electricity use far above expected",
        "low_consumption" => "Electricity use implausibly low",
        _ => "Unusual electricity pattern",
    };
    let reasons = v.explanation.reasons(words);
    let reasons = &reasons[..v.explanation.len as usize];
    let mut message =
        String::with_capacity(160 + reasons.iter().map(|r| r.len() + 2).sum::<usize>());
    // writing into a String cannot fail
    let _ = write!(
        message,
        "{what} at sensor {sensor} ({} zone {zone}, site {}): {} risk; ",
        batch.kind(i).as_str(),
        batch.site(i),
        v.risk.as_str()
    );
    for (k, (name, s)) in v.scores.iter().enumerate() {
        let _ = write!(message, "{}{name} {s:.2}", if k > 0 { ", " } else { "" });
    }
    for (k, r) in reasons.iter().enumerate() {
        message.push_str(if k == 0 { " — " } else { "; " });
        message.push_str(r);
    }
    Alert {
        sensor_id: sensor.to_owned(),
        site: batch.site(i).to_owned(),
        kind: batch.kind(i),
        zone: zone.to_owned(),
        risk: v.risk,
        alert_type: v.alert_type,
        message,
        timestamp_ns: batch.timestamp_ns[i],
        model_version: version.to_owned(),
        scores: v.scores.iter().copied().collect(),
        explanation: reasons.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn write_alert(w: &mut LineWriter, a: &Alert) {
    w.begin_key(ALERT);
    w.tag_key(KIND, a.kind.as_str());
    w.tag_key(SENSOR_ID, &a.sensor_id);
    w.tag_key(SEVERITY, a.risk.severity());
    w.tag_key(SITE, &a.site);
    w.tag_key(ZONE, &a.zone);
    w.field_str_key(ALERT_TYPE, a.alert_type);
    w.field_str_key(MESSAGE, &a.message);
    w.field_i64_key(RISK, a.risk as i64);
    w.field_str_key(MODEL_VERSION, &a.model_version);
    w.end(a.timestamp_ns);
}
