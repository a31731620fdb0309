"""Detection metrics: event-wise (what ops staff feel) and point-wise (what a classifier sees).

Event-wise rules, stated once and used by training, evaluation and the report:

- An *alert run* is a maximal sequence of one sensor's consecutive readings that alert, where gaps
  shorter than `merge_gap_ns` between alerting readings do not split the run (a flapping alert is
  one page, not ten).
- An event is *caught* when at least one alerting reading of its sensor falls in
  [start, max(end, start + tolerance)). Its *detection delay* is the first such reading's time
  minus the start.
- An alert run is *true* when it overlaps some event of its sensor, widened the same way; otherwise
  it is one *false alarm*, however long it lasts.
- precision = true runs / all runs; recall = caught events / events; F1 their harmonic mean;
  false-positive share = false alarms / all runs (= 1 − precision).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

NS = 1_000_000_000


@dataclass(frozen=True)
class Span:
    sensor_id: str
    start_ns: int
    end_ns: int
    type: str = ""


@dataclass
class EventScores:
    events: int
    caught: int
    alert_runs: int
    true_runs: int
    false_alarms: int
    precision: float
    recall: float
    f1: float
    false_positive_share: float
    delay_median_s: float
    delay_p90_s: float
    per_type_recall: dict[str, float] = field(default_factory=dict)


@dataclass
class PointScores:
    positives: int
    predicted: int
    true_positives: int
    precision: float
    recall: float
    f1: float


@dataclass
class Scores:
    event: EventScores
    point: PointScores

    def as_dict(self) -> dict[str, object]:
        return {"event": asdict(self.event), "point": asdict(self.point)}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _f1(p: float, r: float) -> float:
    if not (p + r > 0):
        return 0.0 if p == p and r == r else float("nan")  # noqa: PLR0124 (NaN check)
    return 2 * p * r / (p + r)


def point_scores(truth: np.ndarray, alert: np.ndarray) -> PointScores:
    truth = np.asarray(truth, bool)
    alert = np.asarray(alert, bool)
    tp = int((truth & alert).sum())
    p = _ratio(tp, int(alert.sum()))
    r = _ratio(tp, int(truth.sum()))
    return PointScores(int(truth.sum()), int(alert.sum()), tp, p, r, _f1(p, r))


def alert_runs(
    sensor_id: Sequence[str] | np.ndarray,
    timestamp_ns: np.ndarray,
    alert: np.ndarray,
    merge_gap_ns: int,
) -> list[Span]:
    """Alert runs per sensor (see the module doc), as spans [first alert, last alert + 1 ns)."""
    by_sensor: dict[str, list[int]] = defaultdict(list)
    alert = np.asarray(alert, bool)
    sid = np.asarray(sensor_id, dtype=object)
    ts = np.asarray(timestamp_ns, np.int64)
    for i in np.flatnonzero(alert):
        by_sensor[str(sid[i])].append(int(ts[i]))
    runs = []
    for s, times in by_sensor.items():
        times.sort()
        start = prev = times[0]
        for t in times[1:]:
            if t - prev > merge_gap_ns:
                runs.append(Span(s, start, prev + 1))
                start = t
            prev = t
        runs.append(Span(s, start, prev + 1))
    return runs


def event_scores(
    events: Iterable[Span],
    sensor_id: Sequence[str] | np.ndarray,
    timestamp_ns: np.ndarray,
    alert: np.ndarray,
    *,
    tolerance_ns: int,
    merge_gap_ns: int,
) -> EventScores:
    events = list(events)
    runs = alert_runs(sensor_id, timestamp_ns, alert, merge_gap_ns)
    alert_times: dict[str, np.ndarray] = defaultdict(lambda: np.empty(0, np.int64))
    sid = np.asarray(sensor_id, dtype=object)
    ts = np.asarray(timestamp_ns, np.int64)
    mask = np.asarray(alert, bool)
    for s in set(sid[mask].tolist()):
        alert_times[s] = np.sort(ts[mask & (sid == s)])
    windows: dict[str, list[tuple[int, int]]] = defaultdict(list)
    delays: list[float] = []
    caught = 0
    per_type: dict[str, list[bool]] = defaultdict(list)
    for e in events:
        hi = max(e.end_ns, e.start_ns + tolerance_ns)
        windows[e.sensor_id].append((e.start_ns, hi))
        times = alert_times[e.sensor_id]
        k = int(np.searchsorted(times, e.start_ns))
        hit = k < len(times) and times[k] < hi
        per_type[e.type].append(bool(hit))
        if hit:
            caught += 1
            delays.append((int(times[k]) - e.start_ns) / NS)
    true_runs = sum(
        any(r.start_ns < hi and lo < r.end_ns for lo, hi in windows.get(r.sensor_id, ())) for r in runs
    )
    p = _ratio(true_runs, len(runs))
    r = _ratio(caught, len(events))
    return EventScores(
        events=len(events),
        caught=caught,
        alert_runs=len(runs),
        true_runs=true_runs,
        false_alarms=len(runs) - true_runs,
        precision=p,
        recall=r,
        f1=_f1(p, r),
        false_positive_share=_ratio(len(runs) - true_runs, len(runs)),
        delay_median_s=float(np.median(delays)) if delays else float("nan"),
        delay_p90_s=float(np.percentile(delays, 90)) if delays else float("nan"),
        per_type_recall={t: float(np.mean(v)) for t, v in sorted(per_type.items())},
    )


def scores(
    events: Iterable[Span],
    sensor_id: Sequence[str] | np.ndarray,
    timestamp_ns: np.ndarray,
    truth: np.ndarray,
    alert: np.ndarray,
    *,
    tolerance_ns: int,
    merge_gap_ns: int,
) -> Scores:
    return Scores(
        event_scores(
            events, sensor_id, timestamp_ns, alert, tolerance_ns=tolerance_ns, merge_gap_ns=merge_gap_ns
        ),
        point_scores(truth, alert),
    )
