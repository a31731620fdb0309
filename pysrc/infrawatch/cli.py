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


def _credentials(path: Path | None) -> dict[str, str] | None:
    """An existing password store: a JSON object of broker username → password."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read credentials {path}: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise CliError(f"{path} must hold a JSON object of username → password")
    return {str(k): v for k, v in data.items()}


def _reloader(pid_file: Path | None) -> Any:
    if pid_file is None:
        return lambda: _say(
            "new broker users written; a running broker needs SIGHUP to know them "
            "(pass --pid-file, or `kill -HUP` it); connecting retries meanwhile"
        )
    from infrawatch.ingest import broker_admin

    def reload() -> None:
        if not broker_admin.reload_broker(pid_file):
            _say(f"could not signal the broker through {pid_file}")

    return reload


def _until_signalled(run: Any) -> Any:
    """Run `run(stop)` on a new event loop; Ctrl-C or SIGTERM sets `stop` (a clean end, drained)."""
    import asyncio
    import signal

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run(stop)

    return asyncio.run(main())


def _simulate(args: argparse.Namespace) -> int:

    from infrawatch.config import load_settings
    from infrawatch.ingest.publisher import ConnectError
    from infrawatch.ingest.simulate import (
        SimConfig,
        SimulationError,
        parse_duration,
        parse_incidents,
        simulate,
    )

    try:
        config = SimConfig(
            sensors=args.sensors,
            rate=args.rate,
            kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
            site=args.site,
            gateways=args.gateways,
            seed=args.seed,
            duration_s=args.duration,
            incidents=None if args.incidents is None else parse_incidents(args.incidents),
            shape=args.shape,
            qos=args.qos,
            clock=args.clock,
            history_s=parse_duration(args.history),
        )
        settings, credentials = load_settings(), _credentials(args.credentials)
        stats = _until_signalled(
            lambda stop: simulate(
                settings,
                config,
                stop=stop,
                credentials=credentials,
                reload=_reloader(args.pid_file),
                progress=_say,
            )
        )
    except (SimulationError, ConnectError) as e:
        raise CliError(str(e)) from e
    return 0 if stats.failed == 0 else 1


def _replay(args: argparse.Namespace) -> int:
    from infrawatch.config import load_settings
    from infrawatch.ingest.publisher import ConnectError
    from infrawatch.ingest.replay import ReplayConfig, ReplayError, load, merge, replay

    try:
        config = ReplayConfig(
            speed=args.speed,
            kind=args.kind,
            limit=args.limit,
            qos=args.qos,
            shift_to_now=not args.keep_timestamps,
        )
        settings, credentials = load_settings(), _credentials(args.credentials)
        data = merge(load(args.path, config.kind), config.limit)
        stats = _until_signalled(
            lambda stop: replay(
                settings,
                data,
                config,
                stop=stop,
                credentials=credentials,
                reload=_reloader(args.pid_file),
                progress=_say,
            )
        )
    except (ReplayError, ConnectError) as e:
        raise CliError(str(e)) from e
    return 0 if stats.failed == 0 else 1


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

    si = sub.add_parser(
        "simulate",
        help="a live simulated facility publishing over MQTT, with scheduled incidents",
        description="Publish a simulated facility to the broker (settings: INFRAWATCH_BROKER__*). "
        "Readings come on each kind's own interval (water_flow 60 s, water_quality 300 s, energy "
        "900 s), the cadence the models were trained on. With --clock live (the default) the "
        "simulation starts --history before now: each sensor first publishes its history (past "
        "timestamps, natural spacing) at --rate readings/s, so the workers' feature windows and the "
        "dashboards fill with the last hours, then each reading when its time comes, stamped with "
        "the simulated clock, which tracks the wall clock. Sensors publish as themselves "
        "(username = sensor id), or through --gateways as JSON-array batches. Missing broker users "
        "are created in the password file and ACL.",
    )
    si.add_argument("--sensors", type=_positive_int, default=300, help="sensors in all, split over the kinds")
    si.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="readings per second per sensor (not in total: N sensors send up to N x rate messages/s): "
        "the catch-up speed with --clock live, the publishing speed with wall or sim. Default 1. "
        "The workers' per-sensor token bucket (INFRAWATCH_WORKER__RATE_PER_S=1, BURST=1) runs on "
        "the readings' own timestamps: a live catch-up (readings a kind's interval apart) passes "
        "at any rate; with --clock wall, readings stamped faster than the bucket are rate-limited",
    )
    si.add_argument("--kinds", default="water_flow,water_quality,energy", help="comma-separated kinds")
    si.add_argument("--site", default="site-01", help="the facility's site name (a topic level)")
    si.add_argument(
        "--gateways",
        type=int,
        default=0,
        help="publish through this many gateways (batches to infrawatch/SITE/gateway/ID/batch); "
        "0 = one connection per sensor",
    )
    si.add_argument("--seed", type=int, default=0, help="the simulation is deterministic from it")
    si.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    si.add_argument(
        "--incidents",
        help="TYPE@SECONDS,... planted incidents (types: leak, burst, contamination, "
        "high_consumption, low_consumption, unusual_pattern) or 'none'; seconds from the start (with "
        "--clock live from now; negative ones fall in the history, e.g. leak@-7200); default: one of "
        "each type, a few minutes into the live part at least five minutes apart, a leak two hours "
        "before now (it grows over hours)",
    )
    si.add_argument("--shape", choices=["nested", "flat", "mixed"], default="mixed", help="payload form")
    si.add_argument(
        "--clock",
        choices=["live", "wall", "sim"],
        default="live",
        help="live: catch up on --history, then publish each reading at its simulated time, which "
        "tracks the wall clock (the models' cadence and time of day, nothing in the future); "
        "wall: --rate readings/s stamped with the time they are sent (simulated time runs faster "
        "than the clock; the time between readings does not match training, so healthy readings "
        "raise false alerts); sim: --rate readings/s stamped with the simulated clock from now "
        "(verdicts match training, but the stored times run ahead of now)",
    )
    si.add_argument(
        "--history",
        default="6h",
        help="--clock live: how long before now the simulation starts (e.g. 6h, 90m, 300s, 0); "
        "default 6h. Unless 0, each kind gets at least what its models need: 64 readings "
        "(water_flow 64 min, water_quality 5.3 h), energy 192 (48 h). A kind catches up after "
        "about history / (interval x rate - 1) s (6 h of water_flow at rate 1: about 6 minutes)",
    )
    si.add_argument("--qos", type=int, choices=[0, 1], default=1)
    si.add_argument("--credentials", type=Path, help="JSON {username: password} of existing broker users")
    si.add_argument("--pid-file", type=Path, help="SIGHUP the broker with this pid file after adding users")
    si.set_defaults(func=_simulate)

    rp = sub.add_parser(
        "replay",
        help="replay a real data set through the broker, each reading as its sensor",
        description="Publish a data set from ../shared/data (GECCO, BattLeDIM, LEAD, NAB) as its sensors, "
        "original timestamps in the payloads, at --speed times real time.",
    )
    rp.add_argument("path", type=Path, help="a data set folder or CSV, or a folder of data sets with --kind")
    rp.add_argument("--speed", type=float, default=1.0, help="times real time; 0 = as fast as possible")
    rp.add_argument("--kind", choices=["water_flow", "water_quality", "energy"])
    rp.add_argument("--limit", type=_positive_int, help="only the first N readings")
    rp.add_argument("--qos", type=int, choices=[0, 1], default=1)
    rp.add_argument(
        "--keep-timestamps",
        action="store_true",
        help="send the data set's own timestamps (default: moved so the last reading is now — "
        "InfluxDB's raw tier refuses points older than its 7 days)",
    )
    rp.add_argument("--credentials", type=Path, help="JSON {username: password} of existing broker users")
    rp.add_argument("--pid-file", type=Path, help="SIGHUP the broker with this pid file after adding users")
    rp.set_defaults(func=_replay)

    from infrawatch.ingest import commands as ingest_commands

    ingest_commands.add_parsers(sub)
    from infrawatch.grafana import commands as grafana_commands

    grafana_commands.add_parsers(sub)
    from infrawatch.api import commands as api_commands

    api_commands.add_parsers(sub)
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
