"""The Kafka security settings: checked at load time in one line, and turned into client options once."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from pipeline.runtime.kafka_auth import client_options, faust_credentials
from pipeline.runtime.settings import ConfigError, Settings, load_settings

pytestmark = pytest.mark.unit


def _settings(**overrides: object) -> Settings:
    return load_settings(kafka_url="kafka://broker:9093", **overrides)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "SASL_SSL needs STRIKEFLOW_KAFKA_USERNAME and STRIKEFLOW_KAFKA_PASSWORD"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_username": "u"}, "needs STRIKEFLOW_KAFKA_USERNAME and"),
    ({"kafka_security_protocol": "SSL", "kafka_ca_file": "/nonexistent/ca.pem"}, "no such file: /nonexistent/ca.pem"),
    ({"kafka_security_protocol": "SSL", "kafka_cert_file": __file__}, "set both STRIKEFLOW_KAFKA_CERT_FILE and"),
    ({"kafka_ca_file": __file__}, "does not use TLS: set it to SSL or SASL_SSL"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI", "kafka_username": "u",
      "kafka_password": "p"}, "STRIKEFLOW_KAFKA_SASL_MECHANISM"),
])
def test_inconsistent_security_settings_are_one_line_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _settings(**overrides)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_sasl_ssl_options_carry_mechanism_user_and_a_verifying_context() -> None:
    settings = _settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                         kafka_username="alice", kafka_password="s3cret")
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "alice" and options["sasl_plain_password"] == "s3cret"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED  # never turned off
    credentials = faust_credentials(settings)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-256"
    assert "s3cret" not in repr(credentials) and "s3cret" in settings.secret_values()


def test_plaintext_has_no_tls_and_no_credentials() -> None:
    settings = _settings()
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_unreadable_ca_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    settings = _settings(kafka_security_protocol="SSL", kafka_ca_file=str(bad))
    with pytest.raises(ConfigError, match=r"STRIKEFLOW_KAFKA_CA_FILE/CERT_FILE/KEY_FILE: cannot load"):
        client_options(settings)
