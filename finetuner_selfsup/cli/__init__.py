"""``finetuner-selfsup``: the command line.

One parser; each group of sub-commands lives in its own module and adds itself:

* :mod:`.experiments` -- ``reproduce`` (the tutorial's table on Totally-Looks-Like) and
  ``demo`` (the same pipeline on a small built-in pair set, no download).
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import List, Optional

from . import experiments


def build_parser() -> argparse.ArgumentParser:
    """The ``finetuner-selfsup`` parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="finetuner-selfsup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    experiments.add_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``finetuner-selfsup`` console script; returns the exit status."""
    try:
        return _main(argv)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        # Our errors say what went wrong and what to do; a traceback adds nothing for a user.
        print(f"finetuner-selfsup: error: {exc}", file=sys.stderr)
        return 2


def _main(argv: Optional[List[str]] = None) -> int:
    from rich.console import Console
    from rich.logging import RichHandler

    args = build_parser().parse_args(argv)
    console = Console()
    logging.basicConfig(level=logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    command = "finetuner-selfsup " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return args.run(args, console, command)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
