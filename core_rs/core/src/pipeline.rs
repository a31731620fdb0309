//! The fused hot path (DESIGN.md §2): one call per batch of raw payloads —
//! decode → per-sensor token bucket → rolling features → tree-ensemble scores → risk level →
//! InfluxDB line protocol (one `reading` point per reading, reading and verdict together, plus an
//! `alert` point whenever a sensor's risk rises to HIGH or CRITICAL).
//!
//! Its output is, by construction and by test, what composing the separate kernels gives.

use std::collections::HashMap;
use std::sync::Arc;

use crate::batch::{MessageError, ReadingBatch};
use crate::decode::decode;
use crate::explain::{describe, top_features, Toward};
use crate::features::{FeatureError, FeatureStore};
use crate::fields::Kind;
use crate::limiter::TokenBucket;
use crate::line_protocol::LineWriter;
use crate::risk::{
    confidence, default_quality_limits, QualityLimit, RiskLevel, ScoreBands, WaterFlowPersistence,
    ZonePolicy, ZoneThresholds,
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
        Ok(Bound {
            model: Arc::clone(model),
            cols,
        })
    }

    /// The model's input matrix from the kind's feature rows (row-major, `n` rows).
    fn gather(&self, x: &[f64], n_store: usize, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n * self.cols.len());
        for r in 0..n {
            let row = &x[r * n_store..(r + 1) * n_store];
            out.extend(self.cols.iter().map(|&c| row[c]));
        }
        out
    }

    /// Plain-words reasons for row `r` of the kind's feature matrix `x` (see [`crate::explain`]).
    fn explain(
        &self,
        x: &[f64],
        n_store: usize,
        r: usize,
        toward: Toward,
        store_names: &[String],
    ) -> Result<Vec<String>, TreeError> {
        let row = &x[r * n_store..(r + 1) * n_store];
        let xm: Vec<f64> = self.cols.iter().map(|&c| row[c]).collect();
        let top = top_features(&self.model, &xm, toward, 3)?;
        Ok(top
            .into_iter()
            .map(|f| describe(&self.model.feature_names()[f], store_names, row))
            .collect())
    }

    fn positive_proba(&self, x: &[f64], n_store: usize, n: usize) -> Result<Vec<f64>, TreeError> {
        let p = self.model.predict_proba(&self.gather(x, n_store, n), n)?;
        Ok(p.chunks_exact(2).map(|c| c[1]).collect())
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

/// The verdict for one reading.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    risk: RiskLevel,
    confidence: f64,
    scores: Scores,
    anomaly_type: Option<&'static str>,
    alert_type: &'static str,
    /// Shared: cloning it per reading costs a reference count, not an allocation.
    version: Arc<str>,
    /// For HIGH and CRITICAL verdicts: up to three reasons in plain words, strongest first.
    explanation: Vec<String>,
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
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            window: 60,
            zone_policy: ZonePolicy::default(),
            quality_limits: default_quality_limits(),
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
        let batch = decode(payloads, topics, received_ns);
        self.process_batch(batch, received_ns, limiter)
    }

    /// The same as `process` for an already decoded batch.
    ///
    /// # Errors
    /// As `process`.
    pub fn process_batch(
        &mut self,
        batch: ReadingBatch,
        received_ns: i64,
        limiter: Option<&mut TokenBucket>,
    ) -> Result<ProcessOutput, PipelineError> {
        let n = batch.len();
        let mut out = ProcessOutput {
            errors: batch.errors.clone(),
            ..ProcessOutput::default()
        };

        // 1. rate limit, in batch order, keyed by sensor at the time of receipt
        let mut accepted = vec![true; n];
        if let Some(lim) = limiter {
            for (i, ok) in accepted.iter_mut().enumerate() {
                if !lim.allow(batch.sensor_id(i), received_ns) {
                    *ok = false;
                    out.rate_limited
                        .push(usize::try_from(batch.source[i]).unwrap_or(0));
                    out.rate_limited_sensors.push(batch.sensor_id(i).to_owned());
                }
            }
        }

        // 2. features and verdicts per kind
        let mut verdicts: Vec<Option<Verdict>> = vec![None; n];
        for kind in Kind::ALL {
            let rows: Vec<usize> = (0..n)
                .filter(|&i| accepted[i] && batch.kind(i) == kind)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let ki = kind_index(kind);
            let mut x = Vec::new();
            let folded = self.stores[ki].update_rows(&batch, &rows, &mut x);
            out.stale += folded.iter().filter(|f| !**f).count();
            let Some(models) = &self.bound[ki] else {
                continue;
            };
            let n_store = self.stores[ki].n_features();
            // score only folded rows: a stale row is stored, its earlier verdict left untouched
            let keep: Vec<usize> = (0..rows.len()).filter(|&r| folded[r]).collect();
            if keep.is_empty() {
                continue;
            }
            let xs: Vec<f64> = keep
                .iter()
                .flat_map(|&r| x[r * n_store..(r + 1) * n_store].iter().copied())
                .collect();
            let vs = score_kind(
                models,
                &self.config,
                self.stores[ki].feature_names(),
                &batch,
                &keep.iter().map(|&r| rows[r]).collect::<Vec<_>>(),
                &xs,
                n_store,
            )?;
            for (&r, mut v) in keep.iter().zip(vs) {
                if let BoundModels::WaterFlow { persistence, .. } = models {
                    let i = rows[r];
                    let t = self.config.zone_policy.thresholds(batch.zone(i));
                    confirm(
                        &mut self.history,
                        persistence,
                        t,
                        batch.sensor_id(i),
                        &mut v,
                    );
                }
                verdicts[rows[r]] = Some(v);
            }
        }

        // 3. line protocol: readings in batch order, then alerts
        let mut w = LineWriter::with_capacity(n * 160);
        for i in 0..n {
            if !accepted[i] {
                continue;
            }
            write_reading(&mut w, &batch, i, verdicts[i].as_ref());
            out.count += 1;
            out.risk
                .push(verdicts[i].as_ref().map_or(-1, |v| v.risk as i8));
            out.source.push(batch.source[i]);
            if let Some(v) = &verdicts[i] {
                let prev = self
                    .last_risk
                    .get_mut(batch.sensor_id(i))
                    .map(|r| std::mem::replace(r, v.risk));
                let prev = prev.unwrap_or_else(|| {
                    self.last_risk.insert(batch.sensor_id(i).to_owned(), v.risk);
                    RiskLevel::default()
                });
                if v.risk >= RiskLevel::High && v.risk > prev {
                    out.alerts.push(make_alert(&batch, i, v));
                }
            }
        }
        for a in &out.alerts {
            write_alert(&mut w, a);
        }
        out.line_protocol = w.into_bytes();
        Ok(out)
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
fn limit_words(l: &QualityLimit, v: f64) -> String {
    match (l.min.is_finite(), l.max.is_finite()) {
        (true, true) => format!("{} {v:.2} outside {:.2}–{:.2}", l.field, l.min, l.max),
        (false, _) => format!("{} {v:.2} above {:.2}", l.field, l.max),
        (_, false) => format!("{} {v:.2} below {:.2}", l.field, l.min),
    }
}

fn field_value(batch: &ReadingBatch, name: &str, i: usize) -> f64 {
    batch.field(name).map_or(f64::NAN, |c| c[i])
}

/// Apply k-of-n confirmation to a sensor's water-flow verdict (in time order); one held below
/// HIGH loses its explanation, as every verdict below HIGH.
fn confirm(
    history: &mut hashbrown::HashMap<String, [u64; 2]>,
    p: &WaterFlowPersistence,
    t: &ZoneThresholds,
    sensor: &str,
    v: &mut Verdict,
) {
    if p.is_off() {
        return;
    }
    let (leak, burst) = (v.scores.items[0].1, v.scores.items[1].1);
    let level = p.apply(history.entry_ref(sensor).or_insert([0, 0]), t, leak, burst);
    if level < v.risk {
        v.risk = level;
        v.explanation.clear();
    }
}

/// Verdicts for `rows` (batch indices) of one kind from their feature rows `x`.
fn score_kind(
    models: &BoundModels,
    config: &PipelineConfig,
    store_names: &[String],
    batch: &ReadingBatch,
    rows: &[usize],
    x: &[f64],
    n_store: usize,
) -> Result<Vec<Verdict>, PipelineError> {
    let n = rows.len();
    Ok(match models {
        BoundModels::WaterFlow {
            version,
            leak,
            burst,
            ..
        } => {
            let pl = leak.positive_proba(x, n_store, n)?;
            let pb = burst.positive_proba(x, n_store, n)?;
            rows.iter()
                .enumerate()
                .map(|(r, &i)| {
                    let risk = config.zone_policy.water_flow(batch.zone(i), pl[r], pb[r]);
                    let t = config.zone_policy.thresholds(batch.zone(i));
                    // a burst is the incident when its probability crossed its own bound
                    let is_burst = pb[r] > t.high_burst
                        && (pb[r] > t.critical_burst || pl[r] <= t.critical_leak);
                    let explanation = if risk >= RiskLevel::High {
                        let m = if is_burst { burst } else { leak };
                        m.explain(x, n_store, r, Toward::Up(0), store_names)?
                    } else {
                        Vec::new()
                    };
                    Ok(Verdict {
                        risk,
                        confidence: confidence(pl[r].max(pb[r])),
                        scores: Scores::of(&[
                            ("leak_probability", pl[r]),
                            ("burst_probability", pb[r]),
                        ]),
                        anomaly_type: None,
                        alert_type: if is_burst { "burst" } else { "leak" },
                        version: version.clone(),
                        explanation,
                    })
                })
                .collect::<Result<_, TreeError>>()?
        }
        BoundModels::WaterQuality {
            version,
            contamination,
            bands,
        } => {
            let pc = match contamination {
                Some(b) => Some(b.positive_proba(x, n_store, n)?),
                None => None,
            };
            rows.iter()
                .enumerate()
                .map(|(r, &i)| {
                    let p = pc.as_ref().map_or(f64::NAN, |v| v[r]);
                    let model_risk = bands.level(p);
                    let breached: Vec<_> = config
                        .quality_limits
                        .iter()
                        .filter(|l| {
                            let v = field_value(batch, &l.field, i);
                            v < l.min || v > l.max
                        })
                        .collect();
                    let limit_risk = breached.iter().map(|l| l.level).max().unwrap_or_default();
                    let risk = model_risk.max(limit_risk);
                    let mut explanation: Vec<String> = breached
                        .iter()
                        .map(|l| limit_words(l, field_value(batch, &l.field, i)))
                        .collect();
                    if model_risk >= RiskLevel::High {
                        if let Some(b) = contamination {
                            explanation.extend(b.explain(
                                x,
                                n_store,
                                r,
                                Toward::Up(0),
                                store_names,
                            )?);
                        }
                    }
                    explanation.truncate(3);
                    let scores = if pc.is_some() {
                        Scores::of(&[("contamination_probability", p)])
                    } else {
                        Scores::default()
                    };
                    Ok(Verdict {
                        risk,
                        confidence: if pc.is_some() { confidence(p) } else { 1.0 },
                        scores,
                        anomaly_type: None,
                        alert_type: if limit_risk > model_risk {
                            "quality_limit"
                        } else {
                            "contamination"
                        },
                        version: version.clone(),
                        explanation: if risk >= RiskLevel::High {
                            explanation
                        } else {
                            Vec::new()
                        },
                    })
                })
                .collect::<Result<_, TreeError>>()?
        }
        BoundModels::Energy {
            version,
            expected,
            anomaly,
            bands,
            tolerance,
            anomaly_types,
        } => {
            let exp = expected
                .model
                .predict_value(&expected.gather(x, n_store, n), n)?;
            let xa = anomaly.gather(x, n_store, n);
            let n_classes = anomaly.model.n_classes();
            // per row: (score in [0, 1], most probable anomalous class if a classifier)
            let scored: Vec<(f64, Option<usize>)> = if n_classes >= 2 {
                let p = anomaly.model.predict_proba(&xa, n)?;
                p.chunks_exact(n_classes)
                    .map(|c| {
                        let top = (1..n_classes).max_by(|&a, &b| c[a].total_cmp(&c[b]));
                        (1.0 - c[0], top)
                    })
                    .collect()
            } else {
                // IsolationForest's score_samples is −2^(−E[h]/c) ∈ [−1, 0): its negation is the
                // anomaly score of Liu et al. in (0, 1], > 0.5 leaning anomalous.
                let ss = anomaly.model.score_samples(&xa, n)?;
                ss.iter().map(|s| (-s, None)).collect()
            };
            rows.iter()
                .enumerate()
                .map(|(r, &i)| {
                    let (score, top) = scored[r];
                    let risk = bands.level(score);
                    let actual = field_value(batch, "energy_kwh", i);
                    let typed = top.and_then(|c| anomaly_types.as_ref()?.get(c).copied());
                    let kind = typed.unwrap_or(if actual > exp[r] * (1.0 + tolerance) {
                        "high_consumption"
                    } else if actual < exp[r] * (1.0 - tolerance) {
                        "low_consumption"
                    } else {
                        "unusual_pattern"
                    });
                    let mut explanation = Vec::new();
                    if risk >= RiskLevel::High {
                        if actual.is_finite() && exp[r].abs() > 1e-12 {
                            let pct = (actual - exp[r]) / exp[r].abs() * 100.0;
                            explanation.push(format!(
                                "energy_kwh {actual:.3} vs {:.3} expected ({pct:+.0}%)",
                                exp[r]
                            ));
                        }
                        // towards the alert: less P(normal) for a classifier, shorter isolation paths
                        let toward = if n_classes >= 2 && anomaly.model.contribution_outputs() > 1 {
                            Toward::Down(0)
                        } else if n_classes >= 2 {
                            Toward::Up(0)
                        } else {
                            Toward::Down(0)
                        };
                        explanation.extend(anomaly.explain(x, n_store, r, toward, store_names)?);
                        explanation.truncate(3);
                    }
                    Ok(Verdict {
                        risk,
                        confidence: confidence(score),
                        scores: Scores::of(&[("anomaly_score", score), ("expected_kwh", exp[r])]),
                        anomaly_type: (risk >= RiskLevel::Medium).then_some(kind),
                        alert_type: kind,
                        version: version.clone(),
                        explanation,
                    })
                })
                .collect::<Result<_, TreeError>>()?
        }
    })
}

fn write_reading(w: &mut LineWriter, batch: &ReadingBatch, i: usize, verdict: Option<&Verdict>) {
    w.begin("reading");
    // tags sorted by key: InfluxDB's fastest path
    w.tag("kind", batch.kind(i).as_str());
    w.tag("sensor_id", batch.sensor_id(i));
    w.tag("site", batch.site(i));
    w.tag("zone", batch.zone(i));
    for (name, col) in batch.fields() {
        w.field_f64(name, col[i]);
    }
    if let Some(v) = verdict {
        for (name, s) in v.scores.iter() {
            w.field_f64(name, *s);
        }
        w.field_i64("risk", v.risk as i64);
        w.field_str("risk_level", v.risk.as_str());
        w.field_f64("confidence", v.confidence);
        w.field_str("model_version", &v.version);
        if let Some(t) = v.anomaly_type {
            w.field_str("anomaly_type", t);
        }
        if !v.explanation.is_empty() {
            w.field_str("explanation", &v.explanation.join("; "));
        }
    }
    w.end(batch.timestamp_ns[i]);
}

fn make_alert(batch: &ReadingBatch, i: usize, v: &Verdict) -> Alert {
    let sensor = batch.sensor_id(i);
    let zone = batch.zone(i);
    let scores = v
        .scores
        .iter()
        .map(|(k, s)| format!("{k} {s:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    let what = match v.alert_type {
        "burst" => "Possible pipe burst",
        "leak" => "Possible leak",
        "contamination" => "Possible contamination",
        "quality_limit" => "Water-quality limit breached",
        "high_consumption" => "Electricity use far above expected",
        "low_consumption" => "Electricity use implausibly low",
        _ => "Unusual electricity pattern",
    };
    let mut message = format!(
        "{what} at sensor {sensor} ({} zone {zone}, site {}): {} risk; {scores}",
        batch.kind(i).as_str(),
        batch.site(i),
        v.risk.as_str()
    );
    if !v.explanation.is_empty() {
        message.push_str(" — ");
        message.push_str(&v.explanation.join("; "));
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
        model_version: v.version.to_string(),
        scores: v.scores.iter().copied().collect(),
        explanation: v.explanation.clone(),
    }
}

fn write_alert(w: &mut LineWriter, a: &Alert) {
    w.begin("alert");
    w.tag("kind", a.kind.as_str());
    w.tag("sensor_id", &a.sensor_id);
    w.tag("severity", a.risk.severity());
    w.tag("site", &a.site);
    w.tag("zone", &a.zone);
    w.field_str("alert_type", a.alert_type);
    w.field_str("message", &a.message);
    w.field_i64("risk", a.risk as i64);
    w.field_str("model_version", &a.model_version);
    w.end(a.timestamp_ns);
}
