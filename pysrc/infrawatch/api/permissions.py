"""The one permission table: permission → who holds it (roles, and API-key scopes as `key:SCOPE`).

Every route declares exactly one permission through `deps.permit(...)`; the RBAC test walks the
app's route table and checks each route against this table for every role, scope and anonymous
caller, so a route without a permission, or a permission not listed here, fails CI.
"""

from __future__ import annotations

from typing import Final

ROLES: Final = ("admin", "scientist", "operator", "viewer")
SCOPES: Final = ("read", "ingest")

# Callers without any credential may use these; `webhook` checks Grafana's bearer token instead.
PUBLIC: Final = "public"
WEBHOOK: Final = "webhook"

_ALL_ROLES = frozenset(ROLES)
_READERS = _ALL_ROLES | {"key:read"}

PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    PUBLIC: frozenset({"*"}),
    WEBHOOK: frozenset(),  # only the Grafana webhook token (INFRAWATCH_API__WEBHOOK_TOKEN)
    "auth:me": _ALL_ROLES | {"key:read", "key:ingest"},
    "auth:logout": _ALL_ROLES,
    "users:manage": frozenset({"admin"}),
    "apikeys:manage": frozenset({"admin"}),
    "registry:read": _READERS,
    "registry:write": frozenset({"admin"}),
    "readings:read": _READERS,
    "network:read": _READERS,
    "ingest:write": frozenset({"admin", "key:ingest"}),
    "alerts:read": _READERS,
    "alerts:ack": frozenset({"admin", "operator"}),
    "reports:read": frozenset({"admin", "scientist", "operator", "viewer", "key:read"}),
    "models:read": frozenset({"admin", "scientist"}),
    "models:activate": frozenset({"admin", "scientist"}),
    "status:read": _READERS,
}

# Routes Starlette/FastAPI add themselves (the schema and its viewers): public by design.
PUBLIC_PATHS: Final = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def holders(role: str | None, scopes: frozenset[str]) -> frozenset[str]:
    """The grantee names a caller answers to: its role, or `key:SCOPE` for each API-key scope."""
    return frozenset({role} if role else set()) | {f"key:{s}" for s in scopes}


def allowed(permission: str, role: str | None, scopes: frozenset[str]) -> bool:
    granted = PERMISSIONS[permission]
    return "*" in granted or bool(granted & holders(role, scopes))


def markdown_table() -> str:
    """The table as the README shows it (kept in step by a test)."""
    who = [*ROLES, *(f"key:{s}" for s in SCOPES)]
    lines = [
        "| permission | " + " | ".join(who) + " |",
        "| --- | " + " | ".join("---" for _ in who) + " |",
    ]
    for perm, granted in PERMISSIONS.items():
        if perm in (PUBLIC, WEBHOOK):
            continue
        lines.append(f"| `{perm}` | " + " | ".join("✓" if w in granted else "" for w in who) + " |")
    return "\n".join(lines)
