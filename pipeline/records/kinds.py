"""The two enumerations the records use: what a Kafka batch holds, and what an instrument is.

They are separate types on purpose: a record kind is a wire tag in the batch
header (``pipeline.records.columnar``), an instrument kind is a column of the
instrument index; equal numbers in the two mean nothing.
"""

from __future__ import annotations

from enum import IntEnum


class RecordKind(IntEnum):
    """The ``kind`` byte of a columnar batch: which dtype its rows have (never reuse a value)."""

    TICKS = 1  # pipeline.records.ticks.TICK_DTYPE, topic ``ticks``
    PRICED_TICKS = 2  # PRICED_TICK_DTYPE, topic ``ticks-priced``
    BARS = 3  # pipeline.records.bars.BAR_DTYPE, topic ``bars``
    STRIKE_BARS = 4  # pipeline.records.rollups.STRIKE_BAR_DTYPE, topic ``bars-rollups``
    CHAIN_BARS = 5  # pipeline.records.rollups.CHAIN_BAR_DTYPE, topic ``bars-rollups``
    CLOCK = 6  # pipeline.records.ticks.CLOCK_DTYPE, topic ``ticks``: the exchange clock of a quiet underlying
    VOL_INDEX = 7  # pipeline.records.rollups.VOL_INDEX_DTYPE, topic ``bars-rollups``


class InstrumentKind(IntEnum):
    """``InstrumentIndex.kind`` (uint8): what an instrument is, from Kite's instrument_type/segment."""

    OTHER = 0
    INDEX = 1
    FUT = 2
    CALL = 3
    PUT = 4

    @property
    def type_name(self) -> str:
        """Kite's instrument_type for this kind ('CE', 'PE', 'FUT', 'INDEX'; '' for OTHER)."""
        return _TYPE_NAMES[self]

    @classmethod
    def of_type(cls, instrument_type: str) -> InstrumentKind:
        """The kind of a Kite instrument_type ('CE' -> CALL, ...); OTHER when unknown."""
        return _BY_TYPE.get(instrument_type.upper(), cls.OTHER)


_TYPE_NAMES = {InstrumentKind.OTHER: "", InstrumentKind.INDEX: "INDEX", InstrumentKind.FUT: "FUT",
               InstrumentKind.CALL: "CE", InstrumentKind.PUT: "PE"}
_BY_TYPE = {name: kind for kind, name in _TYPE_NAMES.items() if name}

OPTION_KINDS = (InstrumentKind.CALL, InstrumentKind.PUT)
