import pytest

from pipeline.feed.sharding import Shard, ShardingError, plan_shards, reassign

pytestmark = pytest.mark.unit


def test_small_universe_fits_one_connection_with_companions() -> None:
    shards = plan_shards({"NIFTY": [10, 11, 12]}, {"NIFTY": [1, 2]}, n_accounts=1)
    assert len(shards) == 1
    assert sorted(shards[0].tokens) == [1, 2, 10, 11, 12]


def test_options_split_over_connections_each_with_companions() -> None:
    options = {"NIFTY": list(range(100, 124))}
    shards = plan_shards(options, {"NIFTY": [1, 2]}, n_accounts=1, max_tokens=10, max_connections=3)
    assert len(shards) == 3
    for shard in shards:
        assert len(shard.tokens) <= 10
        assert {1, 2} <= set(shard.tokens)
    covered = sorted(t for s in shards for t in s.tokens if t >= 100)
    assert covered == options["NIFTY"]


def test_two_underlyings_share_a_connection_when_they_fit() -> None:
    shards = plan_shards({"NIFTY": [10, 11], "BANKNIFTY": [20, 21]}, {"NIFTY": [1], "BANKNIFTY": [2]}, 1, max_tokens=10)
    assert len(shards) == 1
    assert sorted(shards[0].tokens) == [1, 2, 10, 11, 20, 21]


def test_shards_are_dealt_round_robin_over_accounts() -> None:
    shards = plan_shards({"NIFTY": list(range(100, 130))}, {"NIFTY": [1]}, n_accounts=2, max_tokens=11)
    assert [s.account for s in shards] == [0, 1, 0]


def test_universe_beyond_limits_is_a_clear_error() -> None:
    with pytest.raises(ShardingError, match="needs 4 connections but 1 account"):
        plan_shards({"NIFTY": list(range(100, 140))}, {"NIFTY": [1]}, n_accounts=1, max_tokens=11, max_connections=3)


def test_no_account_is_a_clear_error() -> None:
    with pytest.raises(ShardingError, match="KITE_API_KEY"):
        plan_shards({"NIFTY": [1]}, {}, n_accounts=0)


def test_reassign_moves_failed_account_to_least_loaded_healthy() -> None:
    shards = [Shard(0, [1]), Shard(1, [2]), Shard(0, [3])]
    moved = reassign(shards, failed=0, healthy=[1, 2], max_connections=3)
    assert [s.account for s in moved] == [2, 1, 1]
    assert [s.tokens for s in moved] == [[1], [2], [3]]


def test_reassign_without_free_slot_raises() -> None:
    shards = [Shard(0, [1]), Shard(1, [2])]
    with pytest.raises(ShardingError, match="no other account"):
        reassign(shards, failed=0, healthy=[1], max_connections=1)
