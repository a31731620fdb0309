"""The daily report as PDF: matplotlib figures (object API, no pyplot state: requests run in threads)."""

from __future__ import annotations

import io
from typing import Any

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

_RISK_COLOURS = ["#2e7d32", "#f9a825", "#ef6c00", "#c62828"]
_A4 = (8.27, 11.69)


def _summary_page(report: dict[str, Any]) -> Figure:
    fig = Figure(figsize=_A4)
    fig.text(0.08, 0.95, f"infrawatch daily report — {report['site']}", fontsize=16, weight="bold")
    fig.text(0.08, 0.92, f"{report['date']} (UTC), data tier {report['tier']}", fontsize=10)
    lines = [
        f"sensors reporting: {report['sensors']}",
        f"readings stored: {report['readings']}",
        f"alerts raised (risk HIGH/CRITICAL): {report['alerts']}",
        *(f"  {k}: {v['sensors']} sensors, {v['readings']} readings" for k, v in report["by_kind"].items()),
    ]
    for i, line in enumerate(lines):
        fig.text(0.08, 0.87 - 0.025 * i, line, fontsize=11)
    ax = fig.add_axes((0.12, 0.1, 0.8, 0.45))
    zones = report["risk_by_zone"]
    if zones:
        names = [z["zone"] for z in zones]
        maxes = [z["max_risk"] or 0 for z in zones]
        means = [z["mean_risk"] or 0 for z in zones]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], means, width=0.4, label="mean risk", color="#1565c0")
        ax.bar(
            [i + 0.2 for i in x],
            maxes,
            width=0.4,
            label="max risk",
            color=[_RISK_COLOURS[min(3, int(m))] for m in maxes],
        )
        ax.set_xticks(list(x), names)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no readings this day", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0, 3.2)
    ax.set_ylabel("risk (0 LOW … 3 CRITICAL)")
    ax.set_title("Risk by zone")
    return fig


def _readings_page(report: dict[str, Any]) -> Figure:
    fig = Figure(figsize=_A4)
    kinds = list(report["hourly"].items()) or [("no data", [])]
    axes = fig.subplots(len(kinds), 1, squeeze=False)[:, 0]
    for ax, (kind, rows) in zip(axes, kinds, strict=True):
        ax.set_title(f"{kind}: hourly readings, alerts marked")
        if not rows:
            ax.text(0.5, 0.5, "no readings", ha="center", va="center", transform=ax.transAxes)
            continue
        hours = [int(r["time"][11:13]) for r in rows]
        for key in (k for k in rows[0] if k not in ("time", "max_risk")):
            ax.plot(hours, [r.get(key) for r in rows], marker="o", label=key)
        # this kind's alerts, as dashed lines at their hour
        alert_hours = {int(a["time"][11:13]) for a in report["top_incidents"] if a.get("kind") == kind}
        for h in alert_hours:
            ax.axvline(h, color="#c62828", alpha=0.5, linestyle="--")
        ax.set_xlim(0, 23)
        ax.set_xlabel("hour (UTC)")
        ax.legend(fontsize=8)
    fig.subplots_adjust(hspace=0.5)
    return fig


def _incidents_page(report: dict[str, Any]) -> Figure:
    fig = Figure(figsize=_A4)
    fig.text(0.08, 0.95, "Top incidents", fontsize=14, weight="bold")
    ax = fig.add_axes((0.05, 0.1, 0.9, 0.8))
    ax.axis("off")
    rows = [
        [
            a["time"][11:19],
            a["sensor_id"] or "",
            a["zone"] or "",
            a["severity"] or "",
            a["alert_type"] or "",
            f"{a['risk'] or 0:g}",
        ]
        for a in report["top_incidents"]
    ]
    if rows:
        table = ax.table(
            cellText=rows,
            colLabels=["time", "sensor", "zone", "severity", "type", "risk"],
            loc="upper center",
        )
        table.scale(1, 1.6)
    else:
        ax.text(0.5, 0.9, "no incidents this day", ha="center", transform=ax.transAxes, fontsize=12)
    return fig


def render(report: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": f"infrawatch {report['site']} {report['date']}"}) as pdf:
        for page in (_summary_page, _readings_page, _incidents_page):
            pdf.savefig(page(report))
    return buf.getvalue()
