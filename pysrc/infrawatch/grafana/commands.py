"""`infrawatch grafana build|check|render|sync`. Parsers only here; handlers import lazily."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _root(args: argparse.Namespace) -> Path:
    from infrawatch.grafana.build import ROOT

    return Path(args.root) if args.root else ROOT


def _build(args: argparse.Namespace) -> int:
    from infrawatch.grafana import build

    for p in build.write(_root(args)):
        print(p)
    return 0


def _check(args: argparse.Namespace) -> int:
    from infrawatch.grafana import build, validate
    from infrawatch.grafana.errors import CheckError

    root = _root(args)
    problems = validate.check(root)
    problems += [
        f"{rel}: differs from the generator (run `infrawatch grafana build`)" for rel in build.stale(root)
    ]
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        raise CheckError(f"{len(problems)} problem(s) in {root}")
    print(f"{root}: dashboards, datasource and alerting files are consistent", file=sys.stderr)
    return 0


def _render(args: argparse.Namespace) -> int:
    """Provisioning files with the optional integrations whose settings are set."""
    import os

    from infrawatch.grafana import alerting, build

    env = dict.fromkeys(alerting.enabled_optional(os.environ), "1")
    extra = {"provisioning/alerting/contact-points.yaml": build._yaml(alerting.contact_points(env))}
    for p in build.write(args.out, extra):
        print(p)
    print(f"optional integrations on: {', '.join(env) or 'none'}", file=sys.stderr)
    return 0


def _sync(args: argparse.Namespace) -> int:
    from infrawatch.config import load_settings
    from infrawatch.grafana import sync

    settings = load_settings()
    if args.url:
        settings = settings.model_copy(
            update={"grafana": settings.grafana.model_copy(update={"url": args.url})}
        )
    report = sync.sync(settings, progress=lambda m: print(m, file=sys.stderr))
    for line in report.lines():
        print(line)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    g = sub.add_parser("grafana", help="Grafana dashboards, alert rules and contact points as code")
    gs = g.add_subparsers(dest="grafana_command", metavar="ACTION", required=True)
    b = gs.add_parser("build", help="write grafana/ from the generator (pysrc/infrawatch/grafana)")
    b.add_argument("--root", type=Path, help="the grafana/ directory (default: the repository's)")
    b.set_defaults(func=_build)
    c = gs.add_parser(
        "check", help="validate grafana/: uids, panel ids and grid, datasource refs, variables, alerting"
    )
    c.add_argument("--root", type=Path, help="the grafana/ directory (default: the repository's)")
    c.set_defaults(func=_check)
    r = gs.add_parser(
        "render",
        help="write a provisioning tree whose contact points include Slack/PagerDuty/Teams for the "
        "INFRAWATCH_GRAFANA__SLACK_WEBHOOK_URL / __PAGERDUTY_KEY / __TEAMS_WEBHOOK_URL that are set",
    )
    r.add_argument("out", type=Path)
    r.set_defaults(func=_render)
    s = gs.add_parser(
        "sync",
        help="push datasource, folders, dashboards, templates, contact points, rules and policies to a "
        "running Grafana (INFRAWATCH_GRAFANA__URL, __TOKEN or __USER/__PASSWORD)",
    )
    s.add_argument("--url", help="Grafana's URL (default: INFRAWATCH_GRAFANA__URL)")
    s.set_defaults(func=_sync)
