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
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from loguru import logger

# One lock for every schema: CREATE EXTENSION is database-wide.
MIGRATE_LOCK_KEY = 0x5354_524B_464C_4F57 & 0x7FFF_FFFF_FFFF_FFFF  # "STRKFLOW"

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FILE_RE = re.compile(r"(\d{4})_([A-Za-z0-9_]+)\.sql")
_REQUIRES_RE = re.compile(r"^--\s*requires:\s*([a-z_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: str  # "0001"
    name: str  # "0001_init"
    sql: str
    requires: frozenset[str]

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
        sql = entry.read_text(encoding="utf-8")
        head = "\n".join(sql.splitlines()[:5])
        found.append(Migration(match.group(1), entry.name[:-4], sql, frozenset(_REQUIRES_RE.findall(head))))
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


async def migrate(dsn: str, schema: str = "public") -> str:
    """Create/upgrade ``schema``; return a one-line report of what was done."""
    check_schema_name(schema)
    migrations = load_migrations()
    q = quote_ident(schema)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK_KEY)
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {q}.schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {r["version"]: r for r in await conn.fetch(f"SELECT version, name, checksum FROM {q}.schema_migrations")}
            ts_schema, mode = await _timescaledb(conn)
            done, skipped, changed = [], [], []
            for m in migrations:
                if m.version in applied:
                    if applied[m.version]["checksum"] != m.checksum:
                        changed.append(m.name)
                    continue
                if "timescaledb" in m.requires and ts_schema is None:
                    skipped.append(m.name)
                    continue
                async with conn.transaction():
                    await conn.execute(render(m.sql, schema, ts_schema))
                    await conn.execute(
                        f"INSERT INTO {q}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        m.version, m.name, m.checksum,
                    )
                logger.info("schema {}: applied migration {}", schema, m.name)
                done.append(m.name)
        finally:
            # Closing the session releases the lock anyway; unlock early when the session is healthy.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK_KEY)
    finally:
        await conn.close()
    for name in changed:
        logger.warning("schema {}: migration {} changed since it was applied (not re-applied)", schema, name)
    parts = [f"applied {', '.join(done)}" if done else "up to date"]
    if skipped:
        parts.append(f"skipped {', '.join(skipped)}")
    if changed:
        parts.append(f"changed since applied: {', '.join(changed)}")
    return f"schema {schema}: {'; '.join(parts)} ({mode})"


__all__ = ["MIGRATE_LOCK_KEY", "Migration", "check_schema_name", "load_migrations", "migrate", "quote_ident", "render"]
