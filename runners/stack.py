"""The local stack: real service processes for integration tests and demos.

``riskpipe stack up|down|status`` (also ``python -m runners.stack``) starts
every service on 127.0.0.1 with a health check, logs and pid files under
``.stack/`` (git-ignored), and writes ``.stack/endpoints.json`` that tests and
scripts read. Services:

* ``moto`` — moto's server mode: the S3, KMS and STS APIs (boto3 and Beam's
  S3 filesystem talk to it over HTTP exactly as they would to AWS).
* ``kafka`` — an Apache Kafka broker in KRaft mode (combined broker +
  controller) run from the Maven Central jars (resolved once with ``mvn`` into
  ``.cache/``), with a TLS-only client listener: a throwaway CA and broker
  certificate are generated at every start, so encryption in transit is
  exercised, not assumed. Needs Java 17 and Maven.

``up`` is idempotent (a healthy running service is kept); ``down`` stops what
``up`` started. A service that does not become healthy in time fails ``up``
with the last lines of its log.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = pathlib.Path(os.environ.get("RISKPIPE_CACHE_DIR", ROOT / ".cache"))
KAFKA_VERSION = "4.1.0"
_KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>riskpipe.local</groupId><artifactId>kafka-broker-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{v}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{v}</version></dependency>
  </dependencies>
</project>
"""
STATE = pathlib.Path(os.environ.get("RISKPIPE_STACK_DIR", ROOT / ".stack"))
ENDPOINTS = STATE / "endpoints.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _moto_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=2) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except OSError:
        return False


def _read_endpoints() -> dict:
    if ENDPOINTS.exists():
        return json.loads(ENDPOINTS.read_text())
    return {}


def _moto_binary() -> str:
    candidate = pathlib.Path(sys.executable).with_name("moto_server")
    found = str(candidate) if candidate.exists() else shutil.which("moto_server")
    if not found:
        raise RuntimeError("moto_server not found: install the dev extra (pip install -e '.[dev]')")
    return found


def up(services=("moto", "kafka")) -> dict:
    STATE.mkdir(parents=True, exist_ok=True)
    endpoints = _read_endpoints()
    if "moto" in services:
        _moto_up(endpoints)
    if "kafka" in services:
        _kafka_up(endpoints)
    return endpoints


def _moto_up(endpoints: dict, timeout: float = 30.0) -> None:
    moto = endpoints.get("moto")
    if moto and _alive(moto["pid"]) and _moto_healthy(moto["url"]):
        print(f"moto: already running at {moto['url']}")
        return
    port = _free_port()
    log = open(STATE / "moto.log", "ab")
    proc = subprocess.Popen(
        [_moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    info = {"pid": proc.pid, "url": url, "region": "us-east-1"}
    _wait_healthy("moto", proc, lambda: _moto_healthy(url), info, endpoints, timeout, interval=0.3)


def _kafka_jars() -> pathlib.Path:
    """The broker's jars for KAFKA_VERSION, resolved once from Maven Central into the cache."""
    lib = CACHE / f"kafka-{KAFKA_VERSION}" / "lib"
    if (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return lib
    if not shutil.which("mvn") or not shutil.which("java"):
        raise RuntimeError("the Kafka broker needs Java 17 and Maven (mvn) on PATH")
    lib.mkdir(parents=True, exist_ok=True)
    pom = lib.parent / "pom.xml"
    pom.write_text(_KAFKA_POM.format(v=KAFKA_VERSION))
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError("resolving the Kafka jars failed:\n" + (result.stdout + result.stderr)[-2000:])
    return lib


def _write_tls(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A throwaway CA and a broker certificate for 127.0.0.1/localhost (PEM); returns (ca, keystore)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "riskpipe local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, keystore = folder / "ca.pem", folder / "broker.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            pem_key
            + cert.public_bytes(serialization.Encoding.PEM)
            + ca.public_bytes(serialization.Encoding.PEM)
        )
    return ca_path, keystore


def _kafka_healthy(bootstrap: str, ca: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        # a plain TCP connect first: a client created before the port listens keeps retrying in
        # the background and prints its failures when the process exits
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca}
        )
        return bool(admin.list_topics(timeout=3).brokers)
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _kafka_up(endpoints: dict, timeout: float = 90.0) -> None:
    kafka = endpoints.get("kafka")
    if kafka and _alive(kafka["pid"]) and _kafka_healthy(kafka["bootstrap"], kafka["ca"]):
        print(f"kafka: already running at {kafka['bootstrap']} (TLS)")
        return
    lib = _kafka_jars()
    home = STATE / "kafka"
    shutil.rmtree(home, ignore_errors=True)
    ca, keystore = _write_tls(home / "tls")
    port, controller = _free_port(), _free_port()
    props = home / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                f"listeners=SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=SSL://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=SSL",
                "listener.security.protocol.map=SSL:SSL,CONTROLLER:PLAINTEXT",
                f"log.dirs={home / 'data'}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={keystore}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={ca}",
                "ssl.endpoint.identification.algorithm=https",
                "auto.create.topics.enable=false",
                "",
            ]
        )
    )
    classpath = f"{lib}/*"
    java = ["java", "-Xmx512m", "-cp", classpath]
    cluster = subprocess.run(
        [*java, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True, check=True
    )
    cluster_id = cluster.stdout.strip().splitlines()[-1]
    subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "--standalone"],
        capture_output=True,
        text=True,
        check=True,
    )
    log = open(STATE / "kafka.log", "ab")
    proc = subprocess.Popen(
        [*java, "kafka.Kafka", str(props)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    bootstrap = f"127.0.0.1:{port}"
    info = {"pid": proc.pid, "bootstrap": bootstrap, "ca": str(ca), "security_protocol": "SSL"}
    _wait_healthy(
        "kafka", proc, lambda: _kafka_healthy(bootstrap, str(ca)), info, endpoints, timeout, interval=1.0
    )


def _wait_healthy(
    name: str, proc, healthy, info: dict, endpoints: dict, timeout: float, interval: float
) -> None:
    """Wait for a started service; record it in endpoints.json, or kill it and raise with its log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if healthy():
            endpoints[name] = info
            ENDPOINTS.write_text(json.dumps(endpoints, indent=2))
            where = info.get("url") or info.get("bootstrap")
            print(f"{name}: healthy at {where} (pid {proc.pid}, log {STATE / (name + '.log')})")
            return
        time.sleep(interval)
    tail = (STATE / f"{name}.log").read_text(errors="replace").splitlines()[-20:]
    proc.kill()
    raise RuntimeError(f"{name} did not become healthy:\n" + "\n".join(tail))


def down() -> None:
    endpoints = _read_endpoints()
    for name, info in endpoints.items():
        pid = info.get("pid")
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
            print(f"{name}: stopped (pid {pid})")
    if ENDPOINTS.exists():
        ENDPOINTS.unlink()


def status() -> int:
    endpoints = _read_endpoints()
    healthy = True
    checks = {
        "moto": lambda i: _moto_healthy(i["url"]),
        "kafka": lambda i: _kafka_healthy(i["bootstrap"], i["ca"]),
    }
    for name, check in checks.items():
        info = endpoints.get(name)
        ok = bool(info) and _alive(info["pid"]) and check(info)
        healthy &= ok
        where = info.get("url") or info.get("bootstrap") if info else ""
        print(f"{name}: {'healthy at ' + where if ok else 'not running'}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="riskpipe stack", description="start/stop the local service stack")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument(
        "--only", action="append", choices=("moto", "kafka"), help="start only these services"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            up(tuple(args.only) if args.only else ("moto", "kafka"))
        elif args.action == "down":
            down()
        else:
            return status()
    except RuntimeError as err:
        print(f"riskpipe stack: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
