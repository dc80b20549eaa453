"""The one frozen, typed settings object, read once at start-up and passed in.

Sources, highest priority first: keyword overrides (tests, the CLI), the
process environment (``STRIKEFLOW_*``, plus ``KITE_API_KEY`` and
``KITE_ACCESS_TOKEN``), a ``.env`` file in the working directory, and a TOML
file named by ``STRIKEFLOW_CONFIG`` (see ``config/strikeflow.example.toml``).

Nothing imports a global settings instance: entry points call
:func:`load_settings` and hand the result down. A bad value raises
:class:`ConfigError` whose message is one line naming the setting and the fix;
secrets (access tokens, passwords inside URLs) never appear in it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.runtime.redaction import redact_url

ENV_PREFIX = "STRIKEFLOW_"


class ConfigError(Exception):
    """Invalid or missing configuration; ``str()`` is a single actionable line."""


class KiteAccount(BaseModel):
    """One Kite Connect login. Each account may hold up to 3 WebSocket connections."""

    model_config = {"frozen": True}

    api_key: str = Field(min_length=1)
    access_token: SecretStr


class Settings(BaseSettings):
    """Everything configurable, with production defaults. Frozen: pass it, don't mutate it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # --- services (unset: `strikeflow demo` and the tests start local ones) ---
    kafka_url: str | None = Field(None, description="Kafka bootstrap, e.g. kafka://broker1:9092;broker2:9092")
    pg_dsn: SecretStr | None = Field(None, description="PostgreSQL/TimescaleDB DSN, postgresql://user:pw@host/db")
    pg_schema: str = "public"
    redis_url: SecretStr | None = Field(None, description="redis://[:password@]host:6379/0")

    # --- Kite ---
    kite_api_key: str | None = Field(None, validation_alias=AliasChoices("KITE_API_KEY", "STRIKEFLOW_KITE_API_KEY"))
    kite_access_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("KITE_ACCESS_TOKEN", "STRIKEFLOW_KITE_ACCESS_TOKEN")
    )
    kite_accounts: tuple[KiteAccount, ...] = Field(
        (), description="extra accounts as JSON: [{\"api_key\": ..., \"access_token\": ...}]"
    )
    kite_ws_url: str = "wss://ws.kite.trade"
    kite_api_url: str = "https://api.kite.trade"
    kite_max_tokens_per_connection: int = Field(3000, ge=1, le=3000)
    kite_max_connections_per_key: int = Field(3, ge=1, le=3)
    kite_silence_timeout_s: float = Field(5.0, gt=0, description="no data or heartbeat for this long = dead socket")
    kite_mute_timeout_s: float = Field(30.0, gt=0, description="a connection with heartbeats but no data for this long while another connection of the ingestor has data is open but mute: reconnect it")
    market_date: dt.date | None = Field(None, description="the market's today (YYYY-MM-DD) for `strikeflow simulate` (it runs that day's session, or the last trading day's before it) and for the expiries `ingest` selects; unset = today's date in IST. The tests pin it, so that no outcome depends on the day they run")

    # --- universe ---
    underlyings: tuple[str, ...] = ("NIFTY", "BANKNIFTY")
    vix_roll_days: float = Field(3.0, ge=0, description="the volatility index rolls from the near expiry to the next two this many calendar days before it")
    vix_min_strikes: int = Field(3, ge=1, le=50, description="the volatility index needs at least this many out-of-the-money puts and as many calls with non-zero bids on each side of k0, per expiry; fewer: no row for that minute (counted in strikeflow_vol_index_skipped_total)")
    expiries: int = Field(2, ge=1, le=12, description="nearest expiries per underlying")
    strikes_around_atm: int | None = Field(None, ge=0, le=500, description="strikes each side of the money to subscribe; unset (the default) = every listed strike of the chosen expiries, so PCR, max pain and OI totals cover the whole chain, narrowed from the farthest strikes only when the connection budget cannot hold them (logged; chain rows show strikes_covered < strikes_listed)")

    # --- analytics ---
    risk_free_rate: float = Field(0.065, ge=-0.05, le=0.5, description="annual, continuously compounded")
    fresh_s: float = Field(60.0, gt=0, le=3600, description="exchange-time seconds a trade or quote stays fresh: older futures and quotes never set a forward, options whose last trade is older are flagged stale")
    max_spread: float = Field(0.10, gt=0, le=2, description="widest ask - bid, as a fraction of the mid, for a quote's mid to count (mid_iv, parity)")
    parity_strikes: int = Field(5, ge=1, le=50, description="strikes nearest the money whose fresh mids the parity forward combines (median)")
    near_expiry_s: float = Field(1800.0, ge=0, le=86400, description="IVs within this many seconds before 15:30 IST on expiry day are flagged near_expiry")
    bar_intervals_s: tuple[int, ...] = (60, 300, 900)
    max_clock_skew_s: float = Field(300.0, gt=0, description="a tick whose exchange time is more than this many seconds ahead of its receive time is rejected (counted in strikeflow_ticks_rejected_total) before it can move event time: one far-future tick would otherwise make every later tick too late. A simulator run faster than the clock (the demo) raises it")
    bar_grace_s: int = Field(2, ge=0, le=300, description="event-time seconds a bar waits for stragglers")
    late_window_s: int = Field(60, ge=0, le=3600, description="event-time seconds after a bar closes in which a late tick still corrects it; older ones are dropped and counted. The worker keeps every tick of this window (40 bytes each) in memory and in its checkpoints: at 10,000 ticks/s, 60 s is ~48 MB, 300 s ~144 MB")
    store_ticks: bool = False
    checkpoint_interval_s: float = Field(5.0, gt=0, le=300, description="how often the process agent checkpoints its state (and so acks what it processed); committed offsets trail the head by about this plus Faust's commit interval")
    redis_max_tick_age_s: float = Field(60.0, gt=0, description="live ticks received longer ago are not published (replays)")
    redis_per_instrument: bool = Field(False, description="also publish each instrument's latest tick on tick:<token>")

    # --- Kafka / Faust ---
    app_id: str = "strikeflow"
    ticks_topic: str = "ticks"
    bars_topic: str = "bars"
    topic_partitions: int = Field(4, ge=1)
    topic_replication_factor: int = Field(1, ge=1, description="3 on a production cluster")
    ticks_retention_hours: float = Field(168.0, gt=0, description="retention of the ticks topic when strikeflow creates it: a trading day can be replayed from it through the following week")
    bars_retention_hours: float = Field(168.0, gt=0, description="retention of the bars, rollups and priced-ticks topics when strikeflow creates them (TimescaleDB is their durable home)")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT", description="how every Kafka client connects; managed clusters almost always want SASL_SSL")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    kafka_ca_file: Path | None = Field(None, description="PEM file of the CA(s) that signed the brokers' certificates; unset = the system's trust store")
    kafka_cert_file: Path | None = Field(None, description="PEM client certificate, for brokers that require one (mutual TLS)")
    kafka_key_file: Path | None = Field(None, description="PEM private key of kafka_cert_file")
    kafka_key_password: SecretStr | None = None
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field("zstd", description="codec of the ingestor's produced batches: zstd stores a tick in 21 bytes instead of 69 for 1.7 µs more producer CPU, and is both smaller and cheaper than lz4 here (README, \"Brokers\")")
    kafka_idempotence: bool | None = Field(None, description="idempotent producer: unset = when the broker has one (Apache Kafka), true = required, false = off")
    kafka_session_timeout_s: float = Field(30.0, gt=0)
    kafka_heartbeat_interval_s: float = Field(3.0, gt=0)
    kafka_fetch_max_wait_ms: int = Field(5, ge=0, le=1500, description="how long a worker's fetch may wait on the broker for data; Faust's own 1500 ms makes every fetch on Tansu that slow")
    kafka_rebalance_timeout_s: float = Field(60.0, gt=0)
    ingest_clock_after_s: float = Field(2.0, gt=0, le=600, description="an underlying with no tick for this long (feed alive) gets clock records on the ticks topic, so its bars close on the exchange clock")
    ingest_buffer_max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)

    # --- processes ---
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    ready_data_age_s: float = Field(10.0, gt=0, le=3600, description="/ready of ingest: a connection whose last data frame is older is not ready (silent feed)")
    ready_stall_s: float = Field(10.0, gt=0, le=3600, description="/ready of the worker: records waiting on a partition and none processed for this long = a stalled consumer")
    dashboard_host: str = Field("127.0.0.1", description="address `strikeflow web` binds; beyond loopback STRIKEFLOW_DASHBOARD_TOKEN is required")
    dashboard_port: int = Field(8088, ge=0, le=65535)
    dashboard_update_interval_s: float = Field(0.25, ge=0, le=60, description="a chain page gets at most one live update per this many seconds; ticks in between are conflated (newest per instrument)")
    dashboard_max_viewers: int = Field(1000, ge=1, le=100_000, description="live chain viewers (WebSockets) the dashboard serves at once; more are refused with 503")
    dashboard_max_viewers_per_chain: int = Field(200, ge=1, le=100_000, description="live viewers of one chain served at once; more are refused with 503")
    dashboard_max_connections: int = Field(2000, ge=2, le=1_000_000, description="open HTTP connections the dashboard keeps at once (viewers included); more are closed at once, so it never runs out of file descriptors (it also stays 64 below the process's descriptor limit)")
    dashboard_request_timeout_s: float = Field(10.0, gt=0, le=3600, description="a dashboard connection that neither completes a request nor is being answered for this long (a half-sent or idle request) is closed")
    dashboard_token: SecretStr | None = Field(None, description="bearer token the dashboard requires of every request when set")
    ingest_metrics_port: int = Field(9108, ge=0, le=65535)
    data_dir: Path = Path(".strikeflow")
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = False
    log_diagnose: bool = Field(False, description="tracebacks show variable values (loguru's diagnose): for debugging only, since values can hold secrets")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        toml_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @field_validator("kafka_url")
    @classmethod
    def _kafka_url_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^(kafka|aiokafka)://[^/\s]+$", value):
            raise ValueError("must look like kafka://host:9092 (several hosts separated by ';')")
        return value

    @field_validator("pg_dsn")
    @classmethod
    def _pg_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @field_validator("dashboard_token", "kite_access_token")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty or blank: set a real value, or unset the variable")
        return value

    @field_validator("underlyings")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one underlying, e.g. NIFTY")
        return tuple(v.strip().upper() for v in value)

    @field_validator("bar_intervals_s")
    @classmethod
    def _intervals(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [v for v in value if v not in (60, 300, 900)]
        if bad or not value:
            raise ValueError(f"supported bar intervals are 60, 300 and 900 seconds, got {list(value)}")
        return tuple(sorted(set(value)))

    @field_validator("pg_schema")
    @classmethod
    def _schema_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ValueError("must be a lower-case SQL identifier like public or strikeflow")
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL") and not (self.kafka_username and self.kafka_password):
            raise ValueError(f"STRIKEFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs STRIKEFLOW_KAFKA_USERNAME and "
                             f"STRIKEFLOW_KAFKA_PASSWORD")
        if (self.kafka_cert_file is None) != (self.kafka_key_file is None):
            raise ValueError("set both STRIKEFLOW_KAFKA_CERT_FILE and STRIKEFLOW_KAFKA_KEY_FILE, or neither")
        for name in ("kafka_ca_file", "kafka_cert_file", "kafka_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"STRIKEFLOW_{name.upper()}: no such file: {path}")
        if not protocol.endswith("SSL") and (self.kafka_ca_file or self.kafka_cert_file):
            raise ValueError(f"Kafka certificate files are set but STRIKEFLOW_KAFKA_SECURITY_PROTOCOL={protocol} "
                             f"does not use TLS: set it to SSL or SASL_SSL")
        return self

    @model_validator(mode="after")
    def _kite_pair(self) -> Settings:
        if self.kite_api_key and self.kite_access_token is None:
            raise ValueError(
                "KITE_API_KEY is set but KITE_ACCESS_TOKEN is not: log in to Kite Connect and export the "
                "day's access token (or unset KITE_API_KEY to use the simulator)"
            )
        if self.kite_access_token is not None and not self.kite_api_key:
            raise ValueError("KITE_ACCESS_TOKEN is set but KITE_API_KEY is not: export both")
        return self

    def kite_accounts_all(self) -> tuple[KiteAccount, ...]:
        """The primary account (if configured) followed by ``kite_accounts``."""
        primary: tuple[KiteAccount, ...] = ()
        if self.kite_api_key and self.kite_access_token is not None:
            primary = (KiteAccount(api_key=self.kite_api_key, access_token=self.kite_access_token),)
        return primary + self.kite_accounts

    def secret_values(self) -> list[str]:
        """Every secret value configured (tokens; of a DSN or URL, the password inside it: the rest of it, host
        and database, is what an operator needs to read in a log), for the logs' redaction."""
        values: list[str] = []
        secrets = [v for _, v in self if isinstance(v, SecretStr)]
        secrets += [a.access_token for a in self.kite_accounts]
        for secret in secrets:
            text = secret.get_secret_value()
            if "://" not in text:
                values.append(text)
                continue
            with contextlib.suppress(ValueError):
                values.append(urlsplit(text).password or "")
        return [v for v in values if v]

    def describe(self) -> dict[str, Any]:
        """A log-safe view of the settings: secrets masked, passwords cut out of URLs."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                value = redact_url(secret) if "://" in secret else "***"
            elif name == "kite_accounts":
                value = [a.api_key for a in value]
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def _env_name(loc: tuple[Any, ...]) -> str:
    """The variable a user sets for the field at ``loc``, with the nested path if any."""
    field = str(loc[0])
    if field in ("KITE_API_KEY", "KITE_ACCESS_TOKEN", "kite_api_key", "kite_access_token"):
        name = field.upper()
    else:
        name = f"{ENV_PREFIX}{field.upper()}"
    for part in loc[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` with one actionable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if first["type"] == "model_type" or not first.get("loc"):
            raise ConfigError(f"configuration error: {message}") from None
        raise ConfigError(f"configuration error: {_env_name(first['loc'])}: {message}") from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML/.env file
        raise ConfigError(f"configuration error: cannot read the configuration file: {exc}") from None
