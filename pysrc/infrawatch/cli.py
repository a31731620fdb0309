"""The `infrawatch` command line: one entry point for every operator task."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm


class CliError(Exception):
    """A problem the user can fix; the message says how."""


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
            n_estimators=args.trees,
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
    t.add_argument("--trees", type=int, default=100, help="trees per forest")
    t.add_argument("--no-activate", action="store_true", help="store without making it active")
    t.set_defaults(func=_train)

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
    except (CliError, RegistryError) as e:
        print(f"infrawatch: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("infrawatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
