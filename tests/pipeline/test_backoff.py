import pytest

from pipeline.runtime.backoff import retry_forever

pytestmark = pytest.mark.unit


async def test_retry_forever_retries_listed_errors_with_doubling_capped_delays() -> None:
    calls, delays = [], []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise ConnectionError("down")
        return "up"

    result = await retry_forever(attempt, retry_on=OSError, on_failure=lambda exc, d: delays.append(d),
                                 start_s=0.001, max_s=0.004)
    assert result == "up" and len(calls) == 5
    assert delays == [0.001, 0.002, 0.004, 0.004]


async def test_retry_forever_lets_other_errors_through_untouched() -> None:
    async def attempt() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await retry_forever(attempt, retry_on=OSError, on_failure=lambda exc, d: None)
