#!/usr/bin/env python3
"""Live check of the deployment contract against the real service binaries.

Starts, on loopback and in a temporary directory: nats-server with the real
deploy/nats.conf (ports and store dir moved, development passwords from the
environment), a PostgreSQL cluster (initdb; as the `postgres` user through
setpriv when run as root) and redis-server; then every `ymera-<service>`
binary found in BIN_DIR with its own NATS user, YMERA_HTTP_ADDR on a free
port, POSTGRES_URL, REDIS_URL, ENVIRONMENT=development and YMERA_AUTH left at
its default (`required`), so the services really call `security.authorize`
with the admin key the security service bootstraps
(YMERA_BOOTSTRAP_ADMIN_KEY).

Checks (one output line each, same format as scripts/check-deploy):
  * every service's /ready answers 200;
  * real traffic, through the CLI user and the external agent `agent-demo`
    (AGENTS account): communication.send to a listening agent and to a
    failing one (dead-lettered), a resend (deduplicated), status, dlq.list,
    dlq.replay, config.set/get (+ a refused key), drafting.create/analyze/
    collab.join, code-analysis.analyze, chat requests through
    agent.code-analysis.inbox and agent.drafting.inbox, security.ratelimit.check;
  * `$SRV.PING` is answered by every service started;
  * each /metrics passes `promtool check metrics`, and every metric
    deploy/METRICS.md says a service exports (column "exported by", presence
    `start` or `traffic`) is in its text, with exactly the catalogued label
    names; `event` metrics are reported;
  * no permission violation: the nats-server log has no "Subscription
    Violation" / "Publish Violation" and no service logged a "Permissions
    Violation" (checked last, after all traffic).

Usage: live_binaries.py ROOT BIN_DIR NATS_SERVER
Environment: PG_BIN (default /usr/lib/postgresql/15/bin), REDIS_SERVER
(default redis-server), LIVE_KEEP=1 keeps the temporary directory.
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

SERVICES = ["security", "communication", "config", "drafting", "code-analysis", "gateway"]
NATS_PASSWORD_VARS = {
    "communication": "NATS_COMM_PASSWORD", "config": "NATS_CONFIG_PASSWORD",
    "drafting": "NATS_DRAFTING_PASSWORD", "code-analysis": "NATS_CODE_ANALYSIS_PASSWORD",
    "security": "NATS_SECURITY_PASSWORD", "cli": "NATS_CLI_PASSWORD",
    "gateway": "NATS_GATEWAY_PASSWORD",
    "sys": "NATS_SYS_PASSWORD", "agent-demo": "NATS_AGENT_DEMO_PASSWORD",
}
# docker-compose.yml development defaults.
DEV_PASSWORDS = {
    "NATS_COMM_PASSWORD": "dev-communication", "NATS_CONFIG_PASSWORD": "dev-config",
    "NATS_DRAFTING_PASSWORD": "dev-drafting", "NATS_CODE_ANALYSIS_PASSWORD": "dev-code-analysis",
    "NATS_SECURITY_PASSWORD": "dev-security", "NATS_CLI_PASSWORD": "dev-cli",
    "NATS_GATEWAY_PASSWORD": "dev-gateway",
    "NATS_SYS_PASSWORD": "dev-sys", "NATS_AGENT_DEMO_PASSWORD": "dev-agent-demo",
}

passed = 0
failed = 0
gaps = 0

# Known gaps of the services (not of the deployment files), found by this
# check; fixing them needs code in crates/. A gap check that fails prints
# GAP (not counted as a failure); one that passes prints FAIL asking to
# remove it from this table, so the table cannot go stale.
# Checks expected to fail, with the reason; empty now that the services
# describe their metrics (# HELP) and the agent inboxes answer with the
# service credential (YMERA_SERVICE_API_KEY).
KNOWN_GAPS = {}


def line(ok, name, took, detail=None):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print(f"{'ok   ' if ok else 'FAIL '} {name:<68} {took:5.2f}s", flush=True)
    if detail and (not ok or os.environ.get("CHECK_DEPLOY_VERBOSE") == "1"):
        for d in str(detail).splitlines()[:40]:
            print(f"      {d}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout, what, log):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}:\n" + tail(log))


def tail(path, n=25):
    try:
        return "\n".join(open(path, errors="replace").read().splitlines()[-n:])
    except OSError:
        return ""


def http_get(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


class Stack:
    def __init__(self, root, bin_dir, nats_server):
        self.root, self.bin_dir, self.nats_server = root, bin_dir, nats_server
        self.tmp = tempfile.mkdtemp(prefix="ymera-live-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.services = {}  # name -> {"proc", "http", "log"}

    def spawn(self, argv, log, env=None, as_postgres=False):
        if as_postgres and os.geteuid() == 0:
            argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + argv
        out = open(log, "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def start_nats(self):
        d = os.path.join(self.tmp, "nats")
        os.makedirs(d)
        conf_dir = os.path.join(self.root, "deploy")
        for name in os.listdir(conf_dir):
            if name.endswith(".conf"):
                shutil.copy(os.path.join(conf_dir, name), d)
        self.nats_port, http_port = free_port(), free_port()
        text = open(os.path.join(conf_dir, "nats.conf")).read()
        text = re.sub(r"(?m)^listen:.*$", f"listen: 127.0.0.1:{self.nats_port}", text)
        text = re.sub(r"(?m)^http:.*$", f"http: 127.0.0.1:{http_port}", text)
        text = text.replace('store_dir: "/data/jetstream"', f'store_dir: "{d}/js"')
        open(os.path.join(d, "nats.conf"), "w").write(text)
        self.nats_log = os.path.join(d, "nats-server.log")
        env = dict(os.environ)
        for k, v in DEV_PASSWORDS.items():
            env[k] = v  # the docker-compose.yml development defaults
        self.passwords = {u: env[v] for u, v in NATS_PASSWORD_VARS.items()}
        p = self.spawn([self.nats_server, "-c", os.path.join(d, "nats.conf")], self.nats_log, env)
        wait_port(self.nats_port, p, 15, "nats-server", self.nats_log)
        self.nats_url = f"nats://127.0.0.1:{self.nats_port}"

    def start_postgres(self):
        pg_bin = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
        d = os.path.join(self.tmp, "pg")
        os.makedirs(d)
        if os.geteuid() == 0:
            shutil.chown(d, "postgres", "postgres")
        data, log = os.path.join(d, "data"), os.path.join(d, "postgres.log")
        init = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] if os.geteuid() == 0 else []
        subprocess.run(init + [f"{pg_bin}/initdb", "-D", data, "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        self.pg_port = free_port()
        p = self.spawn([f"{pg_bin}/postgres", "-D", data, "-p", str(self.pg_port), "-h", "127.0.0.1",
                        "-k", d, "-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off", "-c", "max_connections=200"], log, as_postgres=True)
        wait_port(self.pg_port, p, 30, "postgres", log)
        for _ in range(100):
            r = subprocess.run(init + [f"{pg_bin}/createdb", "-h", "127.0.0.1", "-p", str(self.pg_port),
                                       "-U", "postgres", "ymera"], capture_output=True, timeout=30)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(r.stderr.decode())
        self.pg_url = f"postgres://postgres@127.0.0.1:{self.pg_port}/ymera"

    def start_redis(self):
        d = os.path.join(self.tmp, "redis")
        os.makedirs(d)
        self.redis_port = free_port()
        log = os.path.join(d, "redis.log")
        p = self.spawn([os.environ.get("REDIS_SERVER", "redis-server"), "--port", str(self.redis_port),
                        "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d], log)
        wait_port(self.redis_port, p, 15, "redis-server", log)
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}"

    def start_service(self, name):
        binary = os.path.join(self.bin_dir, f"ymera-{name}")
        port = free_port()
        log = os.path.join(self.tmp, f"{name}.log")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NATS_URL": self.nats_url, "NATS_USER": name, "NATS_PASSWORD": self.passwords[name],
            "YMERA_HTTP_ADDR": f"127.0.0.1:{port}", "POSTGRES_URL": self.pg_url,
            "REDIS_URL": self.redis_url, "ENVIRONMENT": "development", "LOG_LEVEL": "info",
            "YMERA_LOG_FORMAT": "json",
            # docker-compose.yml's value (the seed's 10 MB) under deploy/nats.conf's max_payload.
            "MAX_MESSAGE_SIZE": "10485760",
        }
        key_file = os.path.join(self.tmp, "admin", "admin.key")
        if name == "security":
            env["YMERA_BOOTSTRAP_ADMIN_KEY"] = key_file
        elif name in ("code-analysis", "drafting", "gateway"):
            # The agents answer chat requests through communication.send on
            # their own behalf (ymera_core::agent::AgentInbox).
            deadline = time.monotonic() + 60
            while not os.path.exists(key_file) and time.monotonic() < deadline:
                time.sleep(0.1)
            if os.path.exists(key_file):
                # As docker-compose.yml gives it: a file (DESIGN §5 X_FILE).
                env["YMERA_SERVICE_API_KEY_FILE"] = key_file
        if name == "communication":
            # Dead-letter the failing recipient within a second.
            env.update(COMM_MAX_ATTEMPTS="2", COMM_RETRY_BASE_MS="20", COMM_RETRY_CAP_MS="100",
                       COMM_INBOX_TIMEOUT_MS="2000", COMM_BREAKER_FAILURES="2")
        if name == "gateway":
            # The HTTP edge: its public port, no PostgreSQL (compose sets it empty too).
            self.gateway_url = f"http://127.0.0.1:{free_port()}"
            env.update(GATEWAY_ADDR=self.gateway_url.removeprefix("http://"), POSTGRES_URL="")
        proc = self.spawn([binary], log, env)
        self.services[name] = {"proc": proc, "http": f"http://127.0.0.1:{port}", "log": log}

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 15)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()
        if os.environ.get("LIVE_KEEP") == "1":
            print(f"      kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def gap(key, name, fn, *args, started=None):
    """A check expected to fail because of KNOWN_GAPS[key]."""
    global gaps, failed
    t = started or time.monotonic()
    try:
        detail = fn(*args)
    except Exception as e:  # noqa: BLE001
        gaps += 1
        print(f"GAP   {name:<68} {time.monotonic() - t:5.2f}s", flush=True)
        print(f"      known gap: {KNOWN_GAPS[key]}", flush=True)
        for d in f"{type(e).__name__}: {e}".splitlines()[:8]:
            print(f"      {d}", flush=True)
        return False
    failed += 1
    print(f"FAIL  {name:<68} {time.monotonic() - t:5.2f}s", flush=True)
    print(f"      passes now ({detail}): remove {key!r} from KNOWN_GAPS in {__file__}", flush=True)
    return True


def step(name, fn, *args):
    t = time.monotonic()
    try:
        detail = fn(*args)
        line(True, name, time.monotonic() - t, detail)
        return True
    except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
        line(False, name, time.monotonic() - t, f"{type(e).__name__}: {e}")
        return False


async def astep(name, coro):
    t = time.monotonic()
    try:
        detail = await coro
        line(True, name, time.monotonic() - t, detail)
        return True
    except Exception as e:  # noqa: BLE001
        line(False, name, time.monotonic() - t, f"{type(e).__name__}: {e}")
        return False


def catalogue(root):
    """metric -> (exporters, presence) from the METRICS.md table."""
    cat = {}
    for row in open(os.path.join(root, "deploy/METRICS.md")):
        m = re.match(r"^\|\s*`(ymera_[a-z0-9_]+)`\s*\|", row)
        if not m:
            continue
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        exporters = set(re.findall(r"`([a-z-]+)`", cells[4])) if len(cells) > 5 else set()
        if len(cells) > 5 and cells[4] == "all":
            exporters = {"all"}
        presence = re.match(r"[a-z]*", cells[5]).group(0) if len(cells) > 5 else ""
        labels = set(re.findall(r"`([a-z_]+)`", cells[2])) if len(cells) > 2 else set()
        cat[m.group(1)] = (exporters, presence, labels)
    return cat


class Traffic:
    def __init__(self, stack, admin_key):
        self.s = stack
        self.key = admin_key
        self.hdr = {"X-API-Key": admin_key}

    async def connect(self):
        url = self.s.nats_url
        self.cli = await nats.connect(url, user="cli", password=self.s.passwords["cli"],
                                      allow_reconnect=False, connect_timeout=3)
        self.agent = await nats.connect(url, user="agent-demo", password=self.s.passwords["agent-demo"],
                                        inbox_prefix="_INBOX.demo", allow_reconnect=False, connect_timeout=3)
        self.demo_inbox = asyncio.Queue()

        async def demo(msg):
            await self.demo_inbox.put(json.loads(msg.data))
            await msg.respond(b"{}")

        await self.agent.subscribe("agent.demo.inbox", cb=demo)

        async def failing(msg):
            await self.cli.publish(msg.reply, b'{"error":{"code":"unavailable","message":"live check"}}',
                                   headers={"Nats-Service-Error": "live check", "Nats-Service-Error-Code": "503"})

        await self.cli.subscribe("agent.failing.inbox", cb=failing)
        await self.agent.flush()
        await self.cli.flush()

    async def req(self, subject, body, nc=None, headers=None, auth=True, timeout=5):
        h = dict(self.hdr) if auth else {}
        h.update(headers or {})
        msg = await (nc or self.cli).request(subject, json.dumps(body).encode(), timeout=timeout,
                                             headers=h or None)
        code = (msg.headers or {}).get("Nats-Service-Error-Code")
        return code, json.loads(msg.data) if msg.data else None

    async def ok(self, subject, body, **kw):
        code, reply = await self.req(subject, body, **kw)
        if code:
            raise RuntimeError(f"{subject} answered {code}: {reply}")
        return reply

    async def wait_status(self, mid, want, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            r = await self.ok("communication.status", {"id": mid})
            if r["status"] == want:
                return r
            if time.monotonic() > deadline:
                raise RuntimeError(f"status of {mid} is {r['status']}, waited for {want}: {r}")
            await asyncio.sleep(0.1)

    # --- communication ----------------------------------------------------
    async def comm_send_deliver(self):
        env = {"type": "request", "sender": "demo", "recipients": ["demo"], "subject": "live-check",
               "payload": {"message": "hello"}}
        r = await self.ok("communication.send", env, nc=self.agent)
        got = await asyncio.wait_for(self.demo_inbox.get(), 10)
        if got["id"] != r["id"]:
            raise RuntimeError(f"inbox got {got['id']}, sent {r['id']}")
        await self.wait_status(r["id"], "delivered")
        return f"id {r['id']} delivered to agent.demo.inbox (AGENTS account)"

    async def comm_dead_letter(self):
        env = {"type": "request", "sender": "livecheck", "recipients": ["failing"], "subject": "fail",
               "payload": {}}
        r = await self.ok("communication.send", env)
        self.failed_id = r["id"]
        await self.wait_status(r["id"], "dead_lettered", timeout=15)
        again = await self.ok("communication.send", dict(env, id=r["id"]))
        if not again.get("duplicate"):
            raise RuntimeError(f"resend not deduplicated: {again}")
        dl = await self.ok("communication.dlq.list", {"recipient": "failing"})
        if not dl["dead_letters"]:
            raise RuntimeError(f"dlq.list empty: {dl}")
        rep = await self.ok("communication.dlq.replay", {"sequences": [dl["dead_letters"][0]["sequence"]]})
        return f"dead-lettered, resend duplicate, dlq.list {len(dl['dead_letters'])}, replayed {rep.get('replayed')}"

    async def comm_queries(self):
        await self.ok("communication.history", {"limit": 5})
        await self.ok("communication.conversations", {})
        m = await self.ok("communication.metrics", {})
        return f"metrics counters {m['counters']}"

    # --- config -------------------------------------------------------------
    async def config_set_get(self):
        await self.ok("config.set", {"agent": "livecheck", "environment": "base", "config": {"a": 1}})
        for _ in range(2):
            g = await self.ok("config.get", {"agent": "livecheck", "environment": "base"})
        if g["config"] != {"a": 1}:
            raise RuntimeError(f"config.get returned {g}")
        code, _ = await self.req("config.get", {"agent": "livecheck"}, auth=False,
                                 headers={"X-API-Key": "ymk_not_a_real_key"})
        if code != "401":
            raise RuntimeError(f"a bogus key got {code}, expected 401")
        return "set, get x2, bogus key 401"

    # --- drafting -------------------------------------------------------------
    async def drafting(self):
        a = await self.ok("drafting.analyze", {"text": "There are many reasons. The report was written by the team."})
        d = await self.ok("drafting.create", {"title": "Live check", "author_id": "live", "content": "Hello"})
        draft_id = d.get("draft_id") or d.get("id")
        await self.ok("drafting.collab.join", {"draft_id": draft_id, "user_id": "live"})
        return f"analyze ({a['words']} words), create {draft_id}, collab.join"

    # --- code-analysis --------------------------------------------------------
    async def code_analysis(self):
        r = await self.ok("code-analysis.analyze", {"files": [
            {"path": "app.py", "content": "def run(cmd):\n    return eval(cmd)\n"}]})
        return f"{r['summary']['finding_count']} finding(s)"

    async def gateway(self):
        """The HTTP edge under the gateway NATS user: REST, OpenAPI, an event stream, a webhook."""
        import urllib.error
        import urllib.request

        base = self.s.gateway_url

        def call(method, path, body=None, headers=None, stream=False):
            req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
            try:
                resp = urllib.request.urlopen(req, timeout=10)
            except urllib.error.HTTPError as e:
                return e.code, e.read()
            if stream:
                data = b""
                while b"event: ready" not in data:
                    chunk = resp.read1(4096)
                    if not chunk:
                        break
                    data += chunk
                resp.close()
                return resp.status, data
            return resp.status, resp.read()

        def run():
            deadline = time.monotonic() + 30
            while True:
                status, body = call("GET", "/openapi.json")
                paths = json.loads(body).get("paths", {}) if status == 200 else {}
                if "/v1/config/get" in paths:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"/openapi.json has no /v1/config/get after 30 s ({status})")
                time.sleep(0.5)
            status, body = call("POST", "/v1/config/get", json.dumps({"agent": "live-gw"}).encode(), self.hdr)
            if status not in (200, 404):
                raise RuntimeError(f"POST /v1/config/get: {status} {body[:200]!r}")
            status, body = call("POST", "/v1/config/get", b"{}", {})
            if status != 401:
                raise RuntimeError(f"POST /v1/config/get without a key: {status} (expected 401)")
            status, body = call("GET", "/v1/events?subjects=events.%3E", None, self.hdr, stream=True)
            if status != 200 or b"event: ready" not in body:
                raise RuntimeError(f"GET /v1/events: {status} {body[:200]!r}")
            status, body = call("POST", "/v1/webhooks/nope", b"{}", {})
            if status != 404:
                raise RuntimeError(f"POST /v1/webhooks/nope: {status} (expected 404)")
            return f"{len(paths)} operations in /openapi.json; REST 200/401, SSE ready, webhook 404"

        return await asyncio.to_thread(run)

    async def chat(self, agent, message):
        while not self.demo_inbox.empty():
            self.demo_inbox.get_nowait()
        env = {"type": "request", "sender": "demo", "recipients": [agent], "subject": "chat",
               "payload": {"message": message}}
        r = await self.ok("communication.send", env, nc=self.agent)
        await self.wait_status(r["id"], "delivered")
        deadline = time.monotonic() + 5
        while True:
            got = await asyncio.wait_for(self.demo_inbox.get(), max(0.1, deadline - time.monotonic()))
            if got.get("correlation_id") == r["id"]:
                break
        ok = got["payload"].get("success")
        if not ok:
            raise RuntimeError(f"answer: {got['payload']}")
        return f"{agent} answered through communication.send to agent.demo.inbox"

    # --- security -------------------------------------------------------------
    async def security(self):
        body = {"key": "live", "limit": 1, "period_ms": 60000, "cost": 1}
        first = await self.ok("security.ratelimit.check", body)
        second = await self.ok("security.ratelimit.check", body)
        if not first["allowed"] or second["allowed"]:
            raise RuntimeError(f"{first} / {second}")
        return "allowed, then refused"

    async def srv_ping(self, expected):
        inbox = self.cli.new_inbox()
        sub = await self.cli.subscribe(inbox)
        await self.cli.publish("$SRV.PING", b"", reply=inbox)
        names = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                m = await sub.next_msg(timeout=max(0.05, deadline - time.monotonic()))
                names.append(json.loads(m.data)["name"])
            except Exception:  # noqa: BLE001 - timeout ends the collection
                break
        await sub.unsubscribe()
        if sorted(names) != sorted(expected):
            raise RuntimeError(f"$SRV.PING answered by {sorted(names)}, expected {sorted(expected)}")
        return f"answered by {sorted(names)}"


def send_401(stack):
    """communication's count of communication.send requests refused with 401."""
    _, text = http_get(stack.services["communication"]["http"] + "/metrics")
    total = 0.0
    for m in re.finditer(r'(?m)^ymera_request_errors_total\{([^}]*)\} (\S+)$', text):
        if 'endpoint="communication.send"' in m.group(1) and 'code="401"' in m.group(1):
            total += float(m.group(2))
    return total


def _replay(err, detail):
    """Re-raise an outcome computed inside the event loop (for gap())."""
    if err is not None:
        raise err
    return detail


def check_metrics(stack, name, cat, promtool):
    text = stack.metrics_text[name]
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    problems = [p for p in (r.stdout + r.stderr).splitlines() if p.strip()]
    other = [p for p in problems if not p.endswith("no help text")]
    if other or (r.returncode != 0 and not problems):
        raise RuntimeError("promtool check metrics:\n" + "\n".join(problems or [f"exit {r.returncode}"]))
    present = set()
    for m in re.findall(r"(?m)^(ymera_[a-z0-9_]+)", text):
        present.add(re.sub(r"_(bucket|sum|count)$", "", m) if m not in cat else m)
    unknown = sorted(m for m in present if m not in cat)
    if unknown:
        raise RuntimeError(f"not in deploy/METRICS.md: {unknown}")
    # Label names of every sample must be exactly the catalogued ones
    # (histogram `le` aside): alerts and panels select on them.
    label_problems = set()
    for m in re.finditer(r"(?m)^(ymera_[a-z0-9_]+)(?:\{([^}]*)\})? ", text):
        base = m.group(1) if m.group(1) in cat else re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        names = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or "")) - {"le"}
        if names != cat[base][2]:
            label_problems.add(f"{base}: labels {sorted(names)}, METRICS.md {sorted(cat[base][2])}")
    if label_problems:
        raise RuntimeError("label mismatch:\n" + "\n".join(sorted(label_problems)))
    missing, seen_events, unseen_events = [], [], []
    for metric, (exporters, presence, _labels) in sorted(cat.items()):
        if not (name in exporters or "all" in exporters):
            if metric in present:
                raise RuntimeError(f"exports {metric}, which METRICS.md attributes to {sorted(exporters)}")
            continue
        if presence in ("start", "traffic"):
            if metric not in present:
                missing.append(metric)
        elif metric in present:
            seen_events.append(metric)
        else:
            unseen_events.append(metric)
    if missing:
        raise RuntimeError(f"catalogued for {name} but not exported: {missing}")
    detail = f"{len(present)} ymera_* metrics; promtool: no problem besides {len(problems)} 'no help text'"
    if seen_events:
        detail += f"; event metrics seen: {', '.join(seen_events)}"
    if unseen_events:
        detail += f"; event metrics not provoked: {', '.join(unseen_events)}"
    return detail


def main():
    root, bin_dir, nats_server = sys.argv[1], sys.argv[2], sys.argv[3]
    promtool = shutil.which("promtool") or "promtool"
    cat = catalogue(root)
    present = [s for s in SERVICES if os.access(os.path.join(bin_dir, f"ymera-{s}"), os.X_OK)]
    for s in SERVICES:
        if s not in present:
            print(f"SKIP  ymera-{s}: no executable in {bin_dir}")
    stack = Stack(root, bin_dir, nats_server)
    try:
        if not (step("live: nats-server -c deploy/nats.conf (dev passwords)", stack.start_nats)
                and step("live: PostgreSQL (initdb, createdb ymera)", stack.start_postgres)
                and step("live: redis-server", stack.start_redis)):
            return 1
        # Security first: it writes the admin key the agents use.
        for s in sorted(present, key=lambda name: name != "security"):
            stack.start_service(s)

        def ready(s):
            svc = stack.services[s]
            deadline = time.monotonic() + 120
            last = None
            while time.monotonic() < deadline:
                if svc["proc"].poll() is not None:
                    raise RuntimeError(f"exited with {svc['proc'].returncode}:\n{tail(svc['log'])}")
                try:
                    status, body = http_get(svc["http"] + "/ready", timeout=2)
                    if status == 200:
                        return body.strip()[:200]
                except Exception as e:  # noqa: BLE001 - 503 while starting
                    last = e
                time.sleep(0.2)
            raise RuntimeError(f"/ready not 200 after 120 s ({last}):\n{tail(svc['log'])}")

        ready_ok = {s: step(f"live: ymera-{s} /ready 200", ready, s) for s in present}
        if not all(ready_ok.values()):
            return 1

        def healthcheck(s):
            # The compose healthcheck: `ymera-<service> health` (GET /ready on its own port).
            addr = stack.services[s]["http"].removeprefix("http://")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "YMERA_HTTP_ADDR": addr}
            r = subprocess.run([os.path.join(bin_dir, f"ymera-{s}"), "health"], env=env,
                               capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                raise RuntimeError(f"exit {r.returncode}: {r.stderr.strip()}")
            return "exit 0"

        for s in present:
            step(f"live: ymera-{s} health (container healthcheck) exits 0", healthcheck, s)
        key_file = os.path.join(stack.tmp, "admin", "admin.key")
        admin_key = open(key_file).read().strip() if os.path.exists(key_file) else ""

        async def traffic():
            t = Traffic(stack, admin_key)
            await t.connect()
            plan = [
                ("security", "security.ratelimit.check (allowed, then 429-style refusal)", t.security),
                ("communication", "communication.send -> agent.demo.inbox (cross-account), status delivered",
                 t.comm_send_deliver),
                ("communication", "failing recipient: dead-lettered, dedup resend, dlq.list, dlq.replay",
                 t.comm_dead_letter),
                ("communication", "communication.history/conversations/metrics", t.comm_queries),
                ("config", "config.set, config.get x2, bogus key -> 401 (security.authorize)",
                 t.config_set_get),
                ("drafting", "drafting.analyze, drafting.create, drafting.collab.join", t.drafting),
                ("code-analysis", "code-analysis.analyze", t.code_analysis),
                ("gateway", "gateway: POST /v1/config/get, /openapi.json, SSE /v1/events, webhook 404",
                 t.gateway),
            ]
            for svc, name, fn in plan:
                if svc in present:
                    await astep(f"live: {name}", fn())
            chats = [("code-analysis", "Please review this code:\n```python\ndef run(cmd):\n    return eval(cmd)\n```"),
                     ("drafting", "Please check this text: There are many reasons the report was written by the team.")]
            for agent, message in chats:
                if agent not in present or "communication" not in present:
                    continue
                name = f"live: chat via agent.{agent}.inbox answered to agent demo"
                started = time.monotonic()
                refused_before = send_401(stack)
                try:
                    detail = await t.chat(agent, message)
                    err = None
                except Exception as e:  # noqa: BLE001
                    err = e
                refused = send_401(stack) - refused_before
                if err is not None and refused > 0:
                    err = RuntimeError(f"{type(err).__name__}; communication answered {refused:g} "
                                       "communication.send request(s) with 401 meanwhile "
                                       "(ymera_request_errors_total)")
                step(name, _replay, err, detail if err is None else None)
            await asyncio.sleep(1.5)  # backlog gauges are polled
            await astep("live: $SRV.PING lists every service started", t.srv_ping(present))
            await t.cli.drain()
            await t.agent.drain()

        asyncio.run(asyncio.wait_for(traffic(), 120))
        stack.metrics_text = {s: http_get(stack.services[s]["http"] + "/metrics")[1] for s in present}
        for s in present:
            step(f"live: ymera-{s} /metrics: promtool (format) + METRICS.md", check_metrics, stack, s, cat, promtool)

        def help_lint(s):
            r = subprocess.run([promtool, "check", "metrics"], input=stack.metrics_text[s],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError((r.stdout + r.stderr).strip())
            return "clean"

        for s in present:
            step(f"live: ymera-{s} /metrics: promtool check metrics (strict lint)", help_lint, s)

        def no_violations():
            # nats-server logs "Subscription Violation" / "Publish Violation"
            # ([ERR]); the client is told "Permissions Violation", which the
            # services log (async-nats server error event). Both count.
            text = open(stack.nats_log, errors="replace").read()
            bad = [l for l in text.splitlines() if re.search(r"(Subscription|Publish|Permissions) Violation", l)]
            for s in present:
                bad += [f"{s}: {l.strip()[:300]}" for l in open(stack.services[s]["log"], errors="replace")
                        if "Permissions Violation" in l]
            if bad:
                raise RuntimeError("\n".join(bad[:20]))
            return "no violation in the nats-server log or the service logs"

        step("live: no permission violation (nats-server log, service logs)", no_violations)

        errors = []
        for s in present:
            for entry in open(stack.services[s]["log"], errors="replace"):
                if '"level":"ERROR"' in entry or "ermission" in entry:
                    errors.append(f"{s}: {entry.strip()[:300]}")
        print(f"info  service logs: {len(errors)} ERROR/permission line(s)")
        for entry in errors[:20]:
            print(f"      {entry}")
    finally:
        stack.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    rc = main()
    print(f"live-binaries: {passed} passed, {failed} failed, {gaps} known gap(s)")
    sys.exit(rc)
