"""Pure computation per underlying: pricing, bars, OI rollups, the ack hold and the TickProcessor.
No I/O and no clock: time comes with the ticks."""
