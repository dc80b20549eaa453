"""Two demos never share (and reset) one schema: sinks.demo_queries.SchemaLock on a real PostgreSQL."""

import pytest

from sinks.demo_queries import SchemaLock

pytestmark = pytest.mark.integration


def test_second_lock_on_a_schema_is_refused_until_the_first_is_released(pg_dsn: str, unique_name: str) -> None:
    first = SchemaLock(pg_dsn, unique_name)
    second = SchemaLock(pg_dsn, unique_name)
    other = SchemaLock(pg_dsn, f"{unique_name}_other")
    try:
        assert first.acquire()
        assert not second.acquire()
        assert other.acquire()  # another schema is free
    finally:
        first.release()
        second.release()
        other.release()
    again = SchemaLock(pg_dsn, unique_name)
    try:
        assert again.acquire()
    finally:
        again.release()
