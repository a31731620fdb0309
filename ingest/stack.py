"""The local stack — `make run` / `infrawatch stack`: the whole system on one machine.

Starts InfluxDB and Mosquitto as local processes under the run directory, applies the schema,
trains default models when none are active, then starts the worker(s) and a simulated facility
as child processes (`infrawatch worker`, `infrawatch simulate` — the commands an operator would
run), prints a live status line read back from InfluxDB, and on Ctrl-C stops everything in order:
the simulator, then the workers (they drain, acknowledge and snapshot), then the broker, then
the database. Running it again reuses the run directory: data, secrets, models, sessions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from infrawatch.config import Settings, load_settings
from infrawatch.detection.registry import KINDS, ModelRegistry
from infrawatch.errors import UserError
from infrawatch.ingest import broker_admin, influx_admin, sensor_meta
from infrawatch.ingest.secrets import INFLUX_ROLES, ensure_secret, local_settings
from infrawatch.ingest.servers import ROOT, BrokerServer, InfluxServer, _port_open
from infrawatch.ingest.simulate import SimConfig, plan

GRAFANA_DIR = ROOT / "grafana"


@dataclass
class StackOptions:
    run_dir: Path = Path("run")
    influx_port: int = 8086
    broker_port: int = 1883
    workers: int = 2
    sensors: int = 300
    gateways: int = 0
    rate: float | None = None  # simulator's own default when None
    simulate: bool = True
    train_candidates: int = 1
    status_every_s: float = 2.0
    extra_simulate_args: list[str] = field(default_factory=list)
    api: bool = True
    api_port: int = 8000


def stack_env(settings: Settings) -> dict[str, str]:
    """The INFRAWATCH_* variables that point a command at this stack (paths to secrets, not secrets)."""
    s = settings
    env = {
        "INFRAWATCH_RUN_DIR": str(s.run_dir),
        "INFRAWATCH_MODEL_DIR": str(s.model_dir),
        "INFRAWATCH_INFLUX__URL": s.influx.url,
        "INFRAWATCH_BROKER__HOST": s.broker.host,
        "INFRAWATCH_BROKER__PORT": str(s.broker.port),
        "INFRAWATCH_BROKER__PASSWORD_FILE": str(s.broker.password_file),
        "INFRAWATCH_BROKER__ACL_FILE": str(s.broker.acl_file),
        "INFRAWATCH_BROKER__WORKER_PASSWORD_FILE": str(s.broker.worker_password_file),
        "INFRAWATCH_WORKER__SPOOL_DIR": str(s.worker.spool_dir),
        "INFRAWATCH_WORKER__DEADLETTER_DIR": str(s.worker.deadletter_dir),
    }
    for r in INFLUX_ROLES:
        env[f"INFRAWATCH_INFLUX__{r.upper()}_PASSWORD_FILE"] = str(getattr(s.influx, f"{r}_password_file"))
    # the HTTP API: its secrets (files), its database, the broker to SIGHUP after adding sensors
    for name in ("jwt_secret_file", "webhook_token_file", "broker_pid_file", "db_url"):
        value = getattr(s.api, name)
        if value is not None:
            env[f"INFRAWATCH_API__{name.upper()}"] = str(value)
    env["INFRAWATCH_API__PORT"] = str(s.api.port)
    # Grafana's webhook contact point (file provisioning and `infrawatch grafana sync`) posts to
    # this stack's API receiver with its token
    env["INFRAWATCH_GRAFANA__API_WEBHOOK_URL"] = f"http://{s.api.host}:{s.api.port}/api/v1/alerts/webhook"
    if s.api.webhook_token_file is not None:
        env["INFRAWATCH_GRAFANA__API_WEBHOOK_TOKEN_FILE"] = str(s.api.webhook_token_file)
    return env


class Stack:
    def __init__(self, opts: StackOptions, out: TextIO = sys.stderr) -> None:
        self.opts = opts
        self.out = out
        run_dir = opts.run_dir.resolve()
        base = load_settings()
        base = (
            base.model_copy(update={"model_dir": run_dir / "models"})
            if "INFRAWATCH_MODEL_DIR" not in os.environ
            else base
        )
        self.settings = local_settings(
            run_dir,
            influx_url=f"http://127.0.0.1:{opts.influx_port}",
            broker_port=opts.broker_port,
            base=base,
        )
        self.influx = InfluxServer(run_dir / "influx", opts.influx_port)
        self.broker = BrokerServer(
            run_dir / "broker",
            opts.broker_port,
            password_file=self.settings.broker.password_file,
            acl_file=self.settings.broker.acl_file,
        )
        secret_dir = run_dir / "secrets"
        api = self.settings.api.model_copy(
            update={
                "port": opts.api_port,
                "jwt_secret_file": ensure_secret(secret_dir / "api-jwt"),
                "webhook_token_file": ensure_secret(secret_dir / "api-webhook"),
                "broker_pid_file": self.broker.pid_file,
            }
        )
        self.settings = self.settings.model_copy(update={"api": api})
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = run_dir / "logs"

    def say(self, msg: str) -> None:
        print(f"[stack] {msg}", file=self.out, flush=True)

    # ------------------------------------------------------------------ start
    def start_servers(self) -> None:
        for what, port in (("InfluxDB", self.opts.influx_port), ("the broker", self.opts.broker_port)):
            if _port_open("127.0.0.1", port):
                raise UserError(
                    f"port {port} for {what} is taken (another stack, or a system service?): stop it, "
                    "or pass --influx-port/--broker-port"
                )
        s = self.settings
        broker_admin.add_worker(s, s.broker.worker_user, password=s.broker.password())
        self.influx.start()
        self.say(f"InfluxDB on {self.influx.url} (data in {self.influx.run_dir})")
        self.broker.start()
        self.say(
            f"Mosquitto on {self.broker.host}:{self.broker.port} (persistence in {self.broker.data_dir})"
        )
        for line in influx_admin.init(s):
            self.say(f"influx: {line}")
        env_file = s.run_dir / "stack.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in stack_env(s).items()))
        self.say(f"environment for other commands: set -a; . {env_file}; set +a")

    def ensure_models(self) -> None:
        reg = ModelRegistry(self.settings.model_dir)
        missing = [k for k in KINDS if reg.active_version(k) is None]
        if not missing:
            self.say(f"models: {', '.join(f'{k} {reg.active_version(k)}' for k in KINDS)}")
            return
        self.say(f"no active model for {', '.join(missing)}: training defaults (first run only)")
        for kind in missing:
            cmd = [
                sys.executable,
                "-m",
                "infrawatch.cli",
                "train",
                "--kind",
                kind,
                "--candidates",
                str(self.opts.train_candidates),
            ]
            rc = subprocess.run(cmd, env={**os.environ, **stack_env(self.settings)}, check=False).returncode
            if rc != 0:
                raise UserError(f"training {kind} failed (exit {rc}); see the output above")

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        env = {**os.environ, **stack_env(self.settings), **(extra_env or {})}
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "infrawatch.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the stack only; it stops children in order
        )

    def start_workers(self) -> None:
        n = self.opts.workers
        for i in range(n):
            self._spawn(
                f"worker-{i + 1}",
                ["worker"],
                {"INFRAWATCH_WORKER__ID": f"worker-{i + 1}", "INFRAWATCH_WORKER__PARTITION": f"{i}/{n}"},
            )
        self.say(f"{n} worker(s) started (logs in {self.logs})")

    def start_api(self) -> None:
        """`infrawatch api` as a child (it migrates its database first); first admin:
        `infrawatch users create NAME` with run/stack.env loaded."""
        port = self.opts.api_port
        if _port_open("127.0.0.1", port):
            raise UserError(f"port {port} for the HTTP API is taken: stop what holds it, or pass --api-port")
        self._spawn("api", ["api", "serve", "--port", str(port)])
        self.say(
            f"HTTP API on http://127.0.0.1:{port} (docs at /docs; first admin: "
            f"`infrawatch users create NAME` with {self.settings.run_dir / 'stack.env'} loaded)"
        )

    def start_simulator(self) -> None:
        args = ["simulate", "--sensors", str(self.opts.sensors), "--pid-file", str(self.broker.pid_file)]
        if self.opts.rate is not None:
            args += ["--rate", str(self.opts.rate)]
        if self.opts.gateways:
            args += ["--gateways", str(self.opts.gateways)]
        self._spawn("simulate", [*args, *self.opts.extra_simulate_args])
        self.say(f"simulated facility: {self.opts.sensors} sensors across the three kinds")
        self.write_sensor_registry()

    def write_sensor_registry(self) -> None:
        """The simulated sensors' coordinates as `sensor` points, for Grafana's facility map (the
        simulator's layout is deterministic from its config, so the plan names the same sensors)."""
        sensors = [
            sl.sensor for sl in plan(SimConfig(sensors=self.opts.sensors, gateways=self.opts.gateways)).slots
        ]
        with influx_admin.InfluxClient(self.settings, "writer") as c:
            c.write(sensor_meta.sensor_lines(sensors), rp=sensor_meta.RETENTION_POLICY)
        self.say(f"sensor registry: {len(sensors)} sensors with coordinates (measurement `sensor`)")

    # ------------------------------------------------------------------ status
    def status_line(self, client: influx_admin.InfluxClient) -> str:
        """Readings/s, alerts, spool and dead letters over the last 30 s, from the `pipeline`
        points each worker writes every 10 s."""
        try:
            rows = client.rows(
                'SELECT sum("written") AS w, sum("dead_letter") AS d, sum("rate_limited") AS r, '
                'last("spooled_batches") AS sp, sum("alerts") AS a FROM "pipeline" '
                'WHERE time > now() - 30s GROUP BY "worker"'
            )
            alerts = client.rows('SELECT count("risk") AS n FROM "alert" WHERE time > now() - 24h')
        except influx_admin.InfluxError as e:
            return f"status unavailable: {e}"
        written = sum(r.get("w") or 0 for r in rows)
        dead = sum(r.get("d") or 0 for r in rows)
        limited = sum(r.get("r") or 0 for r in rows)
        spooled = sum(r.get("sp") or 0 for r in rows)
        n_alerts = alerts[0]["n"] if alerts else 0
        alive = sum(1 for n, p in self.children.items() if n.startswith("worker") and p.poll() is None)
        return (
            f"{written / 30:8.1f} readings/s | alerts (24 h) {n_alerts:5d} | spool {spooled:4d} batches | "
            f"dead letters (30 s) {dead:4d} | rate-limited {limited:4d} | workers {alive}/{self.opts.workers}"
        )

    def watch(self) -> None:
        with influx_admin.InfluxClient(self.settings, "admin") as client:
            while True:
                for name, p in self.children.items():
                    if p.poll() is not None:
                        raise UserError(
                            f"{name} exited with {p.returncode}; see {self.logs / (name + '.log')}"
                        )
                line = self.status_line(client)
                if self.out.isatty():
                    print(f"\r{line}", end="", file=self.out, flush=True)
                else:
                    print(line, file=self.out, flush=True)
                time.sleep(self.opts.status_every_s)

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        order = [n for n in self.children if n == "simulate"] + [n for n in self.children if n != "simulate"]
        for name in order:
            p = self.children[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    self.say(f"{name} did not stop in 30 s; killing it")
                    p.kill()
                    p.wait()
        self.children.clear()
        self.broker.stop()
        self.influx.stop()
        self.say("stopped; data kept in " + str(self.settings.run_dir))

    def run(self) -> int:
        try:
            self.start_servers()
            self.ensure_models()
            self.start_workers()
            if self.opts.api:
                self.start_api()
            if self.opts.simulate:
                self.start_simulator()
            self.say(
                f"Grafana provisioning: {GRAFANA_DIR}/provisioning (dashboards in {GRAFANA_DIR}/dashboards); "
                "see README 'Grafana'"
            )
            self.say("Ctrl-C stops everything")
            self.watch()
        except KeyboardInterrupt:
            print(file=self.out)
            self.say("stopping…")
        finally:
            self.stop()
        return 0
