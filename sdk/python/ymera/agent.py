"""The :class:`Agent`: an outside agent on the Ymera platform, over NATS."""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from .envelope import Message, new_envelope, valid_agent_name
from .errors import NotFound, Timeout, Unavailable, YmeraError, error_from_reply

__all__ = ["Agent", "Skill", "Config", "Handler"]

log = logging.getLogger("ymera")

Handler = Callable[[Message], Awaitable[Any]]

#: Inbox deliveries handled at once; more wait in the subscription (nats-py's pending limits).
MAX_CONCURRENT_HANDLERS = 64
#: Envelope ids remembered to drop redeliveries of a message already handled.
SEEN_IDS = 4096
#: Requests awaiting their response at once.
MAX_PENDING_REQUESTS = 10_000
#: Largest body the SDK sends (the platform's default ``MAX_MESSAGE_SIZE``).
MAX_MESSAGE_SIZE = 1024 * 1024

#: Failover (see :class:`_Failover`): how often the agent's server is asked for its INFO,
#: the checks in a row below a majority before the connection moves, the quiet time after
#: a move and after a search that found no better server, one probe's time limit.
FAILOVER_CHECK_S = 0.5
FAILOVER_STRIKES = 2
FAILOVER_COOLDOWN_S = 5.0
FAILOVER_RETRY_SEARCH_S = 2.0
FAILOVER_PROBE_TIMEOUT_S = 1.0
_MAX_INFO_LINE = 64 * 1024


@dataclass(frozen=True)
class ClusterView:
    """A nats-server's view of its cluster, from the INFO it sends a new connection."""

    server_id: str
    server_name: str
    cluster: Optional[str]
    #: Servers it advertises (distinct ``connect_urls``, itself included), at least 1.
    size: int

    @staticmethod
    def from_info(info: Dict[str, Any]) -> "ClusterView":
        urls = {str(u) for u in (info.get("connect_urls") or [])}
        return ClusterView(
            server_id=str(info.get("server_id") or ""),
            server_name=str(info.get("server_name") or ""),
            cluster=str(info["cluster"]) if info.get("cluster") else None,
            size=max(1, len(urls)),
        )


def parse_info_line(line: bytes) -> Optional[ClusterView]:
    """The view of an ``INFO {json}`` line; ``None`` for anything else."""
    text = line.strip()
    if not text.startswith(b"INFO"):
        return None
    try:
        info = json.loads(text[4:].strip())
    except ValueError:
        return None
    return ClusterView.from_info(info) if isinstance(info, dict) else None


async def probe_server(host: str, port: int, timeout: float = FAILOVER_PROBE_TIMEOUT_S) -> Optional[ClusterView]:
    """Reads the INFO a nats-server sends a new plain TCP connection (before any
    authentication: no credentials, no permission), then closes it. ``None`` when no INFO
    came in time (server down, TLS first, not a nats-server)."""

    async def read() -> Optional[ClusterView]:
        reader, writer = await asyncio.open_connection(host, port, limit=_MAX_INFO_LINE)
        try:
            return parse_info_line(await reader.readline())
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(read(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError):
        return None


class FailoverJudge:
    """The decision of :class:`_Failover` (the same as ``ymera_core::client::failover``):
    the agent's server is cut off when it advertises fewer servers than a majority of the
    largest cluster seen, ``FAILOVER_STRIKES`` checks in a row; the connection then moves to
    another server of the same cluster that advertises a majority, if there is one."""

    def __init__(self, configured: int) -> None:
        self.largest = max(1, configured)
        self.strikes = 0
        self.quiet_until: Optional[float] = None

    def see(self, view: ClusterView) -> None:
        self.largest = max(self.largest, view.size)

    @property
    def majority(self) -> int:
        return self.largest // 2 + 1

    def is_minority(self, view: ClusterView) -> bool:
        return view.size < self.majority

    def check(self, current: ClusterView, now: float) -> bool:
        """One check of the agent's server; True: search for another server now."""
        self.see(current)
        if not self.is_minority(current):
            self.strikes = 0
            return False
        self.strikes += 1
        return self.strikes >= FAILOVER_STRIKES and (self.quiet_until is None or now >= self.quiet_until)

    def choose(self, current: ClusterView, candidates: Sequence[Tuple[str, ClusterView]]) -> Optional[str]:
        """The ``host:port`` to move to among ``candidates`` (``host:port``, view); None: stay."""
        for _, view in candidates:
            self.see(view)
        if not self.is_minority(current):
            return None
        best: Optional[Tuple[str, ClusterView]] = None
        for netloc, view in candidates:
            same_cluster = current.cluster is None or view.cluster is None or current.cluster == view.cluster
            if view.server_id == current.server_id or not same_cluster or self.is_minority(view):
                continue
            if best is None or view.size > best[1].size:
                best = (netloc, view)
        return best[0] if best else None

    def moved(self, now: float) -> None:
        self.strikes = 0
        self.quiet_until = now + FAILOVER_COOLDOWN_S

    def found_none(self, now: float) -> None:
        self.quiet_until = now + FAILOVER_RETRY_SEARCH_S


def failover_supported() -> bool:
    """nats-py has ``force_reconnect`` and the ``reconnect_to_server_handler`` option (2.12+)."""
    return hasattr(NATS, "force_reconnect") and "reconnect_to_server_handler" in inspect.signature(NATS.connect).parameters


class _Failover:
    """Moves the agent's connection off a nats-server cut off from its cluster's majority.

    In a partition between servers nothing breaks a client's own connection: a client of
    the cut-off server stays on it and reaches neither a JetStream quorum nor the services
    on the other side. A server drops a route whose peer stopped answering and stops
    advertising that peer: the ``connect_urls`` of the INFO it sends new connections shrink.
    Every ``FAILOVER_CHECK_S`` the watcher reads that INFO from the agent's server (a plain
    TCP connection, see :func:`probe_server`); when :class:`FailoverJudge` finds it cut off
    it probes the other servers of the pool and, if one advertises a majority, hands it to
    the reconnect handler and calls ``force_reconnect``. A single server, a cluster with
    ``no_advertise`` (no ``connect_urls``) or a split with no majority anywhere: it stays."""

    def __init__(self, configured: int, reconnect_wait: float) -> None:
        self.judge = FailoverJudge(configured)
        self.reconnect_wait = reconnect_wait
        self.nc: Optional[NATS] = None
        self._next: Optional[Tuple[str, float]] = None
        self._last_netloc: Optional[str] = None
        self._task: Optional["asyncio.Task[None]"] = None

    def handler(self, servers: List[Any], _info: Dict[str, Any]) -> Tuple[Optional[Any], float]:
        """nats-py's ``reconnect_to_server_handler``: the server the watcher chose, once;
        otherwise nats-py's own round robin (with a handler installed nats-py takes the
        first of the pool every time, without a pause, so the handler does it): the server
        with the fewest failed attempts, the one just lost last, and a pause of
        ``reconnect_time_wait`` before a server that failed before."""
        chosen, self._next = self._next, None
        if chosen is not None and time.monotonic() - chosen[1] < 10:
            for server in servers:
                if server.uri.netloc == chosen[0]:
                    return server, 0.0
        if not servers:
            return None, 0.0
        best = min(servers, key=lambda s: (s.reconnects, s.uri.netloc == self._last_netloc))
        return best, (self.reconnect_wait if best.reconnects > 0 else 0.0)

    def start(self, nc: NATS) -> None:
        self.nc = nc
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        nc = self.nc
        assert nc is not None
        while not nc.is_closed:
            await asyncio.sleep(FAILOVER_CHECK_S)
            try:
                await self._check(nc)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a watcher never takes the agent down
                log.debug("failover check failed: %r", err)

    async def _check(self, nc: NATS) -> None:
        url = nc.connected_url
        info = getattr(nc, "_server_info", None) or {}
        if url is None or not nc.is_connected or url.hostname is None:
            return
        self._last_netloc = url.netloc
        if not info.get("cluster"):
            return
        current = await probe_server(url.hostname, url.port or 4222)
        if current is None or (info.get("server_id") and current.server_id != info.get("server_id")):
            return
        now = time.monotonic()
        if not self.judge.check(current, now):
            return
        others = [s.uri for s in nc.server_pool if s.uri.netloc != url.netloc and s.uri.hostname]
        views = await asyncio.gather(*(probe_server(u.hostname or "", u.port or 4222) for u in others))
        candidates = [(u.netloc, v) for u, v in zip(others, views) if v is not None]
        target = self.judge.choose(current, candidates)
        if target is None:
            log.warning(
                "NATS server %s advertises %d of %d servers (cut off from the majority) and no "
                "other server reaches one: staying",
                current.server_name,
                current.size,
                self.judge.largest,
            )
            self.judge.found_none(now)
            return
        log.warning(
            "NATS server %s advertises %d of %d servers (cut off from the majority): moving to %s",
            current.server_name,
            current.size,
            self.judge.largest,
            target,
        )
        self._next = (target, now)
        self.judge.moved(now)
        await nc.force_reconnect()


@dataclass
class Skill:
    """One skill of the agent card (A2A field names)."""

    id: str
    name: Optional[str] = None
    description: str = ""
    tags: List[str] = field(default_factory=list)
    examples: List[str] = field(default_factory=list)

    def to_card(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name or self.id.replace("_", " "),
            "description": self.description,
            "tags": list(self.tags),
            "examples": list(self.examples),
        }


@dataclass
class _Metrics:
    requests_handled: int = 0
    total_processing_time: float = 0.0
    errors: int = 0
    state: str = "initialized"

    def report(self) -> Dict[str, Any]:
        avg = self.total_processing_time / self.requests_handled if self.requests_handled else 0.0
        return {
            "requests_handled": self.requests_handled,
            "processing_time_ms": round(self.total_processing_time * 1000, 3),
            "avg_processing_time_ms": round(avg * 1000, 3),
            "errors": self.errors,
            "state": self.state,
        }


class Config:
    """An agent's effective configuration from the config manager.

    ``values`` is the current document and ``version`` its version (0 when none is stored);
    both follow every change while :meth:`changes` is iterated."""

    def __init__(self, agent: "Agent", environment: str, version: int, values: Any) -> None:
        self._agent = agent
        self.environment = environment
        self.version = version
        self.values = values

    def get(self, key: str, default: Any = None) -> Any:
        if isinstance(self.values, dict):
            return self.values.get(key, default)
        return default

    def __getitem__(self, key: str) -> Any:
        if not isinstance(self.values, dict):
            raise KeyError(key)
        return self.values[key]

    async def changes(self) -> AsyncIterator["Config"]:
        """Yields this object again after each new version (``config.changed.<agent>.*``).

        A change event only names the version; the document is fetched with ``config.get``.
        Versions that arrive while the caller is busy are coalesced into the newest."""
        agent = self._agent
        wake = asyncio.Event()
        subjects = [
            f"config.changed.{agent.name}.{self.environment}",
            f"config.changed.{agent.name}.base",
        ]

        async def on_change(_msg: Msg) -> None:
            wake.set()

        subs = [await agent._nc().subscribe(s, cb=on_change) for s in subjects]
        try:
            # A change between the first fetch and the subscription is caught here.
            wake.set()
            while True:
                await wake.wait()
                wake.clear()
                try:
                    version, values = await agent._fetch_config(self.environment)
                except YmeraError as err:
                    log.warning("config.get failed, keeping version %s: %s", self.version, err)
                    continue
                if version != self.version:
                    self.version, self.values = version, values
                    yield self
        finally:
            for sub in subs:
                try:
                    await sub.unsubscribe()
                except Exception:  # connection already closed
                    pass


class Agent:
    """An agent named ``name``: receives envelopes on ``agent.<name>.inbox``, sends through
    ``communication.send``, registers its card and keeps it alive by heartbeat.

    ``credential`` is the agent's Ymera API key (``ymk_…``) or a bearer token; its owner
    must be ``name`` (the platform ties an envelope's sender to the credential). It is sent
    in the ``X-API-Key`` / ``Authorization`` header of every request and, for NATS servers
    with the Ymera auth callout, as the NATS token. Unset: ``YMERA_API_KEY`` or
    ``YMERA_TOKEN`` from the environment, else none (a stack with auth off).
    """

    def __init__(
        self,
        name: str,
        *,
        skills: Iterable[Union[str, Skill, Dict[str, Any]]] = (),
        credential: Optional[str] = None,
        url: Optional[str] = None,
        description: str = "",
        version: str = "0.1.0",
        input_modes: Sequence[str] = ("application/json", "text/plain"),
        output_modes: Sequence[str] = ("application/json", "text/markdown"),
        ttl_s: int = 30,
        environment: Optional[str] = None,
        request_timeout: float = 10.0,
        register: bool = True,
    ) -> None:
        if not valid_agent_name(name):
            raise ValueError(f"agent name {name!r} must match [a-z0-9][a-z0-9_-]{{0,63}}")
        if not 5 <= ttl_s <= 3600:
            raise ValueError("ttl_s must be between 5 and 3600 seconds")
        self.name = name
        self.skills: List[Skill] = [_skill(s) for s in skills]
        self.credential = credential or os.environ.get("YMERA_API_KEY") or os.environ.get("YMERA_TOKEN")
        self.url = url or os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
        self.description = description
        self.version = version
        self.input_modes = list(input_modes)
        self.output_modes = list(output_modes)
        self.ttl_s = ttl_s
        self.environment = environment or os.environ.get("ENVIRONMENT", "development")
        self.request_timeout = request_timeout
        self.register_card = register
        self.metrics = _Metrics()
        self.registered = False
        self._conn: Optional[NATS] = None
        self._handler: Optional[Handler] = None
        self._pending: Dict[str, "asyncio.Future[Message]"] = {}
        self._seen: Deque[str] = collections.deque(maxlen=SEEN_IDS)
        self._seen_set: Set[str] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_HANDLERS)
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._heartbeat: Optional["asyncio.Task[None]"] = None
        self._stopped = asyncio.Event()
        self._failover: Optional[_Failover] = None

    # ------------------------------------------------------------------ lifecycle

    def inbox(self, handler: Handler) -> Handler:
        """Decorator: ``handler(message)`` is called for each envelope delivered to the inbox.

        For a ``request``, what it returns (unless ``None``) is sent back to the sender as a
        ``response`` envelope with ``correlation_id`` = the request's id; an exception becomes
        ``{"success": false, "error": …}``. Responses to this agent's own :meth:`request`
        calls go to their caller, not to the handler."""
        if not inspect.iscoroutinefunction(handler):
            raise TypeError("the inbox handler must be an async function")
        self._handler = handler
        return handler

    async def start(self) -> "Agent":
        """Connects (reconnecting forever afterwards), subscribes to the inbox and registers
        the card. A failed registration is retried by the heartbeat."""
        if self._conn is not None:
            return self
        options: Dict[str, Any] = {
            "servers": [u.strip() for u in self.url.split(",")],
            "name": f"ymera-agent-{self.name}",
            # Replies to this agent's requests: the auth callout allows _INBOX.<name>.> only.
            "inbox_prefix": f"_INBOX.{self.name}".encode(),
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "allow_reconnect": True,
            "connect_timeout": 5,
            "reconnected_cb": self._on_reconnected,
            "disconnected_cb": self._on_disconnected,
            "error_cb": self._on_error,
        }
        if self.credential:
            options["token"] = _bare(self.credential)
        servers = {u for u in options["servers"] if u}
        failover = _Failover(len(servers), options["reconnect_time_wait"]) if failover_supported() else None
        if failover is not None:
            options["reconnect_to_server_handler"] = failover.handler
        self._conn = await nats.connect(**options)
        if failover is not None:
            failover.start(self._conn)
            self._failover = failover
        await self._conn.subscribe(f"agent.{self.name}.inbox", queue=self.name, cb=self._on_inbox)
        await self._conn.flush()
        self.metrics.state = "idle"
        if self.register_card:
            try:
                await self.register()
            except YmeraError as err:
                log.warning("agent card not registered yet (%s); retrying with the heartbeat", err)
            self._heartbeat = asyncio.ensure_future(self._heartbeat_loop())
        return self

    async def stop(self) -> None:
        """Deregisters the card, lets running handlers finish (5 s) and closes the connection."""
        if self._conn is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._failover is not None:
            self._failover.stop()
            self._failover = None
        if self.register_card and self.registered:
            try:
                await self.call("communication.agents.deregister", {"name": self.name}, timeout=2)
            except YmeraError as err:
                log.info("deregister failed: %s", err)
            self.registered = False
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable("agent stopped"))
        self._pending.clear()
        conn, self._conn = self._conn, None
        try:
            await conn.drain()
        except Exception:
            await conn.close()
        self._stopped.set()

    async def __aenter__(self) -> "Agent":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def run_forever(self) -> None:
        """Starts (if needed) and runs until :meth:`stop` or Ctrl-C / SIGTERM."""
        await self.start()
        loop = asyncio.get_running_loop()
        try:
            import signal

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.stop()))
        except (NotImplementedError, RuntimeError):
            pass
        await self._stopped.wait()

    def run(self) -> None:
        """Blocking :meth:`run_forever` (``asyncio.run``)."""
        asyncio.run(self.run_forever())

    # ------------------------------------------------------------------ platform calls

    async def call(self, subject: str, body: Any = None, *, timeout: Optional[float] = None) -> Any:
        """A request to a platform endpoint (``config.get``, ``code-analysis.analyze``, …) with
        the agent's credential. Returns the decoded JSON reply; raises a :class:`YmeraError`."""
        data = b"" if body is None else json.dumps(body).encode()
        if len(data) > MAX_MESSAGE_SIZE:
            from .errors import PayloadTooLarge

            raise PayloadTooLarge(f"request body of {len(data)} bytes is over {MAX_MESSAGE_SIZE}")
        try:
            reply = await self._nc().request(
                subject, data, timeout=timeout or self.request_timeout, headers=self._headers()
            )
        except NoRespondersError:
            raise Unavailable(f"no service answers {subject}", details={"reason": "no_responders"}) from None
        except NatsTimeoutError:
            raise Timeout(f"{subject}: no reply within {timeout or self.request_timeout} s") from None
        error = error_from_reply(reply.headers, reply.data)
        if error is not None:
            raise error
        if not reply.data:
            return None
        try:
            return json.loads(reply.data)
        except ValueError:
            return reply.data.decode(errors="replace")

    async def send(
        self,
        recipients: Union[str, Sequence[str]],
        payload: Any,
        *,
        type: str = "event",
        subject: str = "",
        conversation_id: Optional[str] = None,
        correlation_id: Optional[str] = None,
        priority: str = "normal",
        metadata: Optional[Dict[str, str]] = None,
    ) -> Dict[str, Any]:
        """Sends an envelope through ``communication.send``; a recipient may be an agent name
        or ``skill:<id>`` (resolved by the platform to a live agent with the skill). Returns
        the platform's answer (``id``, ``status``, ``recipients``, …)."""
        envelope = self._envelope(
            recipients, payload, type, subject, conversation_id, correlation_id, priority, metadata
        )
        reply = await self.call("communication.send", envelope)
        return reply if isinstance(reply, dict) else {"id": envelope["id"]}

    async def request(
        self,
        recipient: str,
        payload: Any,
        *,
        subject: str = "",
        timeout: float = 30.0,
        conversation_id: Optional[str] = None,
        priority: str = "normal",
        metadata: Optional[Dict[str, str]] = None,
    ) -> Message:
        """Sends a ``request`` envelope and waits for the ``response`` whose
        ``correlation_id`` is its id (which arrives in this agent's inbox)."""
        if len(self._pending) >= MAX_PENDING_REQUESTS:
            raise Unavailable("too many requests waiting for a response")
        envelope = self._envelope(
            recipient, payload, "request", subject, conversation_id, None, priority, metadata
        )
        future: "asyncio.Future[Message]" = asyncio.get_running_loop().create_future()
        self._pending[envelope["id"]] = future
        try:
            await self.call("communication.send", envelope)
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"no response to {envelope['id']} within {timeout} s") from None
        finally:
            self._pending.pop(envelope["id"], None)

    # ------------------------------------------------------------------ agent card

    def card(self) -> Dict[str, Any]:
        """The agent card (DESIGN §9)."""
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "skills": [s.to_card() for s in self.skills],
            "input_modes": self.input_modes,
            "output_modes": self.output_modes,
            "ttl_s": self.ttl_s,
        }

    async def register(self) -> Any:
        """Registers (or refreshes) the card with ``communication.agents.register``."""
        reply = await self.call("communication.agents.register", self.card())
        self.registered = True
        return reply

    async def heartbeat(self) -> Any:
        """Refreshes the card's TTL and reports this agent's metrics."""
        body = {"name": self.name, "metrics": self.metrics.report()}
        try:
            return await self.call("communication.agents.heartbeat", body)
        except NotFound:
            # Expired meanwhile (or the platform forgot it): register again.
            return await self.register()

    async def _heartbeat_loop(self) -> None:
        period = max(1.0, self.ttl_s / 3)
        while True:
            await asyncio.sleep(period)
            try:
                if self.registered:
                    await self.heartbeat()
                else:
                    await self.register()
            except YmeraError as err:
                log.warning("heartbeat failed: %s", err)
            except Exception as err:  # never let the loop die
                log.warning("heartbeat failed: %r", err)

    # ------------------------------------------------------------------ configuration

    async def config(self, environment: Optional[str] = None) -> Config:
        """The agent's current configuration (``config.get``); iterate ``changes()`` on the
        result to follow new versions."""
        env = environment or self.environment
        version, values = await self._fetch_config(env)
        return Config(self, env, version, values)

    async def _fetch_config(self, environment: str) -> "tuple[int, Any]":
        try:
            reply = await self.call("config.get", {"agent": self.name, "environment": environment})
        except NotFound:
            return 0, {}
        return int(reply.get("version", 0)), reply.get("config", {})

    # ------------------------------------------------------------------ internals

    def _nc(self) -> NATS:
        if self._conn is None:
            raise Unavailable("the agent is not started (await agent.start())")
        return self._conn

    def _headers(self) -> Optional[Dict[str, str]]:
        if not self.credential:
            return None
        bare = _bare(self.credential)
        if bare.startswith("ymk_"):
            return {"X-API-Key": bare}
        return {"Authorization": f"Bearer {bare}"}

    def _envelope(
        self,
        recipients: Union[str, Sequence[str]],
        payload: Any,
        type: str,
        subject: str,
        conversation_id: Optional[str],
        correlation_id: Optional[str],
        priority: str,
        metadata: Optional[Dict[str, str]],
    ) -> Dict[str, Any]:
        listed = [recipients] if isinstance(recipients, str) else list(recipients)
        return new_envelope(
            self.name,
            listed,
            payload,
            type=type,
            subject=subject,
            conversation_id=conversation_id,
            correlation_id=correlation_id,
            priority=priority,
            metadata=metadata,
        )

    async def _on_inbox(self, msg: Msg) -> None:
        # Acknowledge at once (a reply without error headers), then handle: a slow handler
        # does not make the platform retry. Redeliveries of a handled id are dropped.
        try:
            await msg.respond(b"")
        except Exception as err:
            log.debug("ack failed: %r", err)
        try:
            envelope = json.loads(msg.data)
            message = Message.from_envelope(envelope)
        except (ValueError, TypeError, AttributeError):
            log.warning("dropped an inbox message that is not an envelope")
            return
        if message.id in self._seen_set:
            return
        self._remember(message.id)
        if message.type == "response" and message.correlation_id in self._pending:
            future = self._pending[message.correlation_id]
            if not future.done():
                future.set_result(message)
            return
        if self._handler is None:
            return
        task = asyncio.ensure_future(self._handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _remember(self, message_id: str) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(message_id)
        self._seen_set.add(message_id)

    async def _handle(self, message: Message) -> None:
        assert self._handler is not None
        async with self._slots:
            self.metrics.state = "processing"
            started = time.monotonic()
            try:
                result = await self._handler(message)
                failed = False
            except Exception as err:  # the seed's shape: success false, the error
                log.exception("inbox handler failed")
                result, failed = {"success": False, "error": str(err), "agent": self.name}, True
            elapsed = time.monotonic() - started
            self.metrics.requests_handled += 1
            self.metrics.total_processing_time += elapsed
            if failed:
                self.metrics.errors += 1
            self.metrics.state = "idle"
        if result is None or message.type != "request" or not message.sender:
            return
        if isinstance(result, dict) and "processing_time" not in result:
            result = {**result, "processing_time": round(elapsed, 6)}
        try:
            await self.send(
                message.sender,
                result,
                type="response",
                subject=message.subject,
                conversation_id=message.conversation_id,
                correlation_id=message.id,
            )
        except YmeraError as err:
            log.warning("cannot send the response to %s: %s", message.sender, err)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        if self.register_card:
            try:
                await self.register()
            except YmeraError as err:
                log.warning("re-registering the card failed: %s", err)

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS; reconnecting")

    async def _on_error(self, err: Exception) -> None:
        log.warning("NATS: %r", err)


def _bare(credential: str) -> str:
    credential = credential.strip()
    return credential[len("Bearer ") :].strip() if credential.startswith("Bearer ") else credential


def _skill(value: Union[str, Skill, Dict[str, Any]]) -> Skill:
    if isinstance(value, Skill):
        return value
    if isinstance(value, str):
        return Skill(id=value)
    return Skill(
        id=str(value["id"]),
        name=value.get("name"),
        description=value.get("description", ""),
        tags=list(value.get("tags", [])),
        examples=list(value.get("examples", [])),
    )
