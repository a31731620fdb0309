"""The FastAPI service (DESIGN.md §6): admin, RBAC, sensor registry, read API, HTTP ingest,
alerts, reports. `create_app(settings)` in `infrawatch.api.app` builds it; `infrawatch api` serves it."""
