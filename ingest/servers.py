"""InfluxDB and Mosquitto as local processes under a run directory.

The local stack (`make run`) and the integration tests start the Debian packages' `influxd` and
`mosquitto` binaries themselves — never the system services — each with a config rendered from
the templates in `influx/` and `ingest/broker/`, data under its own directory, and loopback ports.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from infrawatch.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
INFLUX_TEMPLATE = ROOT / "influx" / "influxdb.conf.template"
BROKER_TEMPLATE = ROOT / "ingest" / "broker" / "mosquitto.conf.template"


class ServerError(UserError):
    """A server did not start or stop; the message says what to check."""


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        raise ServerError(f"{name} not found: run `make setup` (it installs the Debian packages)")
    return path


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class _Process:
    """A child process with a log file; stop() is SIGTERM then SIGKILL."""

    name = "server"

    def __init__(self, run_dir: Path, port: int | None) -> None:
        self.run_dir = Path(run_dir)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- to be provided by subclasses
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.out"

    def start(self, timeout_s: float = 30.0) -> Self:
        if self.running:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cmd = self._command()
        with self.log_path.open("ab") as log:
            # own process group: a Ctrl-C meant for the stack is delivered by the stack, in order
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode} at start; see {self.log_path}:\n"
                    + self._log_tail()
                )
            if self._ready():
                return self
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # the port is released when the process is gone; wait so a restart can bind it again
        deadline = time.monotonic() + 5
        while _port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class InfluxServer(_Process):
    """`influxd` (1.x) with auth on, TSI, data under `run_dir/influxdb`."""

    name = "influxd"

    def __init__(self, run_dir: Path, port: int | None = None, *, cq_run_interval: str = "1s") -> None:
        super().__init__(run_dir, port)
        self.rpc_port = free_port()
        self.cq_run_interval = cq_run_interval

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "influxdb.conf"

    def _command(self) -> list[str]:
        data_dir = self.run_dir / "influxdb"
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = INFLUX_TEMPLATE.read_text().format(
            rpc_port=self.rpc_port,
            http_port=self.port,
            data_dir=data_dir,
            cq_run_interval=self.cq_run_interval,
        )
        self.config_path.write_text(conf)
        return [_binary("influxd"), "run", "-config", str(self.config_path)]

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False


class BrokerServer(_Process):
    """`mosquitto` (2.x) with persistence, a password file and an ACL under `run_dir/mosquitto`."""

    name = "mosquitto"

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        *,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        max_inflight: int = 10_000,
        max_queued: int = 1_000_000,
        max_queued_bytes: int = 1 << 30,
    ) -> None:
        super().__init__(run_dir, port)
        self.data_dir = self.run_dir / "mosquitto"
        self.password_file = password_file or self.data_dir / "passwd"
        self.acl_file = acl_file or self.data_dir / "acl"
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes

    @property
    def config_path(self) -> Path:
        return self.run_dir / "mosquitto.conf"

    def _command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for f in (self.password_file, self.acl_file):
            f.parent.mkdir(parents=True, exist_ok=True)
            if not f.exists():
                f.touch(mode=0o600)
        conf = BROKER_TEMPLATE.read_text().format(
            user=pwd.getpwuid(os.getuid()).pw_name,
            host=self.host,
            port=self.port,
            password_file=self.password_file,
            acl_file=self.acl_file,
            data_dir=self.data_dir,
            max_inflight=self.max_inflight,
            max_queued=self.max_queued,
            max_queued_bytes=self.max_queued_bytes,
        )
        self.config_path.write_text(conf)
        return [_binary("mosquitto"), "-c", str(self.config_path)]

    @property
    def pid_file(self) -> Path:
        """Holds the running broker's pid: `infrawatch broker|simulate --pid-file` SIGHUP it."""
        return self.data_dir / "mosquitto.pid"

    def _ready(self) -> bool:
        if not _port_open(self.host, self.port):
            return False
        if self.proc is not None:
            self.pid_file.write_text(f"{self.proc.pid}\n")
        return True

    def reload(self) -> None:
        """Re-read the password file and ACL (SIGHUP); connected clients stay connected."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGHUP)
            # mosquitto applies a SIGHUP at its next loop iteration
            time.sleep(0.2)
