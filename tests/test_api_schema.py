"""schemathesis against the app's OpenAPI schema: generated requests (as an admin) never get a
5xx, and every response conforms to the schema (status documented, body valid, content type).

Bounded: a few examples per operation, no shrinking deadline; the app runs on a temporary SQLite
with InfluxDB on a closed port (reads answer 503, which the schema documents) — the real-database
behaviour is tested in test_api_reads/test_api_ingest."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.utils.api import ApiHarness, api_settings

_tmp = Path(tempfile.mkdtemp(prefix="infrawatch-schema-"))
_api = ApiHarness(api_settings(_tmp))
_api.add_user("admin", "admin")
ADMIN = _api.bearer("admin")
# the schema as the app serves it; requests go through httpx's ASGI transport (below) rather than
# schemathesis' requests-based one, which breaks when urllib3-future (grafana-client's niquests)
# replaces urllib3 in the same environment
schema = schemathesis.openapi.from_dict(_api.get("/openapi.json").json())
# valid and invalid requests; the admin's bearer token stands for the security schemes
schema.config.generation.update(
    with_security_parameters=False, modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _api.close()
    shutil.rmtree(_tmp, ignore_errors=True)


def send(case: schemathesis.Case, auth: dict[str, str]) -> httpx.Response:
    kw = case.as_transport_kwargs(base_url="http://testserver", headers=auth)
    # the admin's bearer token only: a generated X-API-Key would make every case a 401
    headers = {k: v for k, v in kw["headers"].items() if k.lower() != "x-api-key"}
    req: dict[str, Any] = {"headers": headers, "params": kw.get("params")}
    if kw.get("cookies"):
        req["cookies"] = kw["cookies"]
    if "json" in kw:
        req["json"] = kw["json"]
    if "data" in kw:
        req["content" if isinstance(kw["data"], bytes | str) else "data"] = kw["data"]
    return _api.request(kw["method"], kw["url"], **req)


@schema.parametrize()
@hypothesis.settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    # logout ends the session it is called with: give it one of its own
    auth = _api.bearer("admin") if case.path == "/api/v1/auth/logout" else ADMIN
    case.validate_response(send(case, auth), checks=CHECKS, headers=auth)
