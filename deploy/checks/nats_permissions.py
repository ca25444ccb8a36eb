#!/usr/bin/env python3
"""Live check of deploy/nats.conf: start a private nats-server on loopback with
the real config (ports and store dir moved to temporary ones) and exercise
every user's permissions with a real client (nats-py).

What is asserted:
  * each service user can queue-subscribe to every endpoint subject of its
    service (DESIGN §3) and answer requests from the CLI user
    (allow_responses), and answers `$SRV.PING|INFO|STATS` in all three forms;
  * a service cannot subscribe to another service's endpoints, nor publish
    events it does not own;
  * the communication user owns the JetStream API of YMERA_MESSAGES and
    YMERA_DLQ (create stream, publish with Nats-Msg-Id, dedupe, pull, ack);
    other services get no JetStream;
  * an external agent (AGENTS account) can call `communication.send` and
    `$SRV.PING` across the account boundary, receives on `agent.<self>.inbox`
    and answers, and can do nothing else (other inboxes, other subjects,
    the shared `_INBOX.>`).
  * events reach their consumers (config.changed → the watching service,
    events.security.* → CLI).

Usage: nats_permissions.py NATS_SERVER_BINARY deploy/nats.conf
Exit status 0 when every expectation holds; prints one line per failure.
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

import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout

PASSWORD_VARS = {
    "communication": "NATS_COMM_PASSWORD",
    "config": "NATS_CONFIG_PASSWORD",
    "drafting": "NATS_DRAFTING_PASSWORD",
    "code-analysis": "NATS_CODE_ANALYSIS_PASSWORD",
    "security": "NATS_SECURITY_PASSWORD",
    "gateway": "NATS_GATEWAY_PASSWORD",
    "cli": "NATS_CLI_PASSWORD",
    "sys": "NATS_SYS_PASSWORD",
    "agent-demo": "NATS_AGENT_DEMO_PASSWORD",
}

# DESIGN §3: endpoint subjects per service (plus the health subject).
ENDPOINTS = {
    # dlq.list / dlq.replay: additions to DESIGN §3 (communication README).
    "communication": ["send", "status", "history", "conversations", "metrics",
                      "dlq.list", "dlq.replay", "agents.register", "agents.heartbeat",
                      "agents.deregister", "agents.list", "agents.get"],
    "config": ["get", "set", "delete", "history", "diff", "rollback", "schema.set",
               "schema.get", "export", "import", "template.set", "template.apply", "metrics"],
    "drafting": ["create", "get", "update", "list", "delete", "analyze", "export",
                 "revisions", "diff", "restore", "comment", "transition",
                 "template.set", "template.list", "collab.join", "collab.update", "metrics"],
    "code-analysis": ["analyze", "rules"],
    "security": ["keys.create", "keys.list", "keys.revoke", "authorize", "tokens.issue",
                 "tokens.verify", "tokens.revoke", "jwks", "tokens.revoked",
                 "ratelimit.check", "events.report"],
}

TIMEOUT = 1.0
failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A connection that records permission violations reported by the server."""

    def __init__(self, user):
        self.user = user
        self.errors = []
        self.nc = None

    async def connect(self, url, inbox_prefix=None):
        async def on_error(e):
            self.errors.append(str(e))

        opts = dict(servers=[url], user=self.user, password=os.environ[PASSWORD_VARS[self.user]],
                    error_cb=on_error, allow_reconnect=False, connect_timeout=2)
        if inbox_prefix:
            opts["inbox_prefix"] = inbox_prefix
        self.nc = await nats.connect(**opts)
        return self

    async def settle(self, wait_for_error=False):
        """Round-trip to the server, then give a -ERR for earlier operations
        time to be handled (nats-py may process it after the PONG). With
        wait_for_error, wait up to 1 s for it (an expected denial)."""
        await self.nc.flush(timeout=2)
        deadline = time.monotonic() + (1.0 if wait_for_error else 0.02)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            if wait_for_error and any("ermission" in e for e in self.errors):
                return

    def take_errors(self):
        errs, self.errors = self.errors, []
        return errs


async def expect_allowed(client, what, action):
    await action()
    await client.settle()
    errs = [e for e in client.take_errors() if "ermission" in e]
    if errs:
        fail(f"{client.user}: {what} should be allowed, server said: {errs[0]}")


async def expect_denied(client, what, action):
    try:
        await action()
    except Exception:
        pass
    await client.settle(wait_for_error=True)
    errs = [e for e in client.take_errors() if "ermission" in e]
    if not errs:
        fail(f"{client.user}: {what} should be denied but was allowed")


async def responder(client, subject, queue="q", body=b"ok"):
    async def handler(msg):
        if msg.reply:
            await msg.respond(body)

    return await client.nc.subscribe(subject, queue=queue, cb=handler)


async def request_ok(client, subject, what, expect=b"ok", payload=b"{}"):
    try:
        rep = await client.nc.request(subject, payload, timeout=TIMEOUT)
        if rep.data != expect:
            fail(f"{client.user}: {what}: unexpected reply {rep.data!r}")
    except (NatsTimeout, NoRespondersError, asyncio.TimeoutError) as e:
        fail(f"{client.user}: {what}: no reply ({type(e).__name__}; errors: {client.take_errors()})")


async def run(url):
    clients = {}
    for user in ["communication", "config", "drafting", "code-analysis", "security", "cli"]:
        clients[user] = await Client(user).connect(url)
    agent = await Client("agent-demo").connect(url, inbox_prefix="_INBOX.demo")
    cli = clients["cli"]

    # 1. Every service answers its endpoints and the Services API subjects.
    for svc, eps in ENDPOINTS.items():
        c = clients[svc]
        subjects = [f"{svc}.health", f"{svc}.health.instance1"] + [f"{svc}.{e}" for e in eps]
        for verb in ("PING", "INFO", "STATS"):
            subjects += [f"$SRV.{verb}.{svc}", f"$SRV.{verb}.{svc}.instance1"]
        for subj in subjects:
            await expect_allowed(c, f"subscribe {subj}", lambda s=subj: responder(c, s, body=svc.encode()))
        for subj in subjects:
            await request_ok(cli, subj, f"request {subj} answered by {svc}", expect=svc.encode())
    # Bare $SRV verbs: every service subscribes (as the micro framework does).
    for verb in ("PING", "INFO", "STATS"):
        for svc in ENDPOINTS:
            c = clients[svc]
            await expect_allowed(c, f"subscribe $SRV.{verb}", lambda c=c, v=verb, s=svc: responder(c, f"$SRV.{v}", queue=None, body=s.encode()))
    got = set()
    inbox = cli.nc.new_inbox()
    sub = await cli.nc.subscribe(inbox)
    await cli.nc.publish("$SRV.PING", b"", reply=inbox)
    deadline = time.monotonic() + TIMEOUT
    while len(got) < len(ENDPOINTS) and time.monotonic() < deadline:
        try:
            m = await sub.next_msg(timeout=deadline - time.monotonic())
            got.add(m.data.decode())
        except Exception:
            break
    await sub.unsubscribe()
    if got != set(ENDPOINTS):
        fail(f"cli: $SRV.PING answered by {sorted(got)}, expected all five services")

    # 2. Services stay inside their own subjects.
    cross = [("communication", "config.get"), ("config", "security.authorize"),
             ("drafting", "code-analysis.analyze"), ("code-analysis", "drafting.get"),
             ("security", "communication.send"), ("drafting", "agent.code-analysis.inbox"),
             ("config", "_INBOX_other.x"), ("security", "$JS.API.>"), ("config", "events.>"),
             ("code-analysis", "drafting.collab.*.updates"), ("code-analysis", "agent.drafting.inbox"),
             ("security", "security.>"), ("communication", "communication.>")]
    for svc, subj in cross:
        c = clients[svc]
        await expect_denied(c, f"subscribe {subj}", lambda c=c, s=subj: c.nc.subscribe(s))
    wrong_pub = [("drafting", "config.changed.drafting.production"), ("communication", "events.security.login"),
                 ("security", "events.communication.delivered"), ("code-analysis", "drafting.collab.d1.updates"),
                 ("config", "agent.demo.inbox"), ("drafting", "ymera.messages.x"),
                 ("security", "$JS.API.STREAM.CREATE.YMERA_MESSAGES"), ("config", "_INBOX.forged")]
    for svc, subj in wrong_pub:
        c = clients[svc]
        await expect_denied(c, f"publish {subj}", lambda c=c, s=subj: c.nc.publish(s, b"x"))

    # 3. Calls services make to each other (ymera-core clients).
    for svc in ["communication", "config", "drafting", "code-analysis"]:
        await request_ok(clients[svc], "security.authorize", f"{svc} -> security.authorize", expect=b"security")
    # Local bearer verification: the JWKS, the deny-list and the revocation events.
    for svc in ["communication", "config", "drafting", "code-analysis"]:
        for subj in ["security.jwks", "security.tokens.revoked"]:
            await request_ok(clients[svc], subj, f"{svc} -> {subj}", expect=b"security")
        for subj in ["events.security.token_revoked", "events.security.key_revoked"]:
            await expect_allowed(clients[svc], f"subscribe {subj}",
                                 lambda c=clients[svc], s=subj: c.nc.subscribe(s))
        await expect_denied(clients[svc], "subscribe events.security.invalid_api_key",
                            lambda c=clients[svc]: c.nc.subscribe("events.security.invalid_api_key"))
    for svc in ["communication", "drafting", "code-analysis", "security"]:
        await request_ok(clients[svc], "config.get", f"{svc} -> config.get", expect=b"config")
    for svc in ["drafting", "code-analysis"]:
        await request_ok(clients[svc], "communication.send", f"{svc} -> communication.send", expect=b"communication")
    for svc in ["config", "security"]:
        await expect_denied(clients[svc], "publish communication.send",
                            lambda c=clients[svc]: c.nc.publish("communication.send", b"{}"))

    # 4. Events reach their subscribers.
    got_change = asyncio.get_running_loop().create_future()

    async def on_change(msg):
        if not got_change.done():
            got_change.set_result(msg.subject)

    await expect_allowed(clients["drafting"], "subscribe config.changed.drafting.*",
                         lambda: clients["drafting"].nc.subscribe("config.changed.drafting.*", cb=on_change))
    await clients["drafting"].settle()
    await expect_allowed(clients["config"], "publish config.changed.drafting.production",
                         lambda: clients["config"].nc.publish("config.changed.drafting.production", b"{}"))
    try:
        await asyncio.wait_for(got_change, TIMEOUT)
    except asyncio.TimeoutError:
        fail("drafting did not receive config.changed.drafting.production")
    # Config replicas invalidate their caches on every change event,
    # including other agents' and their own service's.
    cfg_changes = await clients["config"].nc.subscribe("config.changed.*.*")
    await expect_allowed(clients["config"], "subscribe config.changed.*.*", clients["config"].settle)
    await clients["config"].nc.publish("config.changed.billing.base", b"{}")
    try:
        m = await cfg_changes.next_msg(timeout=TIMEOUT)
        if m.subject != "config.changed.billing.base":
            fail(f"config: unexpected change event {m.subject}")
    except Exception:
        fail("config did not receive its own config.changed.billing.base (cache invalidation)")
    await cfg_changes.unsubscribe()
    for svc in ["communication", "drafting", "code-analysis", "security"]:
        await expect_denied(clients[svc], "subscribe config.changed.*.* (only config sees every agent)",
                            lambda c=clients[svc]: c.nc.subscribe("config.changed.*.*"))
    sec_events = await cli.nc.subscribe("events.security.*")
    await cli.settle()
    for svc, subj in [("security", "events.security.auth_failed"), ("communication", "events.communication.delivered"),
                      ("drafting", "drafting.collab.d1.updates")]:
        await expect_allowed(clients[svc], f"publish {subj}", lambda c=clients[svc], s=subj: c.nc.publish(s, b"{}"))
    try:
        await sec_events.next_msg(timeout=TIMEOUT)
    except Exception:
        fail("cli did not receive events.security.auth_failed")

    # 5. Delivery to inboxes: local built-in agents and, across accounts, external ones.
    await expect_allowed(clients["drafting"], "subscribe agent.drafting.inbox",
                         lambda: responder(clients["drafting"], "agent.drafting.inbox", body=b"drafting-ack"))
    await expect_allowed(clients["code-analysis"], "subscribe agent.code-analysis.inbox",
                         lambda: responder(clients["code-analysis"], "agent.code-analysis.inbox", body=b"ca-ack"))
    await expect_allowed(agent, "subscribe agent.demo.inbox", lambda: responder(agent, "agent.demo.inbox", body=b"demo-ack"))
    await agent.settle()
    comm = clients["communication"]
    await request_ok(comm, "agent.drafting.inbox", "deliver to drafting inbox", expect=b"drafting-ack")
    await request_ok(comm, "agent.code-analysis.inbox", "deliver to code-analysis inbox", expect=b"ca-ack")
    await request_ok(comm, "agent.demo.inbox", "deliver to external agent demo (cross-account)", expect=b"demo-ack")

    # 6. External agent: only communication.send, $SRV.PING, its own inbox.
    await request_ok(agent, "communication.send", "agent -> communication.send (cross-account)", expect=b"communication")
    for ep in ["register", "heartbeat", "deregister", "list", "get"]:
        await request_ok(agent, f"communication.agents.{ep}", f"agent -> communication.agents.{ep} (cross-account)",
                         expect=b"communication")
    try:
        rep = await agent.nc.request("$SRV.PING", b"", timeout=TIMEOUT)
        if rep.data.decode() not in ENDPOINTS:
            fail(f"agent-demo: $SRV.PING unexpected reply {rep.data!r}")
    except Exception as e:
        fail(f"agent-demo: $SRV.PING (cross-account) got no reply: {type(e).__name__}")
    for subj in ["agent.other.inbox", "_INBOX.>", "_INBOX.other.>", "events.>", "communication.send", "config.changed.>"]:
        await expect_denied(agent, f"subscribe {subj}", lambda s=subj: agent.nc.subscribe(s))
    for subj in ["config.get", "security.keys.create", "agent.other.inbox", "$SRV.INFO", "$SRV.PING.communication",
                 "$JS.API.INFO", "events.security.x", "communication.status"]:
        await expect_denied(agent, f"publish {subj}", lambda s=subj: agent.nc.publish(s, b"{}"))

    # 7. JetStream: communication owns its two streams; others have no access.
    js = comm.nc.jetstream(timeout=2)
    try:
        await js.add_stream(name="YMERA_MESSAGES", subjects=["ymera.messages.>"], duplicate_window=120)
        await js.add_stream(name="YMERA_DLQ", subjects=["ymera.dlq.>"])
        a1 = await js.publish("ymera.messages.demo", b"{}", headers={"Nats-Msg-Id": "m1.demo"})
        a2 = await js.publish("ymera.messages.demo", b"{}", headers={"Nats-Msg-Id": "m1.demo"})
        if not a2.duplicate or a1.seq != a2.seq:
            fail("communication: Nats-Msg-Id resend was not deduplicated")
        await js.publish("ymera.dlq.demo", b"{}", headers={"Nats-Msg-Id": "m1.demo"})
        psub = await js.pull_subscribe("ymera.messages.>", durable="deliverer", stream="YMERA_MESSAGES")
        msgs = await psub.fetch(1, timeout=2)
        await msgs[0].ack_sync(timeout=2)
        await js.stream_info("YMERA_DLQ")
    except Exception as e:
        fail(f"communication: JetStream flow failed: {type(e).__name__}: {e} {comm.take_errors()}")
    await comm.settle()
    errs = [e for e in comm.take_errors() if "ermission" in e]
    if errs:
        fail(f"communication: JetStream flow hit a permission violation: {errs[0]}")
    await expect_denied(comm, "publish $JS.API.STREAM.DELETE.YMERA_MESSAGES",
                        lambda: comm.nc.publish("$JS.API.STREAM.DELETE.YMERA_MESSAGES", b""))
    await expect_denied(comm, "publish $JS.API.STREAM.CREATE.OTHER", lambda: comm.nc.publish("$JS.API.STREAM.CREATE.OTHER", b"{}"))
    await expect_denied(clients["drafting"], "publish $JS.API.STREAM.INFO.YMERA_MESSAGES",
                        lambda: clients["drafting"].nc.publish("$JS.API.STREAM.INFO.YMERA_MESSAGES", b""))

    for c in list(clients.values()) + [agent]:
        await c.nc.drain()


def main():
    server, conf = sys.argv[1], sys.argv[2]
    for var in PASSWORD_VARS.values():
        os.environ.setdefault(var, "check-" + var.lower())
    tmp = tempfile.mkdtemp(prefix="ymera-nats-perm-")
    port, http_port = free_port(), free_port()
    try:
        conf_dir = os.path.dirname(os.path.abspath(conf))
        for name in os.listdir(conf_dir):
            if name.endswith(".conf"):
                shutil.copy(os.path.join(conf_dir, name), tmp)
        text = open(conf).read()
        text = re.sub(r"(?m)^listen:.*$", f"listen: 127.0.0.1:{port}", text)
        text = re.sub(r"(?m)^http:.*$", f"http: 127.0.0.1:{http_port}", text)
        text = text.replace('store_dir: "/data/jetstream"', f'store_dir: "{tmp}/js"')
        test_conf = os.path.join(tmp, os.path.basename(conf))
        with open(test_conf, "w") as f:
            f.write(text)
        log = open(os.path.join(tmp, "server.log"), "w")
        proc = subprocess.Popen([server, "-c", test_conf], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print(open(os.path.join(tmp, "server.log")).read())
                        print("  FAIL nats-server did not start")
                        return 1
                    time.sleep(0.05)
            asyncio.run(asyncio.wait_for(run(f"nats://127.0.0.1:{port}"), 60))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"  {len(failures)} NATS permission expectation(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
