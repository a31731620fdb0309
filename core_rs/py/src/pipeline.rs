//! `Pipeline` and `ProcessResult`: converts the Python configuration once, then each `process`
//! call extracts the payloads, releases the GIL for the whole fused hot path, and builds the
//! outputs once.

use std::sync::{Arc, Mutex};

use infrawatch_core::fields::Kind;
use infrawatch_core::limiter::TokenBucket;
use infrawatch_core::pipeline::{
    kind_fields, Alert, EnergyModels, LimitClock, Models, Pipeline, PipelineConfig, ProcessOutput,
    WaterFlowModels, WaterQualityModels,
};
use infrawatch_core::risk::{
    default_quality_limits, Persistence, QualityLimit, RiskLevel, ScoreBands, WaterFlowPersistence,
    ZonePolicy, ZoneThresholds,
};
use numpy::PyArray1;
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::decode::{hold_payloads, now_ns, topic_objects, topic_texts};
use crate::errors::value_error;
use crate::limiter::PyTokenBucket;
use crate::trees::PyTreeEnsemble;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // a panic while holding the lock cannot leave the state half-written in a way we could repair
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn get_item<'py>(d: &Bound<'py, PyDict>, key: &str, what: &str) -> PyResult<Bound<'py, PyAny>> {
    d.get_item(key)?
        .ok_or_else(|| PyKeyError::new_err(format!("{what}: missing key {key:?}")))
}

fn ensemble(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Arc<infrawatch_core::trees::Ensemble>> {
    let m = obj
        .cast::<PyTreeEnsemble>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a core.TreeEnsemble")))?;
    Ok(m.borrow().ensemble())
}

fn version(d: &Bound<'_, PyDict>) -> PyResult<String> {
    Ok(match d.get_item("version")? {
        Some(v) => v.str()?.to_string(),
        None => "unversioned".to_owned(),
    })
}

fn bands(d: &Bound<'_, PyDict>, default: ScoreBands) -> PyResult<ScoreBands> {
    let Some(b) = d.get_item("bands")? else {
        return Ok(default);
    };
    let b = b
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("bands must be a dict"))?;
    let get =
        |k: &str, dv: f64| -> PyResult<f64> { b.get_item(k)?.map_or(Ok(dv), |v| v.extract()) };
    let out = ScoreBands {
        medium: get("medium", default.medium)?,
        high: get("high", default.high)?,
        critical: get("critical", default.critical)?,
    };
    if !(out.medium <= out.high && out.high <= out.critical) {
        return Err(value_error("bands must satisfy medium <= high <= critical"));
    }
    Ok(out)
}

/// `{"leak": {"k": k, "n": n}, "burst": {...}}` (either may be left out: off), or one
/// `{"k": k, "n": n}` for both: a model pages only when k of a sensor's last n verdicts reached
/// HIGH by its probability (default off).
fn persistence(d: &Bound<'_, PyDict>) -> PyResult<WaterFlowPersistence> {
    fn rule(p: &Bound<'_, PyDict>) -> PyResult<Persistence> {
        let k: u32 = get_item(p, "k", "persistence")?.extract()?;
        let n: u32 = get_item(p, "n", "persistence")?.extract()?;
        Persistence::new(k, n).map_err(value_error)
    }
    fn as_dict(p: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyDict>> {
        p.cast_into::<PyDict>().map_err(|_| {
            PyTypeError::new_err(
                "persistence must be a dict {'leak': {'k': k, 'n': n}, 'burst': {'k': k, 'n': n}}",
            )
        })
    }
    let Some(p) = d.get_item("persistence")?.filter(|p| !p.is_none()) else {
        return Ok(WaterFlowPersistence::default());
    };
    let p = as_dict(p)?;
    if p.contains("k")? {
        let both = rule(&p)?;
        return Ok(WaterFlowPersistence {
            leak: both,
            burst: both,
        });
    }
    let mut out = WaterFlowPersistence::default();
    for (role, slot) in [("leak", &mut out.leak), ("burst", &mut out.burst)] {
        if let Some(r) = p.get_item(role)?.filter(|r| !r.is_none()) {
            *slot = rule(&as_dict(r)?)?;
        }
    }
    Ok(out)
}

fn kind_dict<'py>(models: &Bound<'py, PyDict>, kind: Kind) -> PyResult<Option<Bound<'py, PyDict>>> {
    match models.get_item(kind.as_str())? {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => Ok(Some(v.cast_into::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!("models[{:?}] must be a dict", kind.as_str()))
        })?)),
    }
}

/// `{"water_flow": {"leak": m, "burst": m, "version": s, "persistence": {"leak": {"k": k, "n": n},
/// "burst": {...}}},
/// "water_quality": {"contamination": m,
/// "version": s, "bands": {...}}, "energy": {"expected_kwh": m, "anomaly": m, "version": s,
/// "bands": {...}, "tolerance": f}}` → core `Models`.
fn parse_models(models: Option<&Bound<'_, PyAny>>) -> PyResult<Models> {
    let Some(models) = models.filter(|m| !m.is_none()) else {
        return Ok(Models::default());
    };
    let models = models
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("models must be a dict keyed by kind"))?;
    for key in models.keys() {
        let k: String = key.extract()?;
        if Kind::parse(&k).is_none() {
            return Err(value_error(format!(
                "models: unknown kind {k:?} (water_flow, water_quality, energy)"
            )));
        }
    }
    let mut out = Models::default();
    if let Some(d) = kind_dict(models, Kind::WaterFlow)? {
        out.water_flow = Some(WaterFlowModels {
            version: version(&d)?,
            leak: ensemble(
                &get_item(&d, "leak", "models['water_flow']")?,
                "models['water_flow']['leak']",
            )?,
            burst: ensemble(
                &get_item(&d, "burst", "models['water_flow']")?,
                "models['water_flow']['burst']",
            )?,
            persistence: persistence(&d)?,
        });
    }
    if let Some(d) = kind_dict(models, Kind::WaterQuality)? {
        let contamination = match d.get_item("contamination")? {
            Some(m) if !m.is_none() => {
                Some(ensemble(&m, "models['water_quality']['contamination']")?)
            }
            _ => None,
        };
        out.water_quality = Some(WaterQualityModels {
            version: version(&d)?,
            contamination,
            bands: bands(&d, ScoreBands::CONTAMINATION)?,
        });
    }
    if let Some(d) = kind_dict(models, Kind::Energy)? {
        let tolerance: f64 = d.get_item("tolerance")?.map_or(Ok(0.25), |v| v.extract())?;
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(value_error(
                "models['energy']['tolerance'] must be a finite number >= 0",
            ));
        }
        out.energy = Some(EnergyModels {
            version: version(&d)?,
            expected_kwh: ensemble(
                &get_item(&d, "expected_kwh", "models['energy']")?,
                "models['energy']['expected_kwh']",
            )?,
            anomaly: ensemble(
                &get_item(&d, "anomaly", "models['energy']")?,
                "models['energy']['anomaly']",
            )?,
            bands: bands(&d, ScoreBands::ENERGY)?,
            tolerance,
            anomaly_types: d
                .get_item("anomaly_types")?
                .map(|v| v.extract::<Vec<String>>())
                .transpose()
                .map_err(|_| {
                    value_error("models['energy']['anomaly_types'] must be a list of str")
                })?,
        });
    }
    Ok(out)
}

/// `{"CRITICAL": {"critical_burst": .3, "critical_leak": .7, "high_burst": .1, "high_leak": .4,
/// "medium_leak": .2}, ...}`: listed zones override the design's table; the `STANDARD` entry is
/// also the row for every unlisted zone.
fn parse_zone_policy(zp: Option<&Bound<'_, PyAny>>) -> PyResult<ZonePolicy> {
    let mut policy = ZonePolicy::default();
    let Some(zp) = zp.filter(|z| !z.is_none()) else {
        return Ok(policy);
    };
    let zp = zp
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("zone_policy must be a dict keyed by zone"))?;
    for (zone, row) in zp.iter() {
        let zone: String = zone.extract::<String>()?.to_uppercase();
        let row = row
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("zone_policy values must be dicts"))?;
        let base = *policy.thresholds(&zone);
        let get = |k: &str, dv: f64| -> PyResult<f64> {
            row.get_item(k)?.map_or(Ok(dv), |v| v.extract())
        };
        let t = ZoneThresholds {
            critical_burst: get("critical_burst", base.critical_burst)?,
            critical_leak: get("critical_leak", base.critical_leak)?,
            high_burst: get("high_burst", base.high_burst)?,
            high_leak: get("high_leak", base.high_leak)?,
            medium_leak: get("medium_leak", base.medium_leak)?,
        };
        for k in row.keys() {
            let k: String = k.extract()?;
            if ![
                "critical_burst",
                "critical_leak",
                "high_burst",
                "high_leak",
                "medium_leak",
            ]
            .contains(&k.as_str())
            {
                return Err(value_error(format!(
                    "zone_policy[{zone:?}]: unknown key {k:?}"
                )));
            }
        }
        if zone == "STANDARD" {
            policy.default = t;
        }
        policy.zones.retain(|(z, _)| *z != zone);
        policy.zones.push((zone, t));
    }
    Ok(policy)
}

/// `{"ph": (6.5, 8.5), "turbidity_ntu": (None, 5.0)}` → limits that make a reading at least HIGH.
fn parse_quality_limits(q: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<QualityLimit>> {
    let Some(q) = q.filter(|q| !q.is_none()) else {
        return Ok(default_quality_limits());
    };
    let q = q
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("quality_limits must be a dict field -> (min, max)"))?;
    let mut out = Vec::new();
    for (field, bounds) in q.iter() {
        let field: String = field.extract()?;
        let (lo, hi): (Option<f64>, Option<f64>) = bounds.extract()?;
        out.push(QualityLimit {
            field,
            min: lo.unwrap_or(f64::NEG_INFINITY),
            max: hi.unwrap_or(f64::INFINITY),
            level: RiskLevel::High,
        });
    }
    Ok(out)
}

/// The fused hot path (DESIGN.md §2). One `process` call per batch; the GIL is released while
/// it works; per-sensor state (rolling windows, last risk) lives here and survives `set_models`.
#[pyclass(name = "Pipeline", module = "infrawatch._core")]
pub struct PyPipeline {
    inner: Mutex<Pipeline>,
    limiter: Option<Arc<Mutex<TokenBucket>>>,
    limiter_obj: Option<Py<PyTokenBucket>>,
    models: Py<PyAny>,
}

#[pymethods]
impl PyPipeline {
    #[new]
    #[pyo3(signature = (models=None, window=60, limiter=None, zone_policy=None, *, quality_limits=None, limit_clock="arrival"))]
    fn new(
        py: Python<'_>,
        models: Option<&Bound<'_, PyAny>>,
        window: usize,
        limiter: Option<&Bound<'_, PyTokenBucket>>,
        zone_policy: Option<&Bound<'_, PyAny>>,
        quality_limits: Option<&Bound<'_, PyAny>>,
        limit_clock: &str,
    ) -> PyResult<Self> {
        let limit_clock = match limit_clock {
            "arrival" => LimitClock::Arrival,
            "event" => LimitClock::Event,
            other => {
                return Err(PyValueError::new_err(format!(
                    "limit_clock must be 'arrival' or 'event', got {other:?}"
                )))
            }
        };
        let config = PipelineConfig {
            window,
            zone_policy: parse_zone_policy(zone_policy)?,
            quality_limits: parse_quality_limits(quality_limits)?,
            limit_clock,
        };
        let parsed = parse_models(models)?;
        let inner = Pipeline::new(&parsed, config).map_err(value_error)?;
        Ok(PyPipeline {
            inner: Mutex::new(inner),
            limiter: limiter.map(|l| l.borrow().shared()),
            limiter_obj: limiter.map(|l| l.clone().unbind()),
            models: models.map_or_else(|| py.None(), |m| m.clone().unbind()),
        })
    }

    /// Decode, rate-limit, score and encode one batch. `received_ns` defaults to now.
    #[pyo3(signature = (payloads, topics=None, received_ns=None))]
    fn process(
        &self,
        py: Python<'_>,
        payloads: &Bound<'_, PyAny>,
        topics: Option<&Bound<'_, PyAny>>,
        received_ns: Option<i64>,
    ) -> PyResult<PyProcessResult> {
        let held = hold_payloads(payloads)?;
        // topics borrowed from the str objects' UTF-8 (no copy), as `decode` does
        let topics = topic_objects(topics, held.len())?;
        let texts = topics.as_deref().map(topic_texts);
        let received_ns = received_ns.unwrap_or_else(now_ns);
        let slices = held.slices();
        let topic_refs: Option<Vec<&str>> = texts
            .as_ref()
            .map(|v| v.iter().map(AsRef::as_ref).collect());
        let (inner, limiter) = (&self.inner, self.limiter.as_ref());
        let out = py
            .detach(|| {
                let mut pipe = lock(inner);
                let mut lim = limiter.map(|l| lock(l));
                pipe.process(
                    &slices,
                    topic_refs.as_deref(),
                    received_ns,
                    lim.as_deref_mut(),
                )
            })
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        PyProcessResult::build(py, out)
    }

    /// Swap the models (hot reload) without losing per-sensor state.
    fn set_models(&mut self, models: &Bound<'_, PyAny>) -> PyResult<()> {
        let parsed = parse_models(Some(models))?;
        lock(&self.inner).set_models(&parsed).map_err(value_error)?;
        self.models = models.clone().unbind();
        Ok(())
    }

    #[getter]
    fn models(&self, py: Python<'_>) -> Py<PyAny> {
        self.models.clone_ref(py)
    }

    #[getter]
    fn limiter(&self, py: Python<'_>) -> Option<Py<PyTokenBucket>> {
        self.limiter_obj.as_ref().map(|l| l.clone_ref(py))
    }

    #[getter]
    fn window(&self) -> usize {
        lock(&self.inner).config().window
    }

    /// The feature names of a kind's rolling-feature store (what its models are trained on).
    fn feature_names(&self, kind: &str) -> PyResult<Vec<String>> {
        let k = Kind::parse(kind).ok_or_else(|| value_error(format!("unknown kind {kind:?}")))?;
        Ok(lock(&self.inner).store(k).feature_names().to_vec())
    }

    /// Serialised per-sensor state (rolling windows and last risk), for a restart.
    fn snapshot<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let inner = &self.inner;
        let blob = py.detach(|| lock(inner).snapshot());
        PyBytes::new(py, &blob)
    }

    /// Restore state written by `snapshot` (models and config unchanged).
    fn restore(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| lock(inner).restore(data)).map_err(value_error)
    }

    fn __len__(&self) -> usize {
        lock(&self.inner).n_sensors()
    }

    fn __repr__(&self) -> String {
        let p = lock(&self.inner);
        format!(
            "Pipeline(window={}, sensors={}, limiter={})",
            p.config().window,
            p.n_sensors(),
            self.limiter.is_some()
        )
    }
}

/// The outputs of one `Pipeline.process` call.
#[pyclass(name = "ProcessResult", module = "infrawatch._core", frozen)]
pub struct PyProcessResult {
    #[pyo3(get)]
    line_protocol: Py<PyBytes>,
    #[pyo3(get)]
    errors: Py<PyList>,
    #[pyo3(get)]
    rate_limited: Vec<usize>,
    #[pyo3(get)]
    rate_limited_sensors: Vec<String>,
    #[pyo3(get)]
    alerts: Py<PyList>,
    #[pyo3(get)]
    count: usize,
    #[pyo3(get)]
    stale: usize,
    /// Per written reading (line-protocol order): risk 0–3, or −1 without a verdict.
    #[pyo3(get)]
    risk: Py<PyArray1<i8>>,
    /// Per written reading: index of the input message it came from.
    #[pyo3(get)]
    source: Py<PyArray1<i32>>,
}

/// One str object per distinct value within a call: an alert's site, zone, kind, severity,
/// level, type and model version repeat across a batch's alerts.
/// A batch has few distinct ones, so a short list searched in order beats hashing.
struct Strings<'py> {
    py: Python<'py>,
    made: Vec<(String, Bound<'py, PyString>)>,
}

impl<'py> Strings<'py> {
    const MAX: usize = 32;

    fn get(&mut self, s: &str) -> Bound<'py, PyString> {
        if let Some((_, o)) = self.made.iter().find(|(k, _)| k == s) {
            return o.clone();
        }
        let o = PyString::new(self.py, s);
        if self.made.len() < Self::MAX {
            self.made.push((s.to_owned(), o.clone()));
        }
        o
    }
}

/// The keys of an alert dict in order, with `None` values: one per set of score names within a
/// call. Each alert dict is a copy of its template with the values replaced, so no dict grows
/// (and rehashes) key by key.
struct Templates<'py> {
    made: Vec<(Vec<&'static str>, Bound<'py, PyDict>)>,
}

impl<'py> Templates<'py> {
    fn get(&mut self, py: Python<'py>, a: &Alert) -> PyResult<Bound<'py, PyDict>> {
        if let Some((_, d)) = self
            .made
            .iter()
            .find(|(k, _)| k.iter().copied().eq(a.scores.iter().map(|s| s.0)))
        {
            return d.copy();
        }
        let d = PyDict::new(py);
        let none = py.None();
        // the order of the keys is the order the dicts had when built key by key
        for k in [
            intern!(py, "sensor_id"),
            intern!(py, "site"),
            intern!(py, "kind"),
            intern!(py, "zone"),
            intern!(py, "severity"),
            intern!(py, "risk"),
            intern!(py, "risk_level"),
            intern!(py, "alert_type"),
            intern!(py, "message"),
            intern!(py, "timestamp_ns"),
            intern!(py, "model_version"),
            intern!(py, "explanation"),
        ] {
            d.set_item(k, &none)?;
        }
        for (k, _) in &a.scores {
            d.set_item(score_key(py, k), &none)?;
        }
        let copy = d.copy()?;
        self.made.push((a.scores.iter().map(|s| s.0).collect(), d));
        Ok(copy)
    }
}

fn alert_dict<'py>(
    py: Python<'py>,
    a: &Alert,
    strings: &mut Strings<'py>,
    templates: &mut Templates<'py>,
) -> PyResult<Bound<'py, PyDict>> {
    // keys interned once per process: ~15 keys × a thousand alerts a batch otherwise each make a str
    let d = templates.get(py, a)?;
    d.set_item(intern!(py, "sensor_id"), &a.sensor_id)?;
    d.set_item(intern!(py, "site"), strings.get(&a.site))?;
    d.set_item(intern!(py, "kind"), strings.get(a.kind.as_str()))?;
    d.set_item(intern!(py, "zone"), strings.get(&a.zone))?;
    d.set_item(intern!(py, "severity"), strings.get(a.risk.severity()))?;
    d.set_item(intern!(py, "risk"), a.risk as u8)?;
    d.set_item(intern!(py, "risk_level"), strings.get(a.risk.as_str()))?;
    d.set_item(intern!(py, "alert_type"), strings.get(a.alert_type))?;
    d.set_item(intern!(py, "message"), &a.message)?;
    d.set_item(intern!(py, "timestamp_ns"), a.timestamp_ns)?;
    d.set_item(intern!(py, "model_version"), strings.get(&a.model_version))?;
    d.set_item(intern!(py, "explanation"), &a.explanation)?;
    for (k, v) in &a.scores {
        d.set_item(score_key(py, k), *v)?;
    }
    Ok(d)
}

/// The verdict score names (a closed set), interned.
fn score_key<'py>(py: Python<'py>, k: &str) -> Bound<'py, PyString> {
    match k {
        "leak_probability" => intern!(py, "leak_probability").clone(),
        "burst_probability" => intern!(py, "burst_probability").clone(),
        "contamination_probability" => intern!(py, "contamination_probability").clone(),
        "anomaly_score" => intern!(py, "anomaly_score").clone(),
        "expected_kwh" => intern!(py, "expected_kwh").clone(),
        _ => PyString::new(py, k),
    }
}

impl PyProcessResult {
    fn build(py: Python<'_>, out: ProcessOutput) -> PyResult<Self> {
        let errors = PyList::empty(py);
        for e in &out.errors {
            errors.append(PyTuple::new(
                py,
                [
                    e.index.into_pyobject(py)?.into_any(),
                    e.reason.into_pyobject(py)?.into_any(),
                    e.message.as_str().into_pyobject(py)?.into_any(),
                ],
            )?)?;
        }
        let alerts = PyList::empty(py);
        let mut strings = Strings {
            py,
            made: Vec::new(),
        };
        let mut templates = Templates { made: Vec::new() };
        for a in &out.alerts {
            alerts.append(alert_dict(py, a, &mut strings, &mut templates)?)?;
        }
        Ok(PyProcessResult {
            line_protocol: PyBytes::new(py, &out.line_protocol).unbind(),
            errors: errors.unbind(),
            rate_limited: out.rate_limited,
            rate_limited_sensors: out.rate_limited_sensors,
            alerts: alerts.unbind(),
            count: out.count,
            stale: out.stale,
            risk: PyArray1::from_vec(py, out.risk).unbind(),
            source: PyArray1::from_vec(py, out.source).unbind(),
        })
    }
}

#[pymethods]
impl PyProcessResult {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ProcessResult(count={}, errors={}, rate_limited={}, alerts={}, stale={}, bytes={})",
            self.count,
            self.errors.bind(py).len(),
            self.rate_limited.len(),
            self.alerts.bind(py).len(),
            self.stale,
            self.line_protocol.bind(py).as_bytes().len()
        )
    }
}

/// The fields a kind's rolling-feature store keeps (what its models see).
#[pyfunction(name = "kind_fields")]
fn py_kind_fields(kind: &str) -> PyResult<Vec<String>> {
    Kind::parse(kind)
        .map(kind_fields)
        .ok_or_else(|| value_error(format!("unknown kind {kind:?}")))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPipeline>()?;
    m.add_class::<PyProcessResult>()?;
    m.add_function(wrap_pyfunction!(py_kind_fields, m)?)?;
    Ok(())
}
