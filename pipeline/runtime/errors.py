"""The one error policy: is a failure transient (retry with the one backoff) or poison (never retry)?

Transient: the service or its schema will come back, and the same record will then succeed: the network
and timeouts (``OSError``, ``TimeoutError``), a connection closed under us, PostgreSQL's connection,
resource, operator-intervention and transaction-rollback classes (SQLSTATE 08, 53, 57, 40), a read-only
replica during a fail-over (25006), a schema not migrated yet (42P01, 42703, 3F000), Redis connection
errors and timeouts, and the Kafka errors aiokafka flags ``retriable`` (no leader yet, connection
lost). Poison: everything else, above all the record's own content (PostgreSQL's data and
integrity classes 22 and 23, a value Python cannot convert): retrying would fail forever and stall every
record behind it, so the caller counts it, logs it once with its coordinates and sends it to the
dead-letter topic ``<topic>.dlq`` (``agents.dead_letters``).
"""

from __future__ import annotations

import asyncio
from enum import Enum

import asyncpg
import redis.exceptions
from aiokafka.errors import KafkaError

_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40")
_TRANSIENT_SQLSTATES = {"25006", "42P01", "42703", "3F000"}


class ErrorKind(Enum):
    TRANSIENT = "transient"
    POISON = "poison"


def classify(exc: BaseException) -> ErrorKind:
    """Which side of the policy ``exc`` is on (see the module doc)."""
    if isinstance(exc, (OSError, asyncio.TimeoutError, TimeoutError, ConnectionError, asyncpg.InterfaceError,
                        redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return ErrorKind.TRANSIENT
    if isinstance(exc, KafkaError) and exc.retriable:  # aiokafka's own flag: connection lost, no leader yet, ...
        return ErrorKind.TRANSIENT
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES:
            return ErrorKind.TRANSIENT
    return ErrorKind.POISON


def is_transient(exc: BaseException) -> bool:
    return classify(exc) is ErrorKind.TRANSIENT


__all__ = ["ErrorKind", "classify", "is_transient"]
