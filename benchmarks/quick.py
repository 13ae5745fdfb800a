"""The ``--quick`` smoke-run switch the benchmarks share."""
from __future__ import annotations

import argparse


def parse_with_quick(parser: argparse.ArgumentParser, quick: dict) -> argparse.Namespace:
    """Add ``--quick`` to ``parser`` and parse the command line; with ``--quick``, ``quick`` replaces the defaults
    (options given explicitly still win)."""
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {quick}")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args()
    return args
