"""The `infrawatch` command line: one entry point for every operator task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _version(_: argparse.Namespace) -> int:
    from infrawatch import __version__, _core

    print(f"infrawatch {__version__} (core {_core.__version__})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infrawatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    v = sub.add_parser("version", help="print the package and core versions")
    v.set_defaults(func=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
