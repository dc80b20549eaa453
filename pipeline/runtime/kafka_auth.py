"""How every Kafka client of strikeflow connects: the security settings, turned into client options once.

The ingestor's producer, the topic administration, ``top`` and ``bench`` (aiokafka clients) take
:func:`client_options`; the worker gives Faust :func:`faust_credentials` (Faust hands the same options to
its aiokafka clients). Settings (README, "Secured brokers"):

- ``STRIKEFLOW_KAFKA_SECURITY_PROTOCOL``: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL;
- ``STRIKEFLOW_KAFKA_SASL_MECHANISM``: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, with
  ``STRIKEFLOW_KAFKA_USERNAME`` and ``STRIKEFLOW_KAFKA_PASSWORD`` (a secret: redacted from every log line);
- ``STRIKEFLOW_KAFKA_CA_FILE`` (else the system's trust store), and for mutual TLS
  ``STRIKEFLOW_KAFKA_CERT_FILE`` + ``STRIKEFLOW_KAFKA_KEY_FILE`` (+ ``STRIKEFLOW_KAFKA_KEY_PASSWORD``).

Host names are verified against the brokers' certificates; there is no setting to turn that off.
"""

from __future__ import annotations

import ssl

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from pipeline.runtime.settings import ConfigError, Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL/SASL_SSL (None otherwise); a :class:`ConfigError` for unreadable files."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    try:
        context = ssl.create_default_context(cafile=str(settings.kafka_ca_file) if settings.kafka_ca_file else None)
        if settings.kafka_cert_file is not None:
            password = settings.kafka_key_password.get_secret_value() if settings.kafka_key_password else None
            context.load_cert_chain(str(settings.kafka_cert_file), str(settings.kafka_key_file), password)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"configuration error: STRIKEFLOW_KAFKA_CA_FILE/CERT_FILE/KEY_FILE: cannot load "
                          f"({type(exc).__name__}: {getattr(exc, 'reason', None) or exc.strerror or exc})") from None
    return context


def client_options(settings: Settings) -> dict[str, object]:
    """Keyword arguments for any aiokafka client (besides ``bootstrap_servers``)."""
    protocol = settings.kafka_security_protocol
    options: dict[str, object] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_username,
                       sasl_plain_password=settings.kafka_password.get_secret_value() if settings.kafka_password
                       else None)
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the same settings (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(ssl_context(settings))
    password = settings.kafka_password.get_secret_value() if settings.kafka_password else None
    return SASLCredentials(username=settings.kafka_username, password=password,
                           ssl_context=ssl_context(settings), mechanism=settings.kafka_sasl_mechanism)
