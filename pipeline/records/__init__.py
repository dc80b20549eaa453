"""Record formats shared by the stages: what goes over Kafka (ticks, bars, rollups), their kinds, the instrument
index and the time units. Pure data definitions; imports nothing above runtime."""
