import pytest

from pipeline.runtime.redaction import redact_url
from pipeline.runtime.settings import ConfigError, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("STRIKEFLOW_") or name.startswith("KITE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_load_without_environment() -> None:
    settings = load_settings()
    assert settings.underlyings == ("NIFTY", "BANKNIFTY")
    assert settings.bar_intervals_s == (60, 300, 900)
    assert settings.kafka_url is None


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception):
        settings.expiries = 5  # type: ignore[misc]


def test_api_key_without_token_names_the_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITE_API_KEY", "abc123")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "KITE_ACCESS_TOKEN" in message and "\n" not in message


def test_bad_kafka_url_names_setting_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIKEFLOW_KAFKA_URL", "http://broker:9092")
    with pytest.raises(ConfigError, match=r"STRIKEFLOW_KAFKA_URL: must look like kafka://host:9092"):
        load_settings()


def test_non_integer_value_names_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIKEFLOW_TOPIC_PARTITIONS", "four")
    with pytest.raises(ConfigError, match="STRIKEFLOW_TOPIC_PARTITIONS"):
        load_settings()


def test_nested_account_error_names_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIKEFLOW_KITE_ACCOUNTS", '[{"api_key": "k2"}]')
    with pytest.raises(ConfigError, match=r"STRIKEFLOW_KITE_ACCOUNTS\[0\]\.access_token"):
        load_settings()


def test_unsupported_bar_interval_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIKEFLOW_BAR_INTERVALS_S", "[60, 120]")
    with pytest.raises(ConfigError, match="60, 300 and 900"):
        load_settings()


def test_secrets_never_appear_in_errors_or_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITE_API_KEY", "key1")
    monkeypatch.setenv("KITE_ACCESS_TOKEN", "tok-SECRET-1")
    monkeypatch.setenv("STRIKEFLOW_PG_DSN", "postgresql://u:pw-SECRET-2@db/x")
    monkeypatch.setenv("STRIKEFLOW_REDIS_URL", "redis://:pw-SECRET-3@cache:6379/0")
    monkeypatch.setenv("STRIKEFLOW_TOPIC_PARTITIONS", "zero")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "SECRET" not in str(err.value)
    monkeypatch.setenv("STRIKEFLOW_TOPIC_PARTITIONS", "2")
    settings = load_settings()
    shown = repr(settings) + str(settings.describe())
    assert "SECRET" not in shown
    assert settings.describe()["pg_dsn"] == "postgresql://u:***@db/x"


def test_toml_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('expiries = 3\nstrikes_around_atm = 4\nunderlyings = ["nifty"]\n')
    monkeypatch.setenv("STRIKEFLOW_CONFIG", str(path))
    monkeypatch.setenv("STRIKEFLOW_STRIKES_AROUND_ATM", "7")
    settings = load_settings()
    assert (settings.expiries, settings.strikes_around_atm, settings.underlyings) == (3, 7, ("NIFTY",))


def test_malformed_toml_is_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("expiries = = 3\n")
    monkeypatch.setenv("STRIKEFLOW_CONFIG", str(path))
    with pytest.raises(ConfigError, match="configuration file"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("redis://:p@h:6379/0", "redis://:***@h:6379/0"),
        ("kafka://h:9092", "kafka://h:9092"),
    ],
)
def test_redact_url_masks_passwords_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown
