"""Pure computation per underlying, no I/O and no clock (time comes with the ticks): one engine per
underlying (``engine``) owning its price book slice, bars, rollups, chain quality and volatility index;
``engines`` the worker's set of them and their checkpoints; ``state`` the explicit state format."""
