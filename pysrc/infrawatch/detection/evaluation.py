"""Scoring detection end to end: payloads through the real `core.Pipeline`, alerts vs labelled events.

An *alert* is a reading whose verdict is HIGH or CRITICAL (risk ≥ 2) — exactly what the Grafana
rule pages on. The first 10% of each data set's time span (at least a day) is probationary, as in
NAB: history to learn from, not scored. Simulated fleets are scored from their MQTT payloads, so
decoding, features, the ensembles and the zone rules are all exercised; real data sets come in
through adapters (`infrawatch.detection.datasets`) as the same payloads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infrawatch import core, sim
from infrawatch.detection import metrics

Progress = Callable[[str], None]
HIGH = 2

# event-scoring rules per kind: tolerance after an event's start, gap that still merges alerts
EVENT_RULES = {
    "water_flow": {"tolerance_ns": 2 * 3600 * metrics.NS, "merge_gap_ns": 30 * 60 * metrics.NS},
    "water_quality": {"tolerance_ns": 2 * 3600 * metrics.NS, "merge_gap_ns": 60 * 60 * metrics.NS},
    "energy": {"tolerance_ns": 3 * 3600 * metrics.NS, "merge_gap_ns": 3 * 3600 * metrics.NS},
}


@dataclass
class Scored:
    """One data set run through the pipeline: what was alerted, and the figures."""

    name: str
    sensor_id: np.ndarray
    timestamp_ns: np.ndarray
    truth: np.ndarray
    risk: np.ndarray
    events: list[metrics.Span]
    scores: metrics.Scores

    @property
    def alert(self) -> np.ndarray:
        return self.risk >= HIGH


def run_pipeline(
    models: dict[str, Any],
    window: int,
    payloads: Sequence[bytes],
    topics: Sequence[str] | None,
    chunk: int = 5000,
) -> np.ndarray:
    """Risk per input message (−1: no verdict or rejected), through one `core.Pipeline`."""
    pipe = core.Pipeline(models=models, window=window)
    risk = np.full(len(payloads), -1, np.int8)
    for start in range(0, len(payloads), chunk):
        stop = min(start + chunk, len(payloads))
        out = pipe.process(
            payloads[start:stop], None if topics is None else topics[start:stop], received_ns=None
        )
        risk[start + np.asarray(out.source, np.int64)] = np.asarray(out.risk)
    return risk


def probation_end_ns(timestamp_ns: np.ndarray) -> int:
    """The end of a data set's probationary period, as in the Numenta Anomaly Benchmark: the first
    10% of the time span (at least one day) is history the features and time-of-day profiles learn
    from; alerts and events that start in it are not scored (the whole span if it is shorter)."""
    t0, t1 = int(timestamp_ns.min()), int(timestamp_ns.max())
    end = t0 + max((t1 - t0) // 10, 86_400 * metrics.NS)
    return t0 if end >= t1 else end


def score_run(
    name: str,
    kind: str,
    sensor_id: np.ndarray,
    timestamp_ns: np.ndarray,
    truth: np.ndarray,
    risk: np.ndarray,
    events: Iterable[metrics.Span],
) -> Scored:
    events = list(events)
    if len(timestamp_ns):
        probation_end = probation_end_ns(timestamp_ns)
        scored = timestamp_ns >= probation_end
        risk = np.where(scored, risk, -1)
        truth = truth & scored
        events = [e for e in events if e.start_ns >= probation_end]
    s = metrics.scores(events, sensor_id, timestamp_ns, truth, risk >= HIGH, **EVENT_RULES[kind])
    return Scored(name, sensor_id, timestamp_ns, truth, risk, events, s)


def evaluate_data(name: str, data: sim.SimData, models_entry: dict[str, Any], window: int) -> Scored:
    """Score labelled readings (simulated or a real data set) as MQTT payloads through the Pipeline."""
    payloads, topics = sim.payloads(data)
    risk = run_pipeline({data.kind: models_entry}, window, payloads, topics)
    spans = [metrics.Span(e.sensor_id, e.start_ns, e.end_ns, e.type) for e in data.events]
    return score_run(name, data.kind, data.sensor_id, data.timestamp_ns, data.label > 0, risk, spans)


def evaluate_simulated(
    kind: str,
    models_entry: dict[str, Any],
    seed: int,
    window: int,
    sim_kwargs: dict[str, Any],
) -> Scored:
    data = sim.simulate(kind, seed=seed, **sim_kwargs)
    return evaluate_data(f"sim seed {seed}", data, models_entry, window)


def pooled(runs: Sequence[Scored], kind: str) -> metrics.Scores:
    """Figures over several runs taken together (events and alert runs summed, not averaged)."""
    offsets = [f"{i}:" for i in range(len(runs))]
    sid = np.concatenate(
        [np.char.add(o, r.sensor_id.astype(str)) for o, r in zip(offsets, runs, strict=True)]
    )
    ev = [
        metrics.Span(o + e.sensor_id, e.start_ns, e.end_ns, e.type)
        for o, r in zip(offsets, runs, strict=True)
        for e in r.events
    ]
    return metrics.scores(
        ev,
        sid,
        np.concatenate([r.timestamp_ns for r in runs]),
        np.concatenate([r.truth for r in runs]),
        np.concatenate([r.alert for r in runs]),
        **EVENT_RULES[kind],
    )


def evaluate_sim(
    kind: str,
    models_entry: dict[str, Any],
    seeds: Sequence[int],
    window: int,
    sim_kwargs: dict[str, Any],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Figures per unseen seed and pooled, as stored in the registry's `model.json`."""
    runs = []
    for seed in seeds:
        r = evaluate_simulated(kind, models_entry, seed, window, sim_kwargs)
        runs.append(r)
        if progress:
            e = r.scores.event
            progress(f"test seed {seed}: event P {e.precision:.3f} R {e.recall:.3f} F1 {e.f1:.3f}")
    return {
        "seeds": list(seeds),
        "per_seed": {str(s): r.scores.as_dict() for s, r in zip(seeds, runs, strict=True)},
        "pooled": pooled(runs, kind).as_dict(),
    }
