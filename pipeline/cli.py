"""The ``strikeflow`` command: one subcommand per process type (see the Procfile).

Every subcommand loads and validates the settings first; a configuration
problem ends the program with exit code 2 and one line on stderr that names
the setting and the fix (never a traceback, never a secret).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from pipeline.logs import configure_logging
from pipeline.settings import ConfigError, Settings, load_settings, redact_url


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import simulator

    return simulator.run(args)


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import ingest

    return ingest.run(args, settings)


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from pipeline.app import create_app

    for name, value in (("STRIKEFLOW_KAFKA_URL", settings.kafka_url), ("STRIKEFLOW_PG_DSN", settings.pg_dsn),
                        ("STRIKEFLOW_REDIS_URL", settings.redis_url)):
        if value is None:
            raise ConfigError(f"configuration error: {name}: not set; the worker needs Kafka, PostgreSQL and Redis "
                              "(or run `strikeflow demo`, which starts them)")
    _check_port_free("STRIKEFLOW_WEB_PORT", settings.web_host, settings.web_port)
    app = create_app(settings)
    # Web bind address and port come from the app's configuration (127.0.0.1 unless configured).
    level = {"TRACE": "debug", "SUCCESS": "info", "CRITICAL": "crit", "WARNING": "warn"}.get(settings.log_level, settings.log_level.lower())
    worker = faust.Worker(app, loglevel=level, override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def _check_port_free(setting: str, host: str, port: int) -> None:
    """Faust would fail deep inside its start-up on a taken port: say so in one line first."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"configuration error: {setting}: cannot listen on {host}:{port} "
                              f"({exc.strerror or exc}); choose another port") from None


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    import asyncpg

    from sinks.migrate import migrate

    if settings.pg_dsn is None:
        raise ConfigError("configuration error: STRIKEFLOW_PG_DSN: not set; migrate needs postgresql://user@host/db")
    dsn = settings.pg_dsn.get_secret_value()
    try:
        report = asyncio.run(migrate(dsn, settings.pg_schema))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        # one line, the DSN without its password, the error's kind (its text may carry the DSN)
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, asyncpg.PostgresError) else type(exc).__name__
        print(f"strikeflow migrate: cannot migrate PostgreSQL {redact_url(dsn)} ({detail})", file=sys.stderr)
        return 1
    print(report)
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import demo

    return demo.run(args, settings)


def _cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import top

    return top.run(args, settings)


def _add_top(parser: argparse.ArgumentParser) -> None:
    from pipeline import top

    top.add_arguments(parser)


def _add_simulate(parser: argparse.ArgumentParser) -> None:
    from pipeline import simulator

    simulator.add_arguments(parser)


def _add_ingest(parser: argparse.ArgumentParser) -> None:
    from pipeline import ingest

    ingest.add_arguments(parser)


def _add_demo(parser: argparse.ArgumentParser) -> None:
    from pipeline import demo

    demo.add_arguments(parser)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None,
                          Callable[[argparse.Namespace, Settings], int]]] = {
    "simulate": ("local Kite-compatible market (WebSocket + instruments REST)", _add_simulate, _cmd_simulate),
    "ingest": ("connect to Kite (or the simulator) and feed the Kafka ticks topic", _add_ingest, _cmd_ingest),
    "worker": ("the Faust worker (process + store agents)", None, _cmd_worker),
    "migrate": ("create/upgrade the database schema", None, _cmd_migrate),
    "demo": ("run the whole pipeline on embedded services and print a summary", _add_demo, _cmd_demo),
    "top": ("live backpressure view for on-call (rates, buffers, consumer lag)", _add_top, _cmd_top),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strikeflow", description="Real-time options analytics pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if add_arguments is not None:
            add_arguments(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"strikeflow {args.command}: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json, process=args.command)
    if args.command == "worker":
        # Faust's worker parses sys.argv itself; give it only its own name.
        sys.argv = sys.argv[:1]
    try:
        return COMMANDS[args.command][2](args, settings)
    except ConfigError as exc:
        print(f"strikeflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
