import pytest

from pipeline.runtime.backoff import Backoff, retry_forever

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


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 1.0


def test_backoff_jitter_spreads_each_delay_within_its_band() -> None:
    bounds = []
    backoff = Backoff(1.0, 30.0, jitter=0.2, uniform=lambda lo, hi: bounds.append((lo, hi)) or hi)
    assert [backoff.next() for _ in range(3)] == [1.2, 2.4, 4.8]
    assert bounds == [(0.8, 1.2)] * 3


@pytest.mark.parametrize("args", [(0.0, 1.0), (2.0, 1.0), (1.0, 2.0, 1.0)])
def test_backoff_rejects_bad_bounds_clearly(args) -> None:
    start, cap, *jitter = args
    with pytest.raises(ValueError, match="backoff"):
        Backoff(start, cap, jitter=jitter[0] if jitter else 0.0)
