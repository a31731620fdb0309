"""The InfluxDB schema and users, applied idempotently (`infrawatch influx init`), and queries.

The schema lives as InfluxQL files in `influx/schema/` (placeholders in braces from the `influx`
settings); this module renders and runs them in file order, creating the admin first and the role
users with their passwords. Running it again changes nothing — or applies changed durations and
rollup intervals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from infrawatch.config import Settings
from infrawatch.errors import UserError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "influx" / "schema"
ROLES = ("writer", "grafana", "api")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DURATION = re.compile(r"^(\d+(ns|u|µ|ms|s|m|h|d|w))+$|^INF$")


class InfluxError(UserError):
    """InfluxDB refused a statement or cannot be reached; the message says what to do."""


def _ident(name: str, what: str) -> str:
    if not _IDENT.match(name):
        raise InfluxError(f"{what} {name!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def _duration(text: str, what: str) -> str:
    if not _DURATION.match(text):
        raise InfluxError(f"{what} {text!r} is not an InfluxQL duration (e.g. 7d, 90d, 260w, 30s)")
    return text


def quote_string(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _times(interval: str, k: int) -> str:
    m = re.fullmatch(r"(\d+)([a-zµ]+)", interval)
    if m is None:
        raise InfluxError(f"rollup interval {interval!r}: use one number and unit, e.g. 1m, 1h, 2s")
    return f"{k * int(m.group(1))}{m.group(2)}"


def schema_statements(settings: Settings, *, fine: str = "1m", coarse: str = "1h") -> list[str]:
    """The statements of `influx/schema/*.influxql` in order, placeholders filled."""
    s = settings.influx
    values = {
        "database": _ident(s.database, "database"),
        "raw_duration": _duration(s.raw_duration, "raw_duration"),
        "rollup_1m_duration": _duration(s.rollup_1m_duration, "rollup_1m_duration"),
        "rollup_1h_duration": _duration(s.rollup_1h_duration, "rollup_1h_duration"),
        "fine": _duration(fine, "fine rollup interval"),
        # how late a reading may arrive and still be rolled up: a spool drained within five
        # minutes, a gateway catching up (later data: `infrawatch influx backfill`)
        "fine_for": _times(fine, 5),
        "coarse": _duration(coarse, "coarse rollup interval"),
        "coarse_for": _times(coarse, 2),
        **{f"{r}_user": _ident(getattr(s, f"{r}_user"), f"{r}_user") for r in ROLES},
    }
    out: list[str] = []
    for path in sorted(SCHEMA_DIR.glob("*.influxql")):
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
        out += [st.strip().format(**values) for st in text.split(";") if st.strip()]
    return out


class InfluxClient:
    """A small synchronous client of the v1 HTTP API (admin tasks, tests, the read side)."""

    def __init__(self, settings: Settings, role: str = "admin") -> None:
        self.settings = settings
        user = getattr(settings.influx, f"{role}_user")
        self._http = httpx.Client(
            base_url=settings.influx.url,
            auth=(user, settings.influx.password(role)),
            timeout=settings.influx.timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def raw_query(
        self,
        q: str,
        params: Mapping[str, Any] | None = None,
        *,
        db: str | None = None,
        epoch: str = "ns",
        method: str = "POST",
    ) -> list[dict[str, Any]]:
        """Run InfluxQL; returns the per-statement results. Values in `params` are bound ($name)."""
        data: dict[str, str] = {"q": q, "epoch": epoch}
        if db is not None:
            data["db"] = db
        if params:
            data["params"] = json.dumps(dict(params))
        try:
            if method == "GET":
                r = self._http.get("/query", params=data)
            else:
                r = self._http.post("/query", data=data)
        except httpx.HTTPError as e:
            raise InfluxError(f"InfluxDB at {self.settings.influx.url} unreachable: {e}") from e
        if r.status_code == 401:
            raise InfluxError(
                f"InfluxDB refused the credentials ({r.json().get('error', r.text)}): "
                "check INFRAWATCH_INFLUX__*_USER / *_PASSWORD(_FILE), or run `infrawatch influx init`"
            )
        body = r.json() if r.content else {}
        if r.status_code >= 400 or "error" in body:
            raise InfluxError(f"InfluxDB error for {q[:120]!r}: {body.get('error', r.text)}")
        results: list[dict[str, Any]] = body.get("results", [])
        for res in results:
            if "error" in res:
                raise InfluxError(f"InfluxDB error for {q[:120]!r}: {res['error']}")
        return results

    def query(
        self, q: str, params: Mapping[str, Any] | None = None, *, epoch: str = "ns"
    ) -> list[dict[str, Any]]:
        """The series of the first statement, on the configured database."""
        res = self.raw_query(q, params, db=self.settings.influx.database, epoch=epoch, method="GET")
        series: list[dict[str, Any]] = res[0].get("series", []) if res else []
        return series

    def rows(self, q: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of every series of the first statement as dicts (tags merged in)."""
        out: list[dict[str, Any]] = []
        for s in self.query(q, params):
            tags = s.get("tags") or {}
            for v in s["values"]:
                out.append({**tags, **dict(zip(s["columns"], v, strict=True))})
        return out

    def write(self, lines: bytes, *, rp: str = "raw", precision: str = "ns") -> None:
        r = self._http.post(
            "/write",
            params={"db": self.settings.influx.database, "rp": rp, "precision": precision},
            content=lines,
        )
        if r.status_code != 204:
            raise InfluxError(f"write refused ({r.status_code}): {r.text}")


def _admin_exists(settings: Settings) -> bool:
    """Whether the admin credentials work (False: the server has no users yet)."""
    r = httpx.post(
        f"{settings.influx.url}/query",
        data={"q": "SHOW USERS"},
        auth=(settings.influx.admin_user, settings.influx.password("admin")),
        timeout=settings.influx.timeout_s,
    )
    if r.status_code == 200:
        return True
    # An auth-enabled 1.x server with no users answers 401 "...create admin user first..." to all
    # but CREATE USER ... WITH ALL PRIVILEGES; with users but a wrong password, plain 401.
    if r.status_code in (401, 403) and "create admin user first" in r.text:
        return False
    raise InfluxError(
        f"InfluxDB refused the admin user {settings.influx.admin_user!r} ({r.status_code} {r.text.strip()}): "
        "check INFRAWATCH_INFLUX__ADMIN_PASSWORD(_FILE)"
    )


def init(settings: Settings, *, fine: str = "1m", coarse: str = "1h") -> list[str]:
    """Apply the schema and users; returns what was done, one line per step. Idempotent."""
    s = settings.influx
    done: list[str] = []
    admin = _ident(s.admin_user, "admin_user")
    if not _admin_exists(settings):
        pw = quote_string(s.password("admin"))
        r = httpx.post(
            f"{s.url}/query",
            data={"q": f"CREATE USER {admin} WITH PASSWORD {pw} WITH ALL PRIVILEGES"},
            timeout=s.timeout_s,
        )
        if r.status_code != 200 or "error" in r.text:
            raise InfluxError(f"cannot create the admin user: {r.text}")
        done.append(f"created admin user {admin}")
    with InfluxClient(settings) as c:
        users = {
            row[0] for series in c.raw_query("SHOW USERS")[0].get("series", []) for row in series["values"]
        }
        for role in ROLES:
            user = _ident(getattr(s, f"{role}_user"), f"{role}_user")
            pw = quote_string(s.password(role))
            if user in users:
                c.raw_query(f"SET PASSWORD FOR {user} = {pw}")
            else:
                c.raw_query(f"CREATE USER {user} WITH PASSWORD {pw}")
                done.append(f"created user {user} ({role})")
        existing = {
            row[0]
            for series in c.raw_query("SHOW CONTINUOUS QUERIES")[0].get("series", [])
            if series.get("name") == s.database
            for row in series.get("values", [])
        }
        c.raw_query(f"CREATE DATABASE {_ident(s.database, 'database')}")
        rps = {
            row[0]
            for series in c.raw_query(f"SHOW RETENTION POLICIES ON {s.database}")[0].get("series", [])
            for row in series.get("values", [])
        }
        for st in schema_statements(settings, fine=fine, coarse=coarse):
            rp = re.match(r'CREATE RETENTION POLICY "([^"]+)"', st)
            if rp and rp.group(1) in rps:
                continue  # its ALTER (next statement) applies a changed duration
            m = re.match(r'CREATE CONTINUOUS QUERY "([^"]+)"', st)
            if m and m.group(1) in existing:
                c.raw_query(f'DROP CONTINUOUS QUERY "{m.group(1)}" ON {s.database}')
            c.raw_query(st)
        done.append(f"applied {len(schema_statements(settings, fine=fine, coarse=coarse))} schema statements")
    return done


def backfill(settings: Settings, start_ns: int, end_ns: int, *, fine: str = "1m", coarse: str = "1h") -> int:
    """Recompute the rollups over [start, end) — after an outage longer than the queries' RESAMPLE
    FOR window (readings drained from a spool that late are in `raw` but not yet rolled up).
    Runs each continuous query's SELECT … INTO bounded by time; returns the statements run."""
    n = 0
    with InfluxClient(settings) as c:
        for st in schema_statements(settings, fine=fine, coarse=coarse):
            m = re.match(r"CREATE CONTINUOUS QUERY .*? BEGIN (SELECT .*) GROUP BY (.*) END$", st, re.S)
            if m is None:
                continue
            select, group = m.groups()
            c.raw_query(
                f"{select} WHERE time >= {int(start_ns)} AND time < {int(end_ns)} GROUP BY {group}",
                db=settings.influx.database,
            )
            n += 1
    return n
