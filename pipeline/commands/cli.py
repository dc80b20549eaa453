"""The ``strikeflow`` command: one subcommand per process type (see the Procfile).

Every subcommand loads and validates the settings first; a configuration
problem ends the program with exit code 2 and one line on stderr that names
the setting and the fix (never a traceback, never a secret).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pipeline.runtime.logs import configure_logging
from pipeline.runtime.settings import ConfigError, load_settings

# name -> (help, module). Each module has ``run(args, settings) -> int`` and may have
# ``add_arguments(parser)``. Imported only when its command runs: the worker's Faust and the
# Greeks' numba take about a second to import, which ``strikeflow --help`` and a config error need not pay.
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("local Kite-compatible market (WebSocket + instruments REST)", "pipeline.commands.simulate"),
    "ingest": ("connect to Kite (or the simulator) and feed the Kafka ticks topic", "pipeline.commands.ingest"),
    "worker": ("the Faust worker (process + store agents)", "pipeline.commands.worker"),
    "migrate": ("create, upgrade or roll back the database schema (--to N, --status)", "pipeline.commands.migrate"),
    "replay": ("rebuild one schema's bars and rollups from another's stored ticks with the worker's code",
               "pipeline.commands.replay"),
    "backfill": ("fill gaps in the 1-minute bars from Kite's historical candles (source 'historical')",
                 "pipeline.commands.backfill"),
    "demo": ("run the whole pipeline on embedded services and print a summary", "pipeline.commands.demo"),
    "web": ("live option-chain dashboard and its JSON API (read-only)", "pipeline.commands.web"),
    "top": ("live backpressure view for on-call (rates, buffers, consumer lag)", "pipeline.commands.top"),
    "bench": ("end-to-end benchmark on this machine: throughput, receive->Redis latency, memory",
              "pipeline.commands.bench"),
}

# Commands whose arguments must be known to parse the command line.
_WITH_ARGUMENTS = ("simulate", "ingest", "migrate", "replay", "backfill", "demo", "top", "bench", "web")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strikeflow", description="Real-time options analytics pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, module) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name in _WITH_ARGUMENTS:
            importlib.import_module(module).add_arguments(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"strikeflow {args.command}: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json, process=args.command,
                      secrets=settings.secret_values(), diagnose=settings.log_diagnose)
    if args.command == "worker":
        # Faust's worker parses sys.argv itself; give it only its own name.
        sys.argv = sys.argv[:1]
    try:
        return importlib.import_module(COMMANDS[args.command][1]).run(args, settings)
    except ConfigError as exc:
        print(f"strikeflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
