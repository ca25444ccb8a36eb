"""Failover: an agent whose nats-server is cut off from the other two of a 3-node cluster
moves to one of them (the same behaviour as ``ymera_core::client::connect_nats``).

The decision is tested on its own; the partition against real nats-servers, cut off as
``ymera chaos`` does it: nftables rules on the loopback of a network namespace the test
makes for itself (it runs itself again under ``unshare --net``), never on the host, never an
address outside 127.0.0.0/8. Without root, ``unshare``, ``nft`` or ``setpriv`` that test is
skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import nats
import pytest

from ymera import Agent
from ymera.agent import (
    FAILOVER_COOLDOWN_S,
    FAILOVER_RETRY_SEARCH_S,
    ClusterView,
    FailoverJudge,
    _Failover,
    parse_info_line,
    probe_server,
)

from .conftest import free_ports, run

NETNS_ENV = "YMERA_PY_FAILOVER_NETNS"
NODE_GROUP_BASE = 63_000
TABLE = "ymera_py_failover_test"
MARK = 0x5950
MOVE_WITHIN_S = 15.0


def view(server_id: str, size: int, cluster: Optional[str] = "ymera") -> ClusterView:
    return ClusterView(server_id=server_id, server_name=server_id, cluster=cluster, size=size)


# ---------------------------------------------------------------------- the decision


def test_info_line_gives_the_advertised_cluster() -> None:
    line = (
        b'INFO {"server_id":"NA","server_name":"n1","cluster":"ymera",'
        b'"connect_urls":["127.0.0.1:4222","127.0.0.1:4223","127.0.0.1:4222"]} \r\n'
    )
    got = parse_info_line(line)
    assert got == ClusterView("NA", "n1", "ymera", 2)
    assert parse_info_line(b'INFO {"server_id":"S"}\r\n') == ClusterView("S", "", None, 1)
    assert parse_info_line(b"-ERR 'x'\r\n") is None
    assert parse_info_line(b"INFO {not json\r\n") is None


def test_a_single_server_or_a_majority_server_stays() -> None:
    single = FailoverJudge(1)
    for _ in range(10):
        assert not single.check(view("S", 1, cluster=None), 0.0)
    majority = FailoverJudge(3)
    for _ in range(10):
        assert not majority.check(view("A", 2), 0.0)
        assert not majority.check(view("A", 3), 0.0)


def test_a_cut_off_server_is_left_for_a_majority_server_and_never_in_a_flap() -> None:
    judge = FailoverJudge(1)
    assert not judge.check(view("A", 3), 0.0)  # learned: a cluster of 3
    assert not judge.check(view("A", 1), 0.0)  # one check is not enough
    assert judge.check(view("A", 1), 0.5)
    candidates = [("127.0.0.1:1", view("A", 1)), ("127.0.0.1:2", view("B", 2)), ("127.0.0.1:3", view("C", 2))]
    assert judge.choose(view("A", 1), candidates) == "127.0.0.1:2"
    judge.moved(1.0)
    assert not judge.check(view("B", 1), 1.5)
    assert not judge.check(view("B", 1), 2.0)
    assert judge.check(view("B", 1), 1.0 + FAILOVER_COOLDOWN_S)


def test_no_move_without_a_server_that_reaches_a_majority() -> None:
    judge = FailoverJudge(3)
    judge.check(view("A", 1), 0.0)
    assert judge.check(view("A", 1), 0.5)
    assert judge.choose(view("A", 1), [("h:2", view("B", 1)), ("h:3", view("C", 1))]) is None
    assert judge.choose(view("A", 1), [("h:4", view("D", 3, cluster="other"))]) is None
    judge.found_none(1.0)
    assert not judge.check(view("A", 1), 1.5)
    assert judge.check(view("A", 1), 1.0 + FAILOVER_RETRY_SEARCH_S)
    # A larger cluster seen raises the majority.
    judge.see(view("E", 5))
    assert judge.majority == 3 and judge.is_minority(view("A", 2))


class _Srv:
    def __init__(self, netloc: str, reconnects: int = 0) -> None:
        from urllib.parse import urlparse

        self.uri = urlparse(f"nats://{netloc}")
        self.reconnects = reconnects


def test_the_reconnect_handler_hands_out_the_choice_once_and_round_robins_otherwise() -> None:
    failover = _Failover(3, reconnect_wait=0.5)
    failover._last_netloc = "h:1"
    pool = [_Srv("h:1"), _Srv("h:2"), _Srv("h:3")]
    failover._next = ("h:3", time.monotonic())
    assert failover.handler(pool, {})[0].uri.netloc == "h:3"
    # Not chosen: the fewest failures, the server just lost last, no pause before a fresh one.
    server, delay = failover.handler(pool, {})
    assert server.uri.netloc == "h:2" and delay == 0.0
    server, delay = failover.handler([_Srv("h:1", 0), _Srv("h:2", 2), _Srv("h:3", 1)], {})
    assert server.uri.netloc == "h:1"
    server, delay = failover.handler([_Srv("h:1", 3), _Srv("h:2", 2)], {})
    assert server.uri.netloc == "h:2" and delay == 0.5


# ---------------------------------------------------------------------- real servers


def _tool_missing() -> Optional[str]:
    if os.geteuid() != 0:
        return "root (unshare --net, one group per nats-server)"
    for tool in ("unshare", "nft", "ip", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} (scripts/setup.d/chaos-netns.sh installs it)"
    return None


def _own_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def _in_private_netns() -> bool:
    outer = os.environ.get(NETNS_ENV, "")
    return bool(outer) and _own_netns() != outer


class _Cluster:
    """Three nats-servers routed to each other (route keep-alive 2 s × 2, as shipped), node
    i running with group ``NODE_GROUP_BASE + i``."""

    def __init__(self, binary: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ymera-py-failover-"))
        ports = free_ports(6)
        self.client_ports, self.route_ports = ports[:3], ports[3:]
        routes = ", ".join(f'"nats://127.0.0.1:{p}"' for p in self.route_ports)
        self.processes: List[subprocess.Popen] = []
        for i in range(3):
            conf = self.dir / f"n{i + 1}.conf"
            conf.write_text(
                f"server_name: n{i + 1}\nlisten: 127.0.0.1:{self.client_ports[i]}\n"
                f"cluster {{\n  name: ymera\n  listen: 127.0.0.1:{self.route_ports[i]}\n"
                f'  routes: [{routes}]\n  ping_interval: "2s"\n  ping_max: 2\n}}\n'
            )
            self.processes.append(
                subprocess.Popen(
                    ["setpriv", f"--regid={NODE_GROUP_BASE + i}", "--clear-groups", binary, "-c", str(conf)],
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.dir / f"n{i + 1}.log", "wb"),
                )
            )

    def url(self, i: int) -> str:
        return f"nats://127.0.0.1:{self.client_ports[i]}"

    async def wait_formed(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            views = [await probe_server("127.0.0.1", p) for p in self.client_ports]
            if all(v is not None and v.size == 3 for v in views):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the cluster did not form: {views}")

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _cut(route: int, group: int, others: List[int]) -> None:
    assert _in_private_netns(), "not in the test's own network namespace: no rule written"
    lo = 'oifname "lo" ip daddr 127.0.0.0/8'
    other = ", ".join(str(p) for p in others)
    rules = (
        f"table inet {TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n"
        f"    {lo} tcp dport {route} drop\n    {lo} tcp sport {route} drop\n"
        f"    {lo} meta skgid {group} tcp dport {{ {other} }} ct mark set {MARK} drop\n"
        f"    {lo} ct mark {MARK} drop\n  }}\n}}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)


def _heal() -> None:
    assert _in_private_netns()
    subprocess.run(["nft", "delete", "table", "inet", TABLE], check=True)


def test_an_agent_of_a_cut_off_server_moves_to_the_majority(nats_server_bin: str) -> None:
    if os.environ.get(NETNS_ENV) is None:
        missing = _tool_missing()
        if missing is not None:
            pytest.skip(f"the partition needs {missing}")
        # Run this test again inside a network namespace of its own.
        result = subprocess.run(
            [
                "unshare",
                "--net",
                "--",
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-s",
                "-p",
                "no:cacheprovider",
                f"{__file__}::test_an_agent_of_a_cut_off_server_moves_to_the_majority",
            ],
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, NETNS_ENV: _own_netns(), "NATS_SERVER_BIN": nats_server_bin},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output = result.stdout.decode(errors="replace")
        print(output)
        assert result.returncode == 0, output
        assert " passed" in output, output
        return
    assert _in_private_netns(), f"{NETNS_ENV} names this process's own network namespace"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    cluster = _Cluster(nats_server_bin)

    async def body() -> None:
        await cluster.wait_formed()
        # The service is on the majority side (n2), the agent on n1.
        service = await nats.connect(cluster.url(1))

        async def echo(msg) -> None:  # type: ignore[no-untyped-def]
            await msg.respond(msg.data)

        await service.subscribe("failover.echo", cb=echo)
        await service.flush()
        agent = Agent("py-failover", url=cluster.url(0), register=False)
        await agent.start()
        nc = agent._nc()

        async def answered() -> bool:
            try:
                return (await nc.request("failover.echo", b"ping", timeout=0.5)).data == b"ping"
            except Exception:
                return False

        try:
            deadline = time.monotonic() + 10
            while not await answered():
                assert time.monotonic() < deadline, "no echo before the partition"
                await asyncio.sleep(0.1)
            assert nc.connected_url.port == cluster.client_ports[0]
            _cut(cluster.route_ports[0], NODE_GROUP_BASE, cluster.route_ports[1:])
            cut_at = time.monotonic()
            moved = None
            try:
                while time.monotonic() - cut_at < MOVE_WITHIN_S:
                    url = nc.connected_url
                    if url is not None and url.port != cluster.client_ports[0] and await answered():
                        moved = time.monotonic() - cut_at
                        break
                    await asyncio.sleep(0.1)
            finally:
                on = nc.connected_url
                _heal()
            assert moved is not None, f"still on {on} {MOVE_WITHIN_S} s after n1 was cut off"
            print(f"moved to {on.netloc if on else None}; answered again {moved:.2f} s after the cut")
            assert on is not None and on.port in cluster.client_ports[1:]
            await asyncio.sleep(2)
            assert nc.connected_url == on, "moved again"
            assert await answered()
        finally:
            await agent.stop()
            await service.close()

    try:
        run(body())
    finally:
        cluster.stop()
