"""Spread the subscribed universe over WebSocket connections and accounts (pure).

Kite allows ``max_tokens`` instruments per connection (3000) and
``max_connections`` connections per api_key (3). Every connection that
carries an option of an underlying also carries that underlying's index and
futures ("companions"), so each frame's batch can be priced on its own.
Shards are filled first-fit, then dealt to accounts round-robin; when an
account is rejected, :func:`reassign` moves its shards to accounts with free
connection slots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class ShardingError(ValueError):
    """The universe does not fit the configured accounts' connection limits."""


@dataclass
class Shard:
    """One WebSocket connection's subscription: ``account`` indexes the account list; ``number`` is the
    shard's place in the plan, which names it (every shard holds its underlyings' index and futures, so
    its tokens do not tell two shards apart)."""

    account: int
    tokens: list[int] = field(default_factory=list)
    number: int = 0

    @property
    def name(self) -> str:
        return f"a{self.account}-s{self.number}"


def plan_shards(
    options: Mapping[str, Sequence[int]],
    companions: Mapping[str, Sequence[int]],
    n_accounts: int,
    max_tokens: int = 3000,
    max_connections: int = 3,
) -> list[Shard]:
    """Shards (token lists) covering every option plus its underlying's companions."""
    if n_accounts < 1:
        raise ShardingError("no Kite account configured: set KITE_API_KEY and KITE_ACCESS_TOKEN")
    token_sets: list[list[int]] = []
    for underlying in sorted(set(options) | set(companions)):
        comps = list(dict.fromkeys(companions.get(underlying, ())))
        opts = [t for t in dict.fromkeys(options.get(underlying, ())) if t not in comps]
        room = max_tokens - len(comps)
        if room < 1 and opts:
            raise ShardingError(f"{underlying}: {len(comps)} index/future tokens leave no room per connection")
        if not opts:
            token_sets.append(comps)
            continue
        for start in range(0, len(opts), room):
            chunk = opts[start : start + room]
            placed = False
            for tokens in token_sets:  # first fit: share a connection with another underlying
                if len(tokens) + len(chunk) + len(comps) <= max_tokens:
                    tokens.extend(c for c in comps if c not in tokens)
                    tokens.extend(chunk)
                    placed = True
                    break
            if not placed:
                token_sets.append(comps + chunk)
    capacity = n_accounts * max_connections
    if len(token_sets) > capacity:
        raise ShardingError(
            f"the universe needs {len(token_sets)} connections but {n_accounts} account(s) allow {capacity}: "
            "add accounts (STRIKEFLOW_KITE_ACCOUNTS) or narrow STRIKEFLOW_STRIKES_AROUND_ATM/STRIKEFLOW_EXPIRIES"
        )
    return [Shard(account=i % n_accounts, tokens=tokens, number=i) for i, tokens in enumerate(token_sets)]


def reassign(shards: Sequence[Shard], failed: int, healthy: Sequence[int], max_connections: int = 3) -> list[Shard]:
    """Move the failed account's shards to healthy accounts with free connection slots.

    Raises :class:`ShardingError` when the healthy accounts have no slot left.
    """
    load = {a: sum(1 for s in shards if s.account == a) for a in healthy}
    out = []
    for shard in shards:
        if shard.account != failed:
            out.append(shard)
            continue
        free = [a for a in healthy if a != failed and load[a] < max_connections]
        if not free:
            raise ShardingError(f"account {failed} was rejected and no other account has a free connection slot")
        target = min(free, key=lambda a: load[a])
        load[target] += 1
        out.append(Shard(account=target, tokens=list(shard.tokens), number=shard.number))
    return out
