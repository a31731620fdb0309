"""The ingest side's subcommands of `infrawatch`: `influx init`, `broker add-sensor|add-gateway|
add-worker|remove`. Parsers only here; each handler imports what it needs when it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, cast


def _influx_init(args: argparse.Namespace) -> int:
    from infrawatch.config import load_settings
    from infrawatch.ingest import influx_admin

    settings = load_settings()
    for line in influx_admin.init(settings, fine=args.fine, coarse=args.coarse):
        print(line, file=sys.stderr)
    print(f"schema ready on {settings.influx.url} database {settings.influx.database}", file=sys.stderr)
    return 0


def _influx_backfill(args: argparse.Namespace) -> int:
    import time

    from infrawatch.config import load_settings
    from infrawatch.ingest import influx_admin

    end = time.time_ns()
    start = end - int(args.hours * 3600e9)
    n = influx_admin.backfill(load_settings(), start, end, fine=args.fine, coarse=args.coarse)
    print(f"recomputed {n} rollups over the last {args.hours:g} h", file=sys.stderr)
    return 0


def _broker_add(args: argparse.Namespace) -> int:
    from infrawatch.config import load_settings
    from infrawatch.ingest import broker_admin

    settings = load_settings()
    role = cast(
        broker_admin.Role,
        {"add-sensor": "sensor", "add-gateway": "gateway", "add-worker": "worker"}[args.broker_command],
    )
    created = broker_admin.add_users(settings, [(i, role) for i in args.ids])
    reloaded = args.pid_file is not None and broker_admin.reload_broker(args.pid_file)
    # The passwords are shown once, on stdout (pipe them into your secret store); never stored.
    for user, pw in created.items():
        print(f"{user}\t{pw}")
    note = "broker reloaded" if reloaded else "reload the broker (SIGHUP) to apply"
    print(
        f"{len(created)} {role} credential(s) written to {settings.broker.password_file}; {note}",
        file=sys.stderr,
    )
    return 0


def _broker_remove(args: argparse.Namespace) -> int:
    from infrawatch.config import load_settings
    from infrawatch.ingest import broker_admin

    settings = load_settings()
    missing = [i for i in args.ids if not broker_admin.remove_user(settings, i)]
    if args.pid_file is not None:
        broker_admin.reload_broker(args.pid_file)
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _stack(args: argparse.Namespace) -> int:
    from infrawatch.ingest.stack import Stack, StackOptions

    opts = StackOptions(
        run_dir=args.run_dir,
        influx_port=args.influx_port,
        broker_port=args.broker_port,
        workers=args.workers,
        sensors=args.sensors,
        gateways=args.gateways,
        rate=args.rate,
        simulate=not args.no_simulate,
        train_candidates=args.train_candidates,
        api_port=args.api_port,
        api=not args.no_api,
    )
    return Stack(opts).run()


def add_parsers(sub: Any) -> None:
    st = sub.add_parser(
        "stack",
        help="the local stack: InfluxDB, Mosquitto, schema, default models, workers and a simulated facility",
    )
    st.add_argument(
        "--run-dir", type=_path, default=Path("run"), help="servers' data, secrets, logs (reused)"
    )
    st.add_argument("--influx-port", type=int, default=8086)
    st.add_argument("--broker-port", type=int, default=1883)
    st.add_argument(
        "--workers", type=int, default=2, help="ingest workers (each owns a partition of sensors)"
    )
    st.add_argument("--sensors", type=int, default=300, help="simulated sensors across the three kinds")
    st.add_argument("--gateways", type=int, default=0, help="publish through this many gateways instead")
    st.add_argument("--rate", type=float, default=None, help="simulator rate (see `infrawatch simulate -h`)")
    st.add_argument("--no-simulate", action="store_true", help="servers and workers only")
    st.add_argument("--train-candidates", type=int, default=1, help="search size of first-run training")
    st.add_argument("--api-port", type=int, default=8000, help="the HTTP API (`infrawatch api`)")
    st.add_argument("--no-api", action="store_true", help="do not start the HTTP API")
    st.set_defaults(func=_stack)

    i = sub.add_parser("influx", help="InfluxDB schema: database, retention tiers, rollups, users")
    isub = i.add_subparsers(dest="influx_command", metavar="ACTION", required=True)
    ii = isub.add_parser(
        "init",
        help="apply influx/schema idempotently (needs INFRAWATCH_INFLUX__<ROLE>_PASSWORD[_FILE] for "
        "admin, writer, grafana and api)",
    )
    ii.add_argument("--fine", default="1m", help="interval of the rollup_1m tier's continuous queries")
    ii.add_argument("--coarse", default="1h", help="interval of the rollup_1h tier's continuous queries")
    ii.set_defaults(func=_influx_init)

    bf = isub.add_parser(
        "backfill", help="recompute the rollup tiers over a time range (after a long outage)"
    )
    bf.add_argument("--hours", type=float, default=24.0, help="how far back from now (default 24)")
    bf.add_argument("--fine", default="1m")
    bf.add_argument("--coarse", default="1h")
    bf.set_defaults(func=_influx_backfill)

    b = sub.add_parser("broker", help="broker credentials and ACL (one user per sensor, gateway, worker)")
    bsub = b.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    for name, what in (("add-sensor", "sensor"), ("add-gateway", "gateway"), ("add-worker", "worker")):
        p = bsub.add_parser(name, help=f"create (or re-key) {what} credentials; prints ID<TAB>PASSWORD")
        p.add_argument("ids", nargs="+", metavar="ID")
        p.add_argument("--pid-file", type=_path, help="SIGHUP the broker with this pid file to apply now")
        p.set_defaults(func=_broker_add)
    r = bsub.add_parser("remove", help="delete users and their ACL entries")
    r.add_argument("ids", nargs="+", metavar="ID")
    r.add_argument("--pid-file", type=_path)
    r.set_defaults(func=_broker_remove)


def _path(text: str) -> Path:
    return Path(text)
