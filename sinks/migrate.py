"""Schema migrations: ordered SQL files from ``sinks/migrations``, applied once each.

``await migrate(dsn, schema)`` creates the schema if missing, then applies every
``NNNN_name.sql`` file (package data) that is not yet recorded in
``<schema>.schema_migrations``, each in its own transaction, in file-name order.
All of it runs under one PostgreSQL advisory lock, so concurrent ``migrate``
calls (two workers starting at once) serialise and the second finds nothing to
do. Running it again is a no-op.

SQL files use placeholders, substituted textually before execution:

- ``{schema}`` -> the quoted schema identifier (``"public"``);
- ``{timescaledb}`` -> the quoted schema the timescaledb extension lives in.

A file whose first lines contain ``-- requires: timescaledb`` is applied only
when the extension is available (``pg_available_extensions``) and can be
created; otherwise it is skipped and *not* recorded, so a later ``migrate``
after installing TimescaleDB turns the plain tables into hypertables.

Every file has a forward part and, after a line ``-- rollback``, the part that
undoes it. ``migrate(dsn, schema, to=N)`` moves the schema to version N: it
rolls back the applied versions above N, newest first, each in its own
transaction (and forgets them), then applies the pending ones up to N; ``to=0``
removes everything the migrations created, ``schema_migrations`` included.
``status`` lists every version with its state; ``schema_problem`` is the
start-up check of ``ingest`` and ``worker``. The checksum recorded for a
version is of its forward part.

Why not Alembic or yoyo: the files are raw SQL with ``{schema}``/``{timescaledb}``
placeholders filled in at apply time (one schema per test, the extension's own
schema), one migration applies only where TimescaleDB is installed and is picked
up later when it is, and everything runs on asyncpg; Alembic would bring
SQLAlchemy and a second, synchronous driver for a list of SQL files, and yoyo
its own drivers and no placeholders. This module is those rules in ~200 lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
from loguru import logger

# One lock for every schema: CREATE EXTENSION is database-wide.
MIGRATE_LOCK_KEY = 0x5354_524B_464C_4F57 & 0x7FFF_FFFF_FFFF_FFFF  # "STRKFLOW"

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FILE_RE = re.compile(r"(\d{4})_([A-Za-z0-9_]+)\.sql")
_REQUIRES_RE = re.compile(r"^--\s*requires:\s*([a-z_]+)\s*$", re.MULTILINE)
_ROLLBACK_RE = re.compile(r"^--\s*rollback\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: str  # "0001"
    name: str  # "0001_init"
    sql: str  # the forward part
    requires: frozenset[str]
    rollback: str | None = None  # the part after ``-- rollback``; None when the file has none

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_schema_name(schema: str) -> str:
    """``schema`` if it is a plain SQL identifier, else ValueError (it is spliced into SQL)."""
    if not isinstance(schema, str) or not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}: use letters, digits and _ (max 63)")
    return schema


def load_migrations() -> list[Migration]:
    """The migration files shipped in the package, in version order."""
    folder = resources.files("sinks") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE_RE.fullmatch(entry.name)
        if not match:
            continue
        text = entry.read_text(encoding="utf-8")
        marker = _ROLLBACK_RE.search(text)
        sql, rollback = (text[:marker.start()], text[marker.end():]) if marker else (text, None)
        head = "\n".join(sql.splitlines()[:5])
        found.append(Migration(match.group(1), entry.name[:-4], sql, frozenset(_REQUIRES_RE.findall(head)), rollback))
    found.sort(key=lambda m: m.name)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in sinks/migrations: {versions}")
    return found


def render(sql: str, schema: str, timescaledb_schema: str | None = None) -> str:
    """Substitute the placeholders (textually: SQL braces elsewhere are left alone)."""
    out = sql.replace("{schema}", quote_ident(check_schema_name(schema)))
    if "{timescaledb}" in out:
        if timescaledb_schema is None:
            raise ValueError("this migration needs the timescaledb extension schema")
        out = out.replace("{timescaledb}", quote_ident(timescaledb_schema))
    return out


async def _timescaledb(conn: asyncpg.Connection) -> tuple[str | None, str]:
    """(schema of the extension or None, human note)."""
    available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if not available:
        return None, "plain PostgreSQL; timescaledb not available"
    try:
        async with conn.transaction():
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.PostgresError as exc:  # e.g. not in shared_preload_libraries, or no privilege
        logger.warning("timescaledb is available but CREATE EXTENSION failed: {}", exc)
        return None, f"plain PostgreSQL; timescaledb available but not usable ({type(exc).__name__})"
    ext_schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'timescaledb'"
    )
    version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    return ext_schema, f"TimescaleDB {version}"


@dataclass(frozen=True)
class VersionState:
    """One row of ``strikeflow migrate --status``."""

    version: str
    name: str
    state: str  # "applied" | "pending" | "needs timescaledb" | "changed since applied"
    applied_at: dt.datetime | None


async def migrate(dsn: str, schema: str = "public", *, to: int | None = None) -> str:
    """Create/upgrade ``schema`` (all pending migrations), or move it to version ``to`` (rolling back the
    applied versions above it, newest first, then applying the pending ones up to it); returns a one-line
    report. A version without a rollback part, or an unknown ``to``, raises ValueError before any change."""
    check_schema_name(schema)
    migrations = load_migrations()
    if to is not None:
        known = [int(m.version) for m in migrations]
        if to < 0 or (to > 0 and to not in known):
            raise ValueError(f"no migration version {to}: versions are 0 (nothing) and {', '.join(m.version for m in migrations)}")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK_KEY)
        try:
            return await _migrate_locked(conn, schema, migrations, to)
        finally:
            # Closing the session releases the lock anyway; unlock early when the session is healthy.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK_KEY)
    finally:
        await conn.close()


async def _migrate_locked(conn: asyncpg.Connection, schema: str, migrations: list[Migration], to: int | None) -> str:
    q = quote_ident(schema)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
    await conn.execute(f"CREATE TABLE IF NOT EXISTS {q}.schema_migrations ("
                       " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                       " applied_at timestamptz NOT NULL DEFAULT now())")
    applied = {r["version"]: r for r in await conn.fetch(f"SELECT version, name, checksum FROM {q}.schema_migrations")}
    ts_schema, mode = await _timescaledb(conn)
    undo = [m for m in reversed(migrations) if m.version in applied and to is not None and int(m.version) > to]
    missing = [m.name for m in undo if m.rollback is None]
    if missing:
        raise ValueError(f"cannot roll back {', '.join(missing)}: no rollback part")
    done, undone, skipped, changed = [], [], [], []
    for m in undo:
        async with conn.transaction():
            await conn.execute(render(m.rollback or "", schema, ts_schema))
            await conn.execute(f"DELETE FROM {q}.schema_migrations WHERE version = $1", m.version)
        logger.info("schema {}: rolled back migration {}", schema, m.name)
        undone.append(m.name)
    for m in migrations:
        if m.version in applied and m.name not in undone:
            if applied[m.version]["checksum"] != m.checksum:
                changed.append(m.name)
            continue
        if to is not None and int(m.version) > to:
            continue
        if "timescaledb" in m.requires and ts_schema is None:
            skipped.append(m.name)
            continue
        async with conn.transaction():
            await conn.execute(render(m.sql, schema, ts_schema))
            await conn.execute(f"INSERT INTO {q}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                               m.version, m.name, m.checksum)
        logger.info("schema {}: applied migration {}", schema, m.name)
        done.append(m.name)
    if to == 0:
        await conn.execute(f"DROP TABLE IF EXISTS {q}.schema_migrations")
    for name in changed:
        logger.warning("schema {}: migration {} changed since it was applied (not re-applied)", schema, name)
    parts = [f"rolled back {', '.join(undone)}"] if undone else []
    parts.append(f"applied {', '.join(done)}" if done else ("up to date" if not undone else "nothing applied"))
    if skipped:
        parts.append(f"skipped {', '.join(skipped)}")
    if changed:
        parts.append(f"changed since applied: {', '.join(changed)}")
    return f"schema {schema}: {'; '.join(parts)} ({mode})"


async def status(dsn: str, schema: str = "public") -> list[VersionState]:
    """Every shipped migration with its state in ``schema`` (read-only)."""
    check_schema_name(schema)
    conn = await asyncpg.connect(dsn)
    try:
        applied = await _applied(conn, schema)
        timescale = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    finally:
        await conn.close()
    out = []
    for m in load_migrations():
        row = applied.get(m.version)
        if row is not None:
            state = "applied" if row["checksum"] == m.checksum else "changed since applied"
        else:
            state = "needs timescaledb" if "timescaledb" in m.requires and not timescale else "pending"
        out.append(VersionState(m.version, m.name, state, row["applied_at"] if row else None))
    return out


async def _applied(conn: asyncpg.Connection, schema: str) -> dict[str, asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{quote_ident(schema)}.schema_migrations")
    if exists is None:
        return {}
    rows = await conn.fetch(f"SELECT version, checksum, applied_at FROM {quote_ident(schema)}.schema_migrations")
    return {r["version"]: r for r in rows}


async def schema_version(conn: Any, schema: str) -> tuple[str | None, list[str]]:
    """(the newest migration applied to ``schema`` by name, or None; the migrations this code needs, every one
    that does not require TimescaleDB, that it lacks); ``conn`` a connection or a pool."""
    applied = await _applied(conn, schema)
    migrations = load_migrations()
    newest = max((m for m in migrations if m.version in applied), key=lambda m: m.version, default=None)
    return (newest.name if newest else None,
            [m.name for m in migrations if not m.requires and m.version not in applied])


async def schema_problem(dsn: str, schema: str, timeout_s: float = 5.0) -> str | None:
    """The start-up check of ``ingest`` and ``worker``: one line saying what is missing when ``schema`` lacks
    a migration this code needs (every one that does not require TimescaleDB), else None. An unreachable
    database is not a schema problem (None, logged): the processes retry their connections themselves."""
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), timeout_s)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        logger.warning("schema check skipped: PostgreSQL not reachable now ({})", type(exc).__name__)
        return None
    try:
        _, missing = await schema_version(conn, schema)
    finally:
        await conn.close()
    if not missing:
        return None
    return (f"schema {schema} is behind this strikeflow (missing {', '.join(missing)}): "
            "run `strikeflow migrate` first")


__all__ = ["MIGRATE_LOCK_KEY", "Migration", "VersionState", "check_schema_name", "load_migrations", "migrate",
           "quote_ident", "render", "schema_problem", "schema_version", "status"]
