"""Event-wise and point-wise detection metrics on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from infrawatch.detection.metrics import NS, Span, alert_runs, event_scores, point_scores

MIN = 60 * NS


def _series(sensor: str, n: int, step: int = MIN) -> tuple[np.ndarray, np.ndarray]:
    return np.array([sensor] * n, dtype=object), np.arange(n, dtype=np.int64) * step


def test_point_scores_by_hand() -> None:
    truth = np.array([0, 1, 1, 1, 0, 0], bool)
    alert = np.array([0, 0, 1, 1, 1, 0], bool)
    s = point_scores(truth, alert)
    assert (s.true_positives, s.positives, s.predicted) == (2, 3, 3)
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3)


def test_flapping_alerts_merge_into_one_run_and_gaps_split() -> None:
    sid, ts = _series("A", 20)
    alert = np.zeros(20, bool)
    alert[[2, 4, 5, 15]] = True  # 2..5 within a 3-minute gap → one run; 15 is another
    runs = alert_runs(sid, ts, alert, merge_gap_ns=3 * MIN)
    assert runs == [Span("A", 2 * MIN, 5 * MIN + 1), Span("A", 15 * MIN, 15 * MIN + 1)]


def test_event_caught_within_tolerance_and_false_alarm_counted_once() -> None:
    sid, ts = _series("A", 100)
    events = [Span("A", 10 * MIN, 12 * MIN, "burst"), Span("A", 50 * MIN, 60 * MIN, "leak")]
    alert = np.zeros(100, bool)
    alert[14] = True  # after the burst ended but within 5 min of its start → caught, delay 4 min
    alert[80:90] = True  # one long false alarm
    s = event_scores(events, sid, ts, alert, tolerance_ns=5 * MIN, merge_gap_ns=MIN)
    assert (s.events, s.caught) == (2, 1)
    assert (s.alert_runs, s.true_runs, s.false_alarms) == (2, 1, 1)
    assert s.precision == pytest.approx(0.5)
    assert s.recall == pytest.approx(0.5)
    assert s.false_positive_share == pytest.approx(0.5)
    assert s.delay_median_s == pytest.approx(240.0)
    assert s.per_type_recall == {"burst": 1.0, "leak": 0.0}


def test_alerts_on_another_sensor_do_not_catch_an_event() -> None:
    sa, ts = _series("A", 30)
    sb, _ = _series("B", 30)
    sid = np.concatenate([sa, sb])
    t = np.concatenate([ts, ts])
    alert = np.zeros(60, bool)
    alert[30 + 12] = True  # sensor B alerts while A has the event
    s = event_scores([Span("A", 10 * MIN, 20 * MIN)], sid, t, alert, tolerance_ns=0, merge_gap_ns=MIN)
    assert s.caught == 0
    assert s.false_alarms == 1


def test_alert_before_event_start_is_not_a_detection() -> None:
    sid, ts = _series("A", 30)
    alert = np.zeros(30, bool)
    alert[9] = True
    s = event_scores([Span("A", 10 * MIN, 20 * MIN)], sid, ts, alert, tolerance_ns=0, merge_gap_ns=0)
    assert s.caught == 0
    assert s.false_alarms == 1


def test_no_alerts_gives_nan_precision_and_zero_recall() -> None:
    sid, ts = _series("A", 10)
    s = event_scores([Span("A", 0, MIN)], sid, ts, np.zeros(10, bool), tolerance_ns=0, merge_gap_ns=0)
    assert np.isnan(s.precision)
    assert s.recall == 0.0
