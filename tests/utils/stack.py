"""Real InfluxDB and Mosquitto for a test: free loopback ports, a temporary run directory.

`start_stack(tmp)` starts both servers, applies the schema (short rollup intervals, so a test can
watch the continuous queries work), creates the worker's broker user, and returns a `Stack`;
`stack.close()` stops both. The `stack` fixture in conftest.py wraps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrawatch.config import Settings
from infrawatch.ingest import broker_admin, influx_admin
from infrawatch.ingest.secrets import local_settings
from infrawatch.ingest.servers import BrokerServer, InfluxServer

# Rollup intervals of the test schema (production: 1m and 1h).
FINE = "2s"
COARSE = "4s"


@dataclass
class Stack:
    settings: Settings
    influx: InfluxServer
    broker: BrokerServer
    _clients: list[influx_admin.InfluxClient] = field(default_factory=list)

    def client(self, role: str = "admin") -> influx_admin.InfluxClient:
        c = influx_admin.InfluxClient(self.settings, role)
        self._clients.append(c)
        return c

    def rows(self, q: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of every series of InfluxQL `q` (as admin), tags merged in."""
        with influx_admin.InfluxClient(self.settings) as c:
            return c.rows(q, params)

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.broker.stop()
        self.influx.stop()


def start_stack(run_dir: Path, *, base: Settings | None = None) -> Stack:
    influx = InfluxServer(run_dir / "influx").start()
    broker = BrokerServer(run_dir / "broker")
    try:
        settings = local_settings(run_dir, influx_url=influx.url, broker_port=broker.port, base=base)
        broker.password_file = settings.broker.password_file
        broker.acl_file = settings.broker.acl_file
        broker_admin.add_worker(settings, settings.broker.worker_user, password=settings.broker.password())
        broker.start()
        influx_admin.init(settings, fine=FINE, coarse=COARSE)
    except BaseException:
        broker.stop()
        influx.stop()
        raise
    return Stack(settings, influx, broker)
