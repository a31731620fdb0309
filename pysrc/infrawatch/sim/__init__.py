"""`infrawatch.sim`: deterministic, vectorised fleets of simulated sensors with labelled incidents.

Shared by training, tests and the live demo. Every function is deterministic from its seed.

    >>> from infrawatch import sim
    >>> data = sim.simulate("water_flow", seed=1, n_sensors=10, days=3)
    >>> payloads, topics = sim.payloads(data)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infrawatch.sim import energy, water_flow, water_quality
from infrawatch.sim._common import Event, Grid, Sensor, SimData, concat
from infrawatch.sim.payloads import gateway_batches, payloads, rfc3339, topic

KINDS = ("water_flow", "water_quality", "energy")
_SIMULATORS: dict[str, Callable[..., SimData]] = {
    "water_flow": water_flow.simulate,
    "water_quality": water_quality.simulate,
    "energy": energy.simulate,
}
LABELS = {
    "water_flow": water_flow.LABELS,
    "water_quality": water_quality.LABELS,
    "energy": energy.LABELS,
}


def simulate(kind: str, seed: int, **kwargs: Any) -> SimData:
    """Simulate one kind's fleet; see the kind's module for its parameters and defaults."""
    try:
        fn = _SIMULATORS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}") from None
    return fn(seed, **kwargs)


__all__ = [
    "KINDS",
    "LABELS",
    "Event",
    "Grid",
    "Sensor",
    "SimData",
    "concat",
    "gateway_batches",
    "payloads",
    "rfc3339",
    "simulate",
    "topic",
]
