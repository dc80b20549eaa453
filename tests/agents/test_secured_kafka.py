"""The pipeline on a secured Apache Kafka: a SASL_SSL listener with a certificate signed by a CA this test
makes, and a SCRAM-SHA-512 user created by Kafka's own storage tool from the same jars. The ingestor and
the worker deliver over it, ``top`` reads the lag over it, and a wrong password or an untrusted
certificate is one clear line and exit 2; the password is in no log, no metrics page and no /ready."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from worker_helpers import start_worker, stop_workers, wait_for, worker_env

from pipeline.commands.local_kafka import (
    KafkaBroker,
    KafkaListener,
    kafka_available,
    start_kafka,
)
from pipeline.commands.local_services import free_port
from sinks.migrate import migrate

pytestmark = pytest.mark.integration

USER = "strikeflow-ingest"


@dataclass(frozen=True)
class SecuredBroker:
    broker: KafkaBroker
    url: str  # the SASL_SSL listener
    ca_file: Path
    other_ca_file: Path  # a CA that signed nothing of the broker's
    password: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certificates(tmp: Path, store_password: str) -> None:
    """ca.pem (and other-ca.pem), and the broker's PKCS#12 keystore for 127.0.0.1/localhost."""
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=strikeflow test {ca}", cwd=tmp)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=localhost", cwd=tmp)
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", "2", "-extfile", "san.ext", cwd=tmp)
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-out", "broker.p12",
             "-passout", f"pass:{store_password}", cwd=tmp)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    if kafka_available() is not None:
        pytest.skip(f"a SASL_SSL listener needs Apache Kafka: {kafka_available()}")
    tmp = tmp_path_factory.mktemp("secured-kafka")
    store_password, password = secrets.token_hex(8), f"pw-{secrets.token_hex(12)}"
    _make_certificates(tmp, store_password)
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    port = free_port()
    listener = KafkaListener("SASL_SSL", "SASL_SSL", port, {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
        "listener.name.sasl_ssl.ssl.keystore.location": str(tmp / "broker.p12"),
        "listener.name.sasl_ssl.ssl.keystore.password": store_password,
        "listener.name.sasl_ssl.ssl.key.password": store_password,
    })
    broker = start_kafka(tmp / "logs", data_dir=tmp / "data", listeners=(listener,),
                         format_args=("--add-scram", f"SCRAM-SHA-512=[name={USER},password={password}]"))
    try:
        yield SecuredBroker(broker, f"kafka://127.0.0.1:{port}", tmp / "ca.pem", tmp / "other-ca.pem", password)
    finally:
        broker.process.stop()


def _security_env(secured: SecuredBroker, password: str | None = None, ca_file: Path | None = None) -> dict[str, str]:
    return {"STRIKEFLOW_KAFKA_URL": secured.url, "STRIKEFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STRIKEFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "STRIKEFLOW_KAFKA_USERNAME": USER,
            "STRIKEFLOW_KAFKA_PASSWORD": password or secured.password,
            "STRIKEFLOW_KAFKA_CA_FILE": str(ca_file or secured.ca_file)}


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:  # /ready answers 503 while not ready: its body still counts
        return exc.read().decode()


async def test_ingest_worker_and_top_over_sasl_ssl_never_show_the_password(
    secured: SecuredBroker, kite_simulator, pg_dsn: str, pg_schema: str, redis_url: str, unique_name: str,
    tmp_path: Path,
) -> None:  # noqa: ANN001
    await migrate(pg_dsn, pg_schema)
    _, addr = await kite_simulator(rate=300)
    web_port, ingest_port = free_port(), free_port()
    env = worker_env(secured.url, pg_dsn, pg_schema, redis_url, unique_name, **_security_env(secured),
                     STRIKEFLOW_WEB_PORT=str(web_port), STRIKEFLOW_DATA_DIR=str(tmp_path / "data"),
                     STRIKEFLOW_UNDERLYINGS='["NIFTY"]', STRIKEFLOW_EXPIRIES="1", STRIKEFLOW_STRIKES_AROUND_ATM="2")
    with open(tmp_path / "ingest.log", "wb") as out:
        ingest = subprocess.Popen([sys.executable, "-m", "pipeline.commands.cli", "ingest", "--ws-url", f"ws://{addr}",
                                   "--api-url", f"http://{addr}", "--metrics-port", str(ingest_port)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        async def bars_written() -> bool:
            conn = await asyncpg.connect(pg_dsn)
            try:
                return await conn.fetchval(f'SELECT count(*) FROM "{pg_schema}".bars_1m') >= 3
            finally:
                await conn.close()

        await wait_for(bars_written, 120, "bars through the SASL_SSL broker")
        pages = [_get(f"http://127.0.0.1:{web_port}/ready"), _get(f"http://127.0.0.1:{web_port}/metrics"),
                 _get(f"http://127.0.0.1:{ingest_port}/metrics"), _get(f"http://127.0.0.1:{ingest_port}/ready")]
        top = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.commands.cli", "top", "--once", "--json", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        top_out, _ = await asyncio.wait_for(top.communicate(), timeout=60)
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(20)
        stop_workers([worker])
    view = json.loads(top_out.decode().strip().splitlines()[-1])
    assert f"{unique_name}-ticks" in view["consumer_lag"], view  # read over SASL_SSL, not the {} of "unreachable"
    logs = (tmp_path / "ingest.log").read_text(errors="replace") + (tmp_path / "worker.log").read_text(errors="replace")
    assert "idempotent: True" in logs, logs[-3000:]  # Apache Kafka has the idempotent producer
    for text in [logs, top_out.decode(), *pages]:
        assert secured.password not in text


@pytest.mark.parametrize("fault", ["wrong password", "untrusted certificate"])
async def test_worker_refused_by_the_broker_exits_2_with_one_line(
    secured: SecuredBroker, pg_dsn: str, pg_schema: str, redis_url: str, unique_name: str, tmp_path: Path, fault: str,
) -> None:
    await migrate(pg_dsn, pg_schema)
    security = (_security_env(secured, password="not-the-password") if fault == "wrong password"
                else _security_env(secured, ca_file=secured.other_ca_file))
    env = worker_env(secured.url, pg_dsn, pg_schema, redis_url, unique_name, **security,
                     STRIKEFLOW_WEB_PORT=str(free_port()), STRIKEFLOW_DATA_DIR=str(tmp_path / "data"))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pipeline.commands.cli", "worker", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    stderr = err.decode(errors="replace")
    assert proc.returncode == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    expected = "refused user" if fault == "wrong password" else "is not trusted"
    assert expected in last and last.startswith("strikeflow worker: configuration error"), last
    assert "Traceback" not in stderr
    assert secured.password not in stderr + out.decode() and "not-the-password" not in stderr + out.decode()
