"""Network metrics (the network-analytics design): flow, volume, pressure band, consumption."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from infrawatch.api import reads
from infrawatch.api.deps import Permit, State
from infrawatch.api.routers.readings import time_range

router = APIRouter(prefix="/network", tags=["network"], dependencies=[Depends(Permit("network:read"))])


@router.get("/metrics")
def metrics(
    state: State, site: str | None = None, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> dict[str, Any]:
    """Total flow now (sum of each flow sensor's latest), volume (integral of flow), the pressure
    band (min, 5th/95th percentile, mean, max) and water m³ / energy kWh by site and hour."""
    t0, t1 = time_range(start, end, dt.timedelta(days=1))
    if t1 - t0 > dt.timedelta(days=31):
        raise HTTPException(422, "at most 31 days per request")
    try:
        return reads.network_metrics(state.reader, t0, t1, site=site)
    except reads.QueryError as e:
        raise HTTPException(422, str(e)) from e
