"""The local stack: real service processes for integration tests and demos.

``riskpipe stack up|down|status`` (also ``python -m runners.stack``) starts
every service on 127.0.0.1 with a health check, logs and pid files under
``.stack/`` (git-ignored), and writes ``.stack/endpoints.json`` that tests and
scripts read. Services:

* ``moto`` — moto's server mode: the S3, KMS and STS APIs (boto3 and Beam's
  S3 filesystem talk to it over HTTP exactly as they would to AWS).

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


def up(timeout: float = 30.0) -> dict:
    STATE.mkdir(parents=True, exist_ok=True)
    endpoints = _read_endpoints()
    moto = endpoints.get("moto")
    if moto and _alive(moto["pid"]) and _moto_healthy(moto["url"]):
        print(f"moto: already running at {moto['url']}")
        return endpoints
    port = _free_port()
    log = open(STATE / "moto.log", "ab")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, loopback only
        [_moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _moto_healthy(url):
            endpoints["moto"] = {"pid": proc.pid, "url": url, "region": "us-east-1"}
            ENDPOINTS.write_text(json.dumps(endpoints, indent=2))
            print(f"moto: healthy at {url} (pid {proc.pid}, log {STATE / 'moto.log'})")
            return endpoints
        time.sleep(0.3)
    tail = (STATE / "moto.log").read_text(errors="replace").splitlines()[-15:]
    proc.kill()
    raise RuntimeError("moto did not become healthy:\n" + "\n".join(tail))


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
    for name in ("moto",):
        info = endpoints.get(name)
        ok = bool(info) and _alive(info["pid"]) and _moto_healthy(info["url"])
        healthy &= ok
        print(f"{name}: {'healthy at ' + info['url'] if ok else 'not running'}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="riskpipe stack", description="start/stop the local service stack")
    parser.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            up()
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
