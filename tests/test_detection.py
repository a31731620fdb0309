"""Training, the model registry, evaluation through the Pipeline, the CLI and the data adapters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infrawatch import cli, core, sim
from infrawatch.detection import datasets
from infrawatch.detection.evaluation import EVENT_RULES, evaluate_data, run_pipeline
from infrawatch.detection.registry import ActiveModels, ModelRegistry, RegistryError
from infrawatch.detection.training import (
    BURST_KEEP_S,
    LEAK_KEEP_S,
    LEAK_SKIP_S,
    FastEvents,
    TrainConfig,
    Trainer,
    _event_f1,
    feature_subset,
    features,
    train,
    training_labels,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = {"n_sensors": 6, "days": 3.0}


def tiny_config(kind: str, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "kind": kind,
        "window": 20,
        "n_sensors": 10,
        # water_flow readings come every minute: 4 days are plenty; the others use their default span
        "days": 4.0 if kind == "water_flow" else None,
        "train_seeds": (1,),
        "validation_seeds": (2,),
        "test_seeds": (3,),
        "max_candidates": 1,  # the default candidate only
        "n_estimators": 12,
        "max_train_rows": 30_000,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    reg = ModelRegistry(tmp_path_factory.mktemp("models"))
    for kind in ("water_flow", "water_quality", "energy"):
        train(tiny_config(kind), reg)
    return reg


def test_training_stores_an_active_version_with_metadata(registry: ModelRegistry) -> None:
    for kind, roles in (
        ("water_flow", {"leak", "burst"}),
        ("water_quality", {"contamination"}),
        ("energy", {"anomaly", "expected_kwh"}),
    ):
        (v,) = registry.versions(kind)
        assert v.active
        assert roles <= {p.stem for p in v.path.glob("*.iwm")}
        meta = json.loads((v.path / "model.json").read_text())
        assert meta["window"] == 20
        assert meta["features"]
        assert meta["data"]["source"] == "infrawatch.sim"
        assert meta["versions"]["scikit-learn"]
        pooled = meta["metrics"]["test"]["pooled"]["event"]
        assert pooled["events"] > 0
        assert 0.0 <= pooled["recall"] <= 1.0
        # the artifact carries its own provenance too
        ens = core.TreeEnsemble.load(str(next(v.path.glob("*.iwm"))))
        assert ens.metadata["version"] == v.version


def test_search_tries_exactly_max_candidates_whatever_the_budget(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    train(tiny_config("water_quality", max_candidates=2, time_budget_s=0.0), reg)
    (v,) = reg.versions("water_quality")
    search = json.loads((v.path / "model.json").read_text())["search"]
    assert len(search) == 2
    assert search[0]["family"] == "hgb"  # the sound default always comes first


def test_energy_model_is_a_typed_classifier(registry: ModelRegistry) -> None:
    entry = registry.load("energy")
    assert entry["anomaly"].classes is not None
    assert entry["anomaly_types"][0] == "normal"
    # the expected-use regressor never sees the kWh it predicts
    assert not any(f.startswith("energy_kwh") for f in entry["expected_kwh"].feature_names)


def test_registry_loads_into_a_pipeline_and_activation_switches(registry: ModelRegistry) -> None:
    models = registry.load_active()
    assert set(models) == {"water_flow", "water_quality", "energy"}
    pipe = core.Pipeline(models=models, window=registry.window() or 60)
    assert pipe.window == 20
    # a second version, then switch back: the active pointer moves, nothing is overwritten
    first = registry.active_version("water_quality")
    second = train(tiny_config("water_quality", random_state=1), registry).version
    assert registry.active_version("water_quality") == second != first
    registry.activate("water_quality", first)  # type: ignore[arg-type]
    assert registry.active_version("water_quality") == first
    with pytest.raises(RegistryError, match="no version"):
        registry.activate("water_quality", "nope")
    with pytest.raises(RegistryError, match="unknown kind"):
        registry.versions("gas")


def test_evaluation_runs_the_real_pipeline(registry: ModelRegistry) -> None:
    data = sim.simulate("water_flow", seed=7, **TINY)
    entry = registry.load("water_flow")
    r = evaluate_data("seed 7", data, entry, 20)
    assert len(r.risk) == len(data)
    # the same verdicts as a Pipeline fed by hand, where scored; the first day is probationary
    payloads, topics = sim.payloads(data)
    raw = run_pipeline({"water_flow": entry}, 20, payloads, topics)
    assert (raw >= 0).all()  # every reading got a verdict
    scored = data.timestamp_ns >= data.timestamp_ns.min() + 86_400 * 10**9
    assert np.array_equal(raw[scored], r.risk[scored])
    assert (r.risk[~scored] == -1).all()
    assert r.scores.event.events == sum(
        e.start_ns >= data.timestamp_ns.min() + 86_400 * 10**9 for e in data.events
    )


def test_water_flow_model_stores_its_persistence_rules(registry: ModelRegistry) -> None:
    rules = registry.load("water_flow")["persistence"]
    assert set(rules) == {"leak", "burst"}
    assert all(1 <= r["k"] <= r["n"] <= 64 for r in rules.values())


def test_persistence_in_the_pipeline_matches_the_search_twin(registry: ModelRegistry) -> None:
    """The per-model k-of-n rules the Rust pipeline applies are the ones training chose them by."""
    data = sim.simulate("water_flow", seed=7, n_sensors=6, days=3.0, bursts_per_sensor_week=3.0)
    entry = {k: v for k, v in registry.load("water_flow").items() if k != "persistence"}
    payloads, topics = sim.payloads(data)
    raw = run_pipeline({"water_flow": entry}, 20, payloads, topics)
    rules = {"leak": {"k": 2, "n": 4}, "burst": {"k": 4, "n": 6}}
    with_rules = {"water_flow": {**entry, "persistence": rules}}
    kept = run_pipeline(with_rules, 20, payloads, topics)
    # the twin: each model's HIGH by the zone table, confirmed on its own, in sensor order
    x, names = features(data, 20)
    fast = FastEvents(data, **EVENT_RULES["water_flow"])
    critical = data.zone == "CRITICAL"
    twin_sorted = np.zeros(len(data), bool)
    for role, bounds in (("leak", (0.4, 0.6)), ("burst", (0.1, 0.2))):
        model = entry[role]
        cols = [names.index(n) for n in model.feature_names]
        p = np.asarray(model.predict_proba(np.ascontiguousarray(x[:, cols])))[:, 1]
        high = fast.sort(np.where(critical, p > bounds[0], p > bounds[1]))
        twin_sorted |= fast.confirm(high, rules[role]["k"], rules[role]["n"])
    twin = np.empty(len(data), bool)
    twin[fast.order] = twin_sorted
    assert (raw >= 2).sum() > (kept >= 2).sum() > 0  # some verdicts were held back, some paged
    np.testing.assert_array_equal(kept >= 2, twin)
    # held back means MEDIUM; every other verdict is the zone table's
    np.testing.assert_array_equal(kept[(raw >= 2) & ~twin], 1)
    np.testing.assert_array_equal(kept[(raw < 2) | twin], raw[(raw < 2) | twin])
    # one rule for both models is the same as giving it to each
    both = run_pipeline({"water_flow": {**entry, "persistence": {"k": 4, "n": 6}}}, 20, payloads, topics)
    each = {"leak": {"k": 4, "n": 6}, "burst": {"k": 4, "n": 6}}
    np.testing.assert_array_equal(
        both, run_pipeline({"water_flow": {**entry, "persistence": each}}, 20, payloads, topics)
    )
    # a snapshot carries each sensor's histories: a restored pipeline goes on exactly
    half = len(payloads) // 2
    first = core.Pipeline(models=with_rules, window=20)
    first.process(payloads[:half], topics[:half], received_ns=None)
    second = core.Pipeline(models=with_rules, window=20)
    second.restore(first.snapshot())
    out = second.process(payloads[half:], topics[half:], received_ns=None)
    resumed = np.full(len(payloads) - half, -1, np.int8)
    resumed[np.asarray(out.source)] = np.asarray(out.risk)
    np.testing.assert_array_equal(resumed, kept[half:])
    for bad in ({"k": 0, "n": 3}, {"leak": {"k": 4, "n": 3}}, {"burst": {"k": 2, "n": 65}}):
        with pytest.raises(ValueError, match="persistence"):
            core.Pipeline(models={"water_flow": {**entry, "persistence": bad}}, window=20)


def test_fast_event_figures_equal_the_reference() -> None:
    data = sim.simulate("water_flow", seed=4, n_sensors=5, days=4.0)
    fast = FastEvents(data, **EVENT_RULES["water_flow"])
    rng = np.random.default_rng(0)
    inside = data.label > 0
    for rate_in, rate_out in ((0.05, 0.001), (0.5, 0.0), (0.0, 0.01), (0.0, 0.0), (1.0, 1.0)):
        alert = np.where(inside, rng.random(len(data)) < rate_in, rng.random(len(data)) < rate_out)
        for k, n in ((1, 1), (2, 3)):
            sorted_alert = fast.confirm(fast.sort(alert), k, n)
            alert_k = np.empty(len(data), bool)
            alert_k[fast.order] = sorted_alert
            ref = _event_f1(data, alert_k, probation=True)
            got = fast.scores(sorted_alert)
            want = (ref.precision, ref.recall, ref.f1, ref.false_positive_share)
            np.testing.assert_allclose(got, want, equal_nan=True)


def test_training_labels_leave_out_what_the_features_cannot_see() -> None:
    data = sim.simulate("water_flow", seed=5, n_sensors=8, days=7.0)
    y = training_labels(data)
    assert set(np.unique(y)) == {-1, 0, 1, 2}
    np.testing.assert_array_equal(y[data.label == 0], 0)  # normal stays normal
    for e in data.events:
        s = next(i for i, x in enumerate(data.sensors) if x.sensor_id == e.sensor_id)
        rows = (data.sensor_index == s) & (data.timestamp_ns >= e.start_ns) & (data.timestamp_ns < e.end_ns)
        age = (data.timestamp_ns[rows] - e.start_ns) / 1e9
        label = 1 if e.type == "leak" else 2
        taught = (age >= LEAK_SKIP_S) & (age < LEAK_KEEP_S) if e.type == "leak" else age < BURST_KEEP_S
        np.testing.assert_array_equal(y[rows], np.where(taught, label, -1))


def test_empty_registry_says_what_to_do(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    assert reg.load_active() == {}
    with pytest.raises(RegistryError, match="infrawatch train --kind energy"):
        reg.load("energy")


def test_cli_lists_activates_and_evaluates(
    registry: ModelRegistry, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = str(registry.root)
    assert cli.main(["models", "list", "--model-dir", root]) == 0
    out = capsys.readouterr().out
    assert out.count("*") == 3
    version = registry.active_version("water_flow")
    assert cli.main(["models", "activate", "water_flow", str(version), "--model-dir", root]) == 0
    assert cli.main(["models", "activate", "water_flow", "missing", "--model-dir", root]) == 1
    assert "no version" in capsys.readouterr().err
    rc = cli.main(
        [
            "evaluate",
            "--kind",
            "water_flow",
            "--sim-seeds",
            "8",
            "--sensors",
            "4",
            "--model-dir",
            root,
            "--report",
            str(tmp_path / "report"),
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_version"] == version
    assert (tmp_path / "report" / "report.md").read_text().count("![") == 1
    assert (tmp_path / "report" / "run1.png").stat().st_size > 1000


def test_feature_subsets() -> None:
    names = core.FeatureStore(window=5, fields=["energy_kwh"]).feature_names
    free = [names[i] for i in feature_subset(names, "scale_free")]
    assert free == ["energy_kwh_zscore", "count", "dt_s", "hour", "dow", "weekend", "night"]
    with pytest.raises(ValueError, match="feature set"):
        feature_subset(names, "some")
    # the day-over-day deviation is water_flow's alone: the other kinds' models do not read it
    flow = core.FeatureStore(window=5, fields=["flow_rate_lps"]).feature_names
    day = ["flow_rate_lps_day_dev", "flow_rate_lps_day_dev_1h", "flow_rate_lps_day_dev_3h"]
    assert set(day) <= set(flow)
    for kind, expect in (("water_flow", day), ("energy", []), (None, [])):
        picked = [flow[i] for i in feature_subset(flow, "all", kind)]
        assert [n for n in picked if "_day_dev" in n] == expect
        assert len(picked) == len(flow) - len(day) + len(expect)


def test_trainer_rejects_unknown_kind_and_missing_incidents() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        Trainer(tiny_config("gas"), [], [])
    calm = sim.simulate(
        "water_flow", seed=1, n_sensors=2, days=1, leaks_per_sensor_week=0, bursts_per_sensor_week=0
    )
    with pytest.raises(ValueError, match="no leak, burst events"):
        Trainer(tiny_config("water_flow"), [calm], [calm]).run()


# --- real data adapters, on small files in the real formats -------------------------------------


def test_gecco_adapter(tmp_path: Path) -> None:
    f = tmp_path / "gecco2018_water_quality" / "gecco2018_water_quality_x.csv"
    f.parent.mkdir()
    rows = ['"","Time","Tp","Cl","pH","Redox","Leit","Trueb","Cl_2","Fm","Fm_2","EVENT"']
    for i in range(10):
        ev = "TRUE" if 4 <= i < 7 else "FALSE"
        rows.append(f'"{i + 1}",2016-08-03 12:{i:02d}:00,6.5,0.17,8.3{i},749,211,0.011,0.118,1677,695,{ev}')
    rows.append('"11",2016-08-03 12:10:00,,,,,,,,,,FALSE')  # a dropout row
    f.write_text("\n".join(rows) + "\n")
    name, d = datasets.load(f.parent)
    assert name == "gecco2018_water_quality"
    assert d.kind == "water_quality"
    assert len(d) == 10  # the all-empty row is dropped
    assert d.fields["ph"][3] == 8.33
    # CEST is UTC+2 in August
    assert d.timestamp_ns[0] == 1470218400 * 10**9
    assert len(d.events) == 1
    assert d.events[0].start_ns == d.timestamp_ns[4]
    assert d.label.sum() == 3


def test_lead_adapter_and_time_split(tmp_path: Path) -> None:
    f = tmp_path / "lead1_building_electricity.csv"
    lines = ["building_id,timestamp,meter_reading,anomaly"]
    for b in (1, 2):
        for h in range(48):
            lines.append(f"{b},2016-01-0{1 + h // 24} {h % 24:02d}:00:00,{100 + h},{int(20 <= h < 23)}")
    f.write_text("\n".join(lines) + "\n")
    _, d = datasets.load(f)
    assert d.kind == "energy"
    assert len(d.sensors) == 2
    assert len(d.events) == 2
    parts = datasets.split_by_time(d, (0.5, 0.5))
    assert sum(len(p) for p in parts) == len(d)
    assert all(e.start_ns < e.end_ns for p in parts for e in p.events)


def test_unknown_dataset_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "mystery.csv").write_text("a,b\n1,2\n")
    with pytest.raises(datasets.DatasetError, match="cannot tell"):
        datasets.load(tmp_path / "mystery.csv")


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="the real data sets (../shared/data) are not beside this clone"
)
@pytest.mark.parametrize(
    ("folder", "kind", "events"),
    [
        ("gecco2018_water_quality", "water_quality", 29),
        ("battledim2019_ltown", "water_flow", 30),
        ("lead1_building_electricity", "energy", 49),
        ("nab_realknowncause_traffic", "energy", 23),
    ],
)
def test_real_data_sets_load(folder: str, kind: str, events: int) -> None:
    name, d = datasets.load(SHARED / folder)
    assert name == folder
    assert d.kind == kind
    assert len(d.events) == events
    assert np.all(np.diff(d.timestamp_ns) >= 0)


def test_pipeline_picks_up_an_activated_version_without_losing_state(registry: ModelRegistry) -> None:
    pipe = core.Pipeline(window=20)
    watcher = ActiveModels(registry)
    assert watcher.refresh(pipe)
    assert not watcher.refresh(pipe)  # nothing changed
    data = sim.simulate("water_quality", seed=9, n_sensors=3, days=1)
    payloads, topics = sim.payloads(data)
    pipe.process(payloads[:200], topics[:200])
    sensors, snapshot = len(pipe), pipe.snapshot()
    if len(registry.versions("water_quality")) < 2:
        train(tiny_config("water_quality", random_state=2), registry, activate=False)
    versions = [v.version for v in registry.versions("water_quality")]
    other = next(v for v in versions if v != registry.active_version("water_quality"))
    before = registry.active_version("water_quality")
    registry.activate("water_quality", other)
    try:
        assert watcher.refresh(pipe)
        assert pipe.models["water_quality"]["version"] == other
        assert len(pipe) == sensors
        assert pipe.snapshot() == snapshot  # the rolling state is untouched by the swap
        out = pipe.process(payloads[200:260], topics[200:260])
        assert f'model_version="{other}"'.encode() in out.line_protocol
    finally:
        registry.activate("water_quality", before)  # type: ignore[arg-type]
