"""The `infrawatch` command line: one entry point for every operator task."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from infrawatch.errors import UserError


class CliError(UserError):
    """A problem with the command line itself; the message says how to fix it."""


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return n


def _say(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def _version(_: argparse.Namespace) -> int:
    from infrawatch import __version__, _core

    print(f"infrawatch {__version__} (core {_core.__version__}, {_core.__build_profile__} build)")
    return 0


def _registry(args: argparse.Namespace) -> Any:
    from infrawatch.config import load_settings
    from infrawatch.detection.registry import ModelRegistry

    return ModelRegistry(args.model_dir or load_settings().model_dir)


def _train(args: argparse.Namespace) -> int:
    from infrawatch.config import load_settings
    from infrawatch.detection.training import TrainConfig, train

    kinds = ["water_flow", "water_quality", "energy"] if args.kind == "all" else [args.kind]
    for kind in kinds:
        cfg = TrainConfig(
            kind=kind,
            window=args.window or load_settings().window,
            n_sensors=args.sensors,
            days=args.days,
            time_budget_s=args.budget,
            max_candidates=args.candidates,
            n_estimators=args.trees,
            data=args.data,
            feature_set=args.features,
        )
        v = train(cfg, _registry(args), activate=not args.no_activate, progress=_say)
        pooled = v.metrics.get("test", {}).get("pooled", {}).get("event", {})
        print(
            f"{kind}: saved {v.version}{' (active)' if v.active else ''}; unseen seeds: "
            f"event precision {pooled.get('precision', float('nan')):.3f} "
            f"recall {pooled.get('recall', float('nan')):.3f} F1 {pooled.get('f1', float('nan')):.3f} "
            f"false-positive share {pooled.get('false_positive_share', float('nan')):.3f}"
        )
    return 0


def _models_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    kinds = [args.kind] if args.kind else ["water_flow", "water_quality", "energy"]
    rows = []
    for kind in kinds:
        for v in reg.versions(kind):
            ev = v.metrics.get("test", {}).get("pooled", {}).get("event", {})
            rows.append(
                f"{'*' if v.active else ' '} {kind:<14} {v.version:<40} {v.created[:19]:<20} "
                f"F1 {ev.get('f1', float('nan')):.3f}"
            )
    if args.json:
        print(
            json.dumps(
                {k: [vars(v) | {"path": str(v.path)} for v in reg.versions(k)] for k in kinds}, default=str
            )
        )
    elif rows:
        print("\n".join(rows))
    else:
        print(f"no models in {reg.root}; train one with `infrawatch train --kind KIND`")
    return 0


def _models_activate(args: argparse.Namespace) -> int:
    reg = _registry(args)
    reg.activate(args.kind, args.version)
    print(f"{args.kind}: {args.version} is active; running workers pick it up without losing state")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from infrawatch import sim
    from infrawatch.detection import datasets, report
    from infrawatch.detection.evaluation import evaluate_data, pooled

    reg = _registry(args)
    version = args.version or reg.active_version(args.kind)
    if version is None:
        raise CliError(
            f"no active {args.kind} model in {reg.root}; run `infrawatch train --kind {args.kind}` first"
        )
    meta = next((v.meta for v in reg.versions(args.kind) if v.version == version), None)
    if meta is None:
        raise CliError(f"{args.kind} has no version {version!r}; see `infrawatch models list`")
    entry = reg.load(args.kind, version)
    window = int(meta.get("window", 60))
    parts: list[tuple[str, Any]] = []
    if args.data:
        try:
            name, data = datasets.load(args.data)
        except datasets.DatasetError as e:
            raise CliError(str(e)) from e
        if data.kind != args.kind:
            raise CliError(f"{args.data} is a {data.kind} data set ({name}); use --kind {data.kind}")
        if args.part == "latest":
            data = datasets.split_by_time(data, (0.6, 0.2, 0.2))[2]
            name += " (latest 20%)"
        parts.append((name, data))
    else:
        for seed in args.sim_seeds:
            _say(f"simulating seed {seed} …")
            parts.append((f"sim seed {seed}", sim.simulate(args.kind, seed=seed, n_sensors=args.sensors)))
    runs = []
    for name, data in tqdm(parts, desc="evaluate", unit="set", file=sys.stderr):
        runs.append((evaluate_data(name, data, entry, window), data))
    total = pooled([r for r, _ in runs], args.kind) if len(runs) > 1 else runs[0][0].scores
    out = {
        "kind": args.kind,
        "model_version": version,
        "runs": {r.name: r.scores.as_dict() for r, _ in runs},
        "pooled": total.as_dict(),
    }
    if args.report:
        md = report.write(
            Path(args.report),
            f"infrawatch {args.kind} evaluation — model {version}",
            runs,
            notes=[f"Command: `infrawatch {' '.join(sys.argv[1:])}`"],
        )
        _say(f"report: {md}")
    print(json.dumps(out, indent=2))
    ev = total.event
    _say(
        f"{args.kind}: event precision {ev.precision:.3f} recall {ev.recall:.3f} F1 {ev.f1:.3f} "
        f"false-positive share {ev.false_positive_share:.3f} ({ev.caught}/{ev.events} events caught)"
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from infrawatch.config import ConfigError, load_settings
    from infrawatch.ingest.worker import WorkerError, run

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per write otherwise
    settings = load_settings()
    overrides = {k: v for k, v in (("id", args.id), ("partition", args.partition)) if v is not None}
    if overrides:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=overrides)})
    try:
        asyncio.run(run(settings, install_signal_handlers=True))
    except (WorkerError, ConfigError) as e:
        raise CliError(str(e)) from e
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infrawatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    v = sub.add_parser("version", help="print the package and core versions")
    v.set_defaults(func=_version)

    t = sub.add_parser("train", help="train a kind's models on simulated fleets and store them")
    t.add_argument("--kind", required=True, choices=["water_flow", "water_quality", "energy", "all"])
    t.add_argument(
        "--model-dir", type=Path, help="registry directory (default: INFRAWATCH_MODEL_DIR or ./models)"
    )
    t.add_argument("--window", type=int, help="feature window in readings (default: settings)")
    t.add_argument("--sensors", type=int, default=30, help="simulated sensors per seed")
    t.add_argument("--days", type=float, help="simulated days per seed (default: the kind's)")
    t.add_argument("--budget", type=float, default=180.0, help="hyperparameter search budget, seconds")
    t.add_argument(
        "--candidates",
        type=_positive_int,
        default=None,
        help="try exactly this many candidates, however long it takes (reproducible figures; "
        "overrides --budget)",
    )
    t.add_argument("--trees", type=int, default=100, help="trees per forest")
    t.add_argument("--data", help="train on a real data set (folder or CSV) instead of simulated fleets")
    t.add_argument(
        "--features",
        choices=["all", "scale_free"],
        default="all",
        help="scale_free: only features that mean the same on any sensor (for unseen buildings/series)",
    )
    t.add_argument("--no-activate", action="store_true", help="store without making it active")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="score a model on a real data set or unseen simulated fleets")
    e.add_argument("--kind", required=True, choices=["water_flow", "water_quality", "energy"])
    e.add_argument("--data", type=Path, help="a data set folder or CSV (GECCO, BattLeDIM, LEAD, NAB)")
    e.add_argument(
        "--part",
        choices=["all", "latest"],
        default="all",
        help="latest: only the last 20%% (the held-out part)",
    )
    e.add_argument(
        "--sim-seeds",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[41, 42],
        help="without --data: simulator seeds to score on (comma-separated)",
    )
    e.add_argument("--sensors", type=int, default=30, help="simulated sensors per seed")
    e.add_argument("--version", help="model version (default: the active one)")
    e.add_argument("--model-dir", type=Path)
    e.add_argument("--report", type=Path, help="write report.md and PNG charts into this folder")
    e.set_defaults(func=_evaluate)

    m = sub.add_parser("models", help="list or activate model versions")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ml = msub.add_parser("list", help="list stored versions (* = active)")
    ml.add_argument("--kind", choices=["water_flow", "water_quality", "energy"])
    ml.add_argument("--model-dir", type=Path)
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=_models_list)
    ma = msub.add_parser("activate", help="make a stored version the active one")
    ma.add_argument("kind", choices=["water_flow", "water_quality", "energy"])
    ma.add_argument("version")
    ma.add_argument("--model-dir", type=Path)
    ma.set_defaults(func=_models_activate)

    w = sub.add_parser(
        "worker",
        help="run an MQTT ingest worker "
        "(settings: INFRAWATCH_BROKER__*, INFRAWATCH_INFLUX__*, INFRAWATCH_WORKER__*)",
    )
    w.add_argument(
        "--id", help="worker id: its broker session, spool and state (default: INFRAWATCH_WORKER__ID)"
    )
    w.add_argument(
        "--partition", help="'i/N': process the sensors hashing to i of N workers (default: settings)"
    )
    w.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    w.set_defaults(func=_worker)

    from infrawatch.ingest import commands as ingest_commands

    ingest_commands.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from infrawatch.detection.registry import RegistryError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (UserError, RegistryError) as e:
        print(f"infrawatch: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("infrawatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
