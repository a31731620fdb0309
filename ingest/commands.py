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


def add_parsers(sub: Any) -> None:
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
