"""The ``binventory`` command: one sub-command per job, assembled from each stage's ``cli`` module.

Building the parser must stay cheap: every command, ``--help`` included, builds all of it, and
the SageMaker job runs it with only the ``train`` extra installed. So the stage ``cli`` modules
import no torch, numpy, FastAPI, ONNX Runtime or SQLAlchemy at module level (a command imports
what it needs when it runs), and a sub-command whose options live beside heavy code defines them
only when it is the command given (``define=``, see DeferredParser)."""
from __future__ import annotations

import argparse
import logging
import sys

from binventory import BinventoryError, __version__


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Says once what an option defaults to and keeps the layout of descriptions and epilogs.

    A required option says "(required)"; an option gets "(default: X)" unless its help already
    names its default (many say what an unset value means, e.g. "default: all cores") or it has
    none worth stating (None, off, empty): argparse's ArgumentDefaultsHelpFormatter appended
    "(default: None)" to those."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.option_strings:
            return f"{text} (required)"
        default = action.default
        if ("default" in text or default is None or default is False or default == argparse.SUPPRESS
                or (isinstance(default, (str, list, tuple)) and not default)):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


class DeferredParser(argparse.ArgumentParser):
    """A sub-command parser that takes ``define=callable(parser)``: its options and sub-commands
    are defined just before it parses, i.e. only when it is the command given."""

    def __init__(self, *args, define=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._define = define

    def parse_known_args(self, args=None, namespace=None):
        if self._define is not None:
            define, self._define = self._define, None
            define(self)
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    from binventory import app
    from binventory.data import cli as data_cli
    from binventory.diagnostics import cli as diagnostics_cli
    from binventory.inventory import cli as inventory_cli
    from binventory.inventory import export_cli, model_cli
    from binventory.serving import batch_cli
    from binventory.training import cli as training_cli

    parser = argparse.ArgumentParser(
        prog="binventory",
        description="Count items in warehouse bin photos and reconcile them with the inventory.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"binventory {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=DeferredParser)
    export_cli.add_data_parsers(data_cli.add_parser(commands, HelpFormatter), HelpFormatter)
    training_cli.add_parsers(commands, HelpFormatter)
    diagnostics_cli.add_parsers(commands, HelpFormatter)
    batch_cli.add_parsers(commands, HelpFormatter)
    app.add_parsers(commands, HelpFormatter)
    inventory_cli.add_parsers(commands, HelpFormatter)
    model_cli.add_parsers(commands, HelpFormatter)
    return parser


# Which extra installs a library that only some commands import (pyproject.toml).
EXTRA_OF = {
    **dict.fromkeys(("matplotlib", "tensorboard", "optuna", "psutil"), "train"),
    **dict.fromkeys(("onnx", "onnxruntime", "fastapi", "starlette", "uvicorn", "prometheus_client",
                     "jinja2", "multipart", "fastapi_offline"), "serve"),
    **dict.fromkeys(("sqlalchemy", "alembic", "psycopg", "sklearn"), "inventory"),
}


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    # matplotlib tells at INFO how it builds its font cache: noise in every first run's log.
    logging.getLogger("matplotlib").setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv  # lets a command tell options given on the command line from defaults
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except BinventoryError as e:
        print(f"binventory: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = EXTRA_OF.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"binventory: error: '{args.command}' needs {e.name}, which is not installed: "
              f"pip install 'binventory[{extra}]' (or 'binventory[all]')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("binventory: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
