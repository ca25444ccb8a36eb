#!/usr/bin/env python3
"""Live check of k8s/base/nats/nats.conf: run it as a 3-node cluster on
loopback and prove that the cluster forms and JetStream works across it.

The Kubernetes-specific values are moved to loopback: `listen`, `http`,
`cluster.listen` get free ports, the routes `nats://nats-N.nats-headless:6222`
point at those ports, `store_dir` and `pid_file` go to a temporary directory,
SERVER_NAME is nats-0/1/2. Everything else (accounts, permissions, JetStream
limits, cluster options) is used as written.

Asserted: every server reports healthy JetStream (/healthz?js-enabled-only=true)
and routes to the other 2; each server's INFO advertises all 3 servers' client
addresses (client_advertise, CLIENT_ADVERTISE: the pods' stable names, here
127.0.0.1:<port>), which clients need to leave a server cut off from the
majority; the communication user creates YMERA_MESSAGES with 3 replicas
through server 0, publishes (with Nats-Msg-Id) and consumes through server 2;
the CLI user reads the stream info through server 1.

Usage: nats_cluster.py NATS_SERVER_BINARY k8s/base/nats/nats.conf
"""

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import nats

from nats_permissions import PASSWORD_VARS, free_port


def fail(msg):
    print(f"  FAIL {msg}")
    return 1


def render(conf_text, i, ports, tmp):
    client, http, cluster = ports[i]
    t = conf_text
    t = re.sub(r"(?m)^listen:.*$", f"listen: 127.0.0.1:{client}", t)
    t = re.sub(r"(?m)^http:.*$", f"http: 127.0.0.1:{http}", t)
    t = re.sub(r"(?m)^pid_file:.*$", f'pid_file: "{tmp}/nats-{i}.pid"', t)
    t = t.replace('store_dir: "/data/jetstream"', f'store_dir: "{tmp}/js-{i}"')
    t = re.sub(r"(?m)^(\s*)listen: 0\.0\.0\.0:6222", rf"\g<1>listen: 127.0.0.1:{cluster}", t)
    for j, (_, _, cport) in enumerate(ports):
        t = t.replace(f"nats://nats-{j}.nats-headless:6222", f"nats://127.0.0.1:{cport}")
    live = "\n".join(line for line in t.splitlines() if not line.lstrip().startswith("#"))
    if "nats-headless" in live or "0.0.0.0" in live:
        raise SystemExit("  FAIL could not move every address of the cluster config to loopback")
    return t


def distinct_ports(n):
    """n different free ports: every socket stays bound until all are chosen,
    so no two calls hand out the same port."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_cluster(server, text, tmp, procs):
    """Starts three servers; returns their ports once all are healthy and
    fully routed, or None if one exited early (e.g. a port taken between
    choosing and binding it), after stopping the others."""
    flat = distinct_ports(9)
    ports = [tuple(flat[i * 3:i * 3 + 3]) for i in range(3)]
    for i in range(3):
        path = os.path.join(tmp, f"nats-{i}.conf")
        with open(path, "w") as f:
            f.write(render(text, i, ports, tmp))
        log = open(os.path.join(tmp, f"nats-{i}.log"), "w")
        env = dict(os.environ, SERVER_NAME=f"nats-{i}", CLIENT_ADVERTISE=f"127.0.0.1:{ports[i][0]}")
        procs.append(subprocess.Popen([server, "-c", path], stdout=log, stderr=subprocess.STDOUT, env=env))
    deadline = time.monotonic() + 30
    while True:
        # Full health: JetStream enabled, meta leader known, assets current.
        ready = all(healthz(h) for _, h, _ in ports)
        if ready and all(routes(h) == 2 for _, h, _ in ports):
            return ports
        if any(p.poll() is not None for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            procs.clear()
            return None
        if time.monotonic() > deadline:
            return "timeout"
        time.sleep(0.2)


def healthz(http_port, query=""):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz{query}", timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def routes(http_port):
    """Distinct servers this one is routed to (2.10+ pools several
    connections per peer and per pinned account, so num_routes is larger)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/routez", timeout=2) as r:
        return len({r.get("remote_name") or r.get("remote_id") for r in json.load(r).get("routes") or []})


STEP = ["start"]


def info(client_port):
    """The server's INFO, read before any CONNECT (what a client sees first)."""
    with socket.create_connection(("127.0.0.1", client_port), timeout=2) as s:
        line = s.makefile("rb").readline(1 << 16).decode()
    if not line.startswith("INFO "):
        raise ValueError(f"no INFO from port {client_port}: {line[:80]!r}")
    return json.loads(line[5:])


def check_advertised(ports):
    """Every server advertises the 3 client addresses (its own and its peers')."""
    want = {f"127.0.0.1:{c}" for c, _, _ in ports}
    deadline = time.monotonic() + 10
    while True:
        seen = [set(info(c).get("connect_urls") or []) for c, _, _ in ports]
        if all(s == want for s in seen):
            return 0
        if time.monotonic() > deadline:
            return fail(f"INFO connect_urls {[sorted(s) for s in seen]}, expected {sorted(want)} on every server")
        time.sleep(0.2)


async def exercise(ports):
    pw = os.environ
    comm = await nats.connect(f"nats://127.0.0.1:{ports[0][0]}", user="communication",
                              password=pw["NATS_COMM_PASSWORD"], connect_timeout=2, allow_reconnect=False)
    comm2 = await nats.connect(f"nats://127.0.0.1:{ports[2][0]}", user="communication",
                               password=pw["NATS_COMM_PASSWORD"], connect_timeout=2, allow_reconnect=False)
    cli = await nats.connect(f"nats://127.0.0.1:{ports[1][0]}", user="cli",
                             password=pw["NATS_CLI_PASSWORD"], connect_timeout=2, allow_reconnect=False)
    STEP[0] = "create R3 stream via server 0"
    js = comm.jetstream(timeout=5)
    # The meta group may still be settling right after election: retry.
    deadline = time.monotonic() + 20
    while True:
        try:
            info = await js.add_stream(name="YMERA_MESSAGES", subjects=["ymera.messages.>"], num_replicas=3)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    if info.config.num_replicas != 3:
        return fail(f"stream has {info.config.num_replicas} replicas, expected 3")
    STEP[0] = "publish via server 0"
    await js.publish("ymera.messages.demo", b"{}", headers={"Nats-Msg-Id": "c1.demo"})
    STEP[0] = "pull consumer + fetch + ack via server 2"
    js2 = comm2.jetstream(timeout=5)
    sub = await js2.pull_subscribe("ymera.messages.>", durable="deliver-demo", stream="YMERA_MESSAGES")
    msgs = await sub.fetch(1, timeout=5)
    await msgs[0].ack_sync(timeout=5)
    STEP[0] = "stream info as cli via server 1"
    si = await cli.jetstream(timeout=5).stream_info("YMERA_MESSAGES")
    replicas = 1 + len(si.cluster.replicas or []) if si.cluster else 0
    if replicas != 3:
        return fail(f"stream info shows {replicas} servers holding YMERA_MESSAGES, expected 3")
    for c in (comm, comm2, cli):
        await c.drain()
    return 0


def main():
    server, conf = sys.argv[1], sys.argv[2]
    for var in PASSWORD_VARS.values():
        os.environ.setdefault(var, "check-" + var.lower())
    tmp = tempfile.mkdtemp(prefix="ymera-nats-cluster-")
    procs = []
    try:
        conf_dir = os.path.dirname(os.path.abspath(conf))
        for name in os.listdir(conf_dir):
            if name.endswith(".conf"):
                shutil.copy(os.path.join(conf_dir, name), tmp)
        text = open(conf).read()
        ports = None
        for attempt in range(3):
            ports = start_cluster(server, text, tmp, procs)
            if ports is not None:
                break
            print(f"  a server exited at start (attempt {attempt + 1}); retrying on new ports")
        if ports is None or ports == "timeout":
            for i in range(3):
                print(f"--- nats-{i}.log (tail)")
                print("".join(open(os.path.join(tmp, f"nats-{i}.log")).readlines()[-15:]))
            return fail("cluster did not become healthy with every server routed to the other two within 30 s")
        STEP[0] = "INFO connect_urls"
        if check_advertised(ports):
            return 1
        started = time.monotonic()
        rc = asyncio.run(asyncio.wait_for(exercise(ports), 60))
        if rc == 0:
            print(f"  3 servers routed and advertised, JetStream R3 stream created, published, consumed and acked "
                  f"across servers ({time.monotonic() - started:.1f}s)")
        return rc
    except Exception as e:
        return fail(f"{type(e).__name__} at step '{STEP[0]}': {e}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
