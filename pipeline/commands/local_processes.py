"""Child processes the local services are made of: started with their log in a file, tied to our life,
stopped by their own PID (SIGTERM, then SIGKILL) when closed, at interpreter exit, or when we die.

Everything here binds or probes 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    log_start: int = 0  # the log's size when this process started (a restart appends to the same file)

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
            match = re.search(pattern, self._own_log())
            if match:
                return match
            if not self.alive():
                break
            time.sleep(0.1)
        raise ServiceStartError(f"{self.name} did not start:\n{self.log_tail()}")

    def _own_log(self) -> str:
        """What this process wrote to its log (not an earlier process's lines in the same file)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_start)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


LIVE: list[ManagedProcess] = []


def _stop_all_at_exit() -> None:
    for proc in reversed(LIVE):
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
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=drop_to(user),
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
        )
    finally:
        log_file.close()
    proc = ManagedProcess(name, popen, log_path, log_start)
    LIVE.append(proc)
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


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when we die, even by SIGKILL, so nothing outlives us."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux/glibc: the atexit and signal paths still stop children


def drop_to(user: str | None):  # noqa: ANN202 - preexec_fn
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
