"""The ``binventory`` command: one sub-command per job, assembled from each stage's ``cli`` module."""
from __future__ import annotations

import argparse
import logging
import sys

from binventory import BinventoryError, __version__


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the layout of descriptions and epilogs."""


def build_parser() -> argparse.ArgumentParser:
    from binventory import app
    from binventory.data import cli as data_cli
    from binventory.diagnostics import cli as diagnostics_cli
    from binventory.inventory import cli as inventory_cli
    from binventory.serving import batch_cli
    from binventory.training import cli as training_cli

    parser = argparse.ArgumentParser(
        prog="binventory",
        description="Count items in warehouse bin photos and reconcile them with the inventory.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"binventory {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cli.add_parser(commands, HelpFormatter)
    training_cli.add_parsers(commands, HelpFormatter)
    diagnostics_cli.add_parsers(commands, HelpFormatter)
    batch_cli.add_parsers(commands, HelpFormatter)
    app.add_parsers(commands, HelpFormatter)
    inventory_cli.add_parsers(commands, HelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv  # lets a command tell options given on the command line from defaults
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except BinventoryError as e:
        print(f"binventory: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("binventory: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
