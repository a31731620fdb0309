"""Evaluation reports: one Markdown file with every figure, and PNG charts of the series.

Each chart shows a sensor's main signal over time with its labelled events shaded and the
alerting readings marked, so a reader sees at a glance what was caught, late, or missed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt
import numpy as np

from infrawatch import sim
from infrawatch.detection.evaluation import Scored

MAIN_FIELD = {
    "water_flow": "flow_rate_lps",
    "water_quality": "turbidity_ntu",
    "energy": "energy_kwh",
}


def _fmt(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _table(runs: Sequence[tuple[Scored, str]]) -> str:
    head = (
        "| data | events | caught | alert runs | false alarms | event P | event R | event F1 "
        "| FP share | point P | point R | point F1 | delay median (s) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r, _ in runs:
        e, p = r.scores.event, r.scores.point
        rows.append(
            f"| {r.name} | {e.events} | {e.caught} | {e.alert_runs} | {e.false_alarms} | {_fmt(e.precision)} "
            f"| {_fmt(e.recall)} | {_fmt(e.f1)} | {_fmt(e.false_positive_share)} | {_fmt(p.precision)} "
            f"| {_fmt(p.recall)} | {_fmt(p.f1)} | {_fmt(e.delay_median_s)} |"
        )
    return head + "\n".join(rows) + "\n"


def chart(run: Scored, data: sim.SimData, path: Path, max_sensors: int = 4) -> Path:
    """Main signal of up to `max_sensors` sensors (those with events first), events and alerts."""
    field = MAIN_FIELD.get(data.kind, next(iter(data.fields)))
    if field not in data.fields:
        field = next(iter(data.fields))
    with_events = list(dict.fromkeys(e.sensor_id for e in run.events))
    others = [s.sensor_id for s in data.sensors if s.sensor_id not in with_events]
    chosen = (with_events + others)[:max_sensors]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(12, 2.6 * len(chosen)), squeeze=False)
    sid = data.sensor_id
    for ax, s in zip(axes[:, 0], chosen, strict=True):
        m = sid == s
        t = data.timestamp_ns[m].astype("datetime64[ns]")
        ax.plot(t, data.fields[field][m], lw=0.6, color="#1f5fa8")
        for e in run.events:
            if e.sensor_id == s:
                ax.axvspan(
                    np.datetime64(e.start_ns, "ns"),
                    np.datetime64(e.end_ns, "ns"),
                    color="#f4a261",
                    alpha=0.35,
                )
        alert = m & (run.risk >= 2)
        ax.scatter(
            data.timestamp_ns[alert].astype("datetime64[ns]"),
            data.fields[field][alert],
            s=6,
            color="#c1121f",
            zorder=3,
        )
        ax.set_title(f"{s} — {field} (events shaded, alerts in red)", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write(
    out_dir: Path,
    title: str,
    runs: Sequence[tuple[Scored, sim.SimData]],
    notes: Sequence[str] = (),
) -> Path:
    """`report.md` plus one PNG per run into `out_dir`; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# {title}",
        "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}. An alert is a reading whose verdict is "
        "HIGH or CRITICAL. Event rules: see `infrawatch.detection.metrics`.",
        "",
        *notes,
        "",
        _table([(r, "") for r, _ in runs]),
    ]
    for i, (r, d) in enumerate(runs):
        png = chart(r, d, out_dir / f"run{i + 1}.png")
        per_type = ", ".join(f"{k}: {v:.2f}" for k, v in r.scores.event.per_type_recall.items())
        lines += [
            f"## {r.name}",
            "",
            f"Recall per event type: {per_type or '—'}",
            "",
            f"![{r.name}]({png.name})",
            "",
        ]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines))
    return md
