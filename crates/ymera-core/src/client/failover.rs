//! Moving a connection off a nats-server that is cut off from its cluster's majority.
//!
//! In a partition between servers nothing breaks a client's own connection: a client of the
//! cut-off (minority) server stays on it, and from there reaches neither a JetStream quorum
//! nor the services connected to the other side. A server drops a route whose peer stopped
//! answering (the route keep-alive, `cluster { ping_interval, ping_max }`) and then stops
//! advertising that peer's client URLs: the `connect_urls` of the `INFO` it sends a new
//! connection shrink to itself. async-nats keeps the `INFO` of the connect only (later `INFO`
//! updates are not surfaced), so a watcher per connection asks the server again: every
//! [`CHECK_EVERY`] it opens a plain TCP connection to the server the client is on, reads the
//! `INFO` line the server sends before any authentication, and closes it. That needs no NATS
//! permission and no credentials; the server sees a connection that never sent `CONNECT`.
//!
//! The decision ([`Judge`]): the server is cut off when it advertises fewer servers than a
//! majority of the largest cluster seen (from any probe, or the number of configured URLs),
//! [`STRIKES`] checks in a row. Then every other server of the client's pool is probed, and the
//! connection moves ([`async_nats::Client::force_reconnect`], the target handed to the
//! connector through its reconnect-to-server callback) to one that advertises a majority;
//! when no server does (a single-node deployment, a cluster split with no majority anywhere,
//! the other servers unreachable), it stays. After a move it waits [`COOLDOWN`] before judging
//! again, so it never flaps.
//!
//! Limits: a cluster with `no_advertise: true` advertises no `connect_urls`, so every server
//! looks like a cluster of one and the watcher never moves (it never does harm either; the
//! shipped configs advertise: k8s `client_advertise` with the pods' stable names); a
//! server with `handshake_first` TLS sends no plaintext `INFO` (the probe gets nothing, the
//! watcher stays). WebSocket addresses are not probed.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::{Client, ReconnectToServer, Server, ServerAddr, ServerInfo};
use tokio::io::AsyncBufReadExt as _;

/// How often the watcher asks the client's server for its `INFO`.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Checks in a row below a majority before the connection moves.
pub const STRIKES: u32 = 2;
/// After a move (or a search that found no better server), how long the watcher waits
/// before it may move (search) again.
pub const COOLDOWN: Duration = Duration::from_secs(5);
/// Wait after a search that found no server with a majority before searching again.
const RETRY_SEARCH: Duration = Duration::from_secs(2);
/// One probe's time limit (TCP connect + the `INFO` line).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest `INFO` line read (a large cluster's `connect_urls` fit many times over).
const MAX_INFO_LINE: usize = 64 * 1024;
/// How often at most the whole pool is probed to find which address the client is on.
const LOCATE_EVERY: Duration = Duration::from_secs(5);
/// How long a chosen target stays valid for the reconnect-to-server callback.
const TARGET_TTL: Duration = Duration::from_secs(10);

/// A server's view of its cluster, from an `INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The server's id (changes when it restarts).
    pub server_id: String,
    /// The server's name.
    pub server_name: String,
    /// `cluster { name }`, when it runs in a cluster.
    pub cluster: Option<String>,
    /// How many servers it advertises (distinct `connect_urls`, itself included), at least 1.
    pub size: usize,
}

impl ClusterView {
    /// The view an `INFO` gives.
    pub fn from_info(info: &ServerInfo) -> Self {
        let mut urls: Vec<&str> = info.connect_urls.iter().map(String::as_str).collect();
        urls.sort_unstable();
        urls.dedup();
        ClusterView {
            server_id: info.server_id.clone(),
            server_name: info.server_name.clone(),
            cluster: info.cluster.clone().filter(|c| !c.is_empty()),
            size: urls.len().max(1),
        }
    }
}

/// Parses the `INFO {json}` line a server sends first.
pub fn parse_info_line(line: &str) -> Option<ClusterView> {
    let json = line.trim().strip_prefix("INFO")?.trim_start();
    let info: ServerInfo = serde_json::from_str(json).ok()?;
    Some(ClusterView::from_info(&info))
}

/// Reads `addr`'s `INFO` over a new plain TCP connection; `None` when the server does not
/// answer with one in time (down, TLS first, not a nats-server) or `addr` is a WebSocket.
pub async fn probe(addr: &ServerAddr) -> Option<ClusterView> {
    if addr.is_websocket() {
        return None;
    }
    let host = addr.host().to_owned();
    let port = addr.port();
    let read = async move {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let mut reader =
            tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(stream, MAX_INFO_LINE as u64));
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).await.ok()?;
        parse_info_line(std::str::from_utf8(&line).ok()?)
    };
    tokio::time::timeout(PROBE_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

/// The decision: is the client's server cut off, and where to go.
#[derive(Debug)]
pub struct Judge {
    /// The largest cluster seen (servers), at least 1.
    largest: usize,
    /// Checks in a row below a majority.
    strikes: u32,
    /// No move (or search) before this.
    quiet_until: Option<Instant>,
}

impl Judge {
    /// A judge that starts from `configured` distinct configured server URLs.
    pub fn new(configured: usize) -> Self {
        Judge {
            largest: configured.max(1),
            strikes: 0,
            quiet_until: None,
        }
    }

    /// Learns from any server's view (the largest cluster seen).
    pub fn see(&mut self, view: &ClusterView) {
        self.largest = self.largest.max(view.size);
    }

    /// The largest cluster seen.
    pub fn largest(&self) -> usize {
        self.largest
    }

    /// Servers a majority of the largest cluster seen needs.
    pub fn majority(&self) -> usize {
        self.largest / 2 + 1
    }

    /// A server that advertises fewer servers than a majority.
    pub fn is_minority(&self, view: &ClusterView) -> bool {
        view.size < self.majority()
    }

    /// One check of the client's server; true when the watcher should search for another
    /// server now: below a majority [`STRIKES`] times in a row, not within a quiet time.
    pub fn check(&mut self, current: &ClusterView, now: Instant) -> bool {
        self.see(current);
        if !self.is_minority(current) {
            self.strikes = 0;
            return false;
        }
        self.strikes = self.strikes.saturating_add(1);
        self.strikes >= STRIKES && self.quiet_until.is_none_or(|until| now >= until)
    }

    /// The connection's server changed (reconnected elsewhere): start counting again.
    pub fn reset(&mut self) {
        self.strikes = 0;
    }

    /// The best server to move to among `candidates` (address, its view): another server
    /// (not `current`'s id), of the same cluster, advertising a majority; the one that
    /// advertises most, the first such in `candidates` on a tie (callers shuffle them).
    /// `None`: stay.
    pub fn choose<'a>(
        &mut self,
        current: &ClusterView,
        candidates: &'a [(ServerAddr, ClusterView)],
    ) -> Option<&'a ServerAddr> {
        for (_, view) in candidates {
            self.see(view);
        }
        if !self.is_minority(current) {
            return None;
        }
        let mut best: Option<&(ServerAddr, ClusterView)> = None;
        for candidate in candidates {
            let view = &candidate.1;
            let same_cluster = current.cluster.is_none()
                || view.cluster.is_none()
                || current.cluster == view.cluster;
            if view.server_id == current.server_id || !same_cluster || self.is_minority(view) {
                continue;
            }
            if best.is_none_or(|b| view.size > b.1.size) {
                best = Some(candidate);
            }
        }
        best.map(|(addr, _)| addr)
    }

    /// A move was started at `now`.
    pub fn moved(&mut self, now: Instant) {
        self.strikes = 0;
        self.quiet_until = Some(now + COOLDOWN);
    }

    /// A search found no server to move to at `now`.
    pub fn found_none(&mut self, now: Instant) {
        self.quiet_until = Some(now + RETRY_SEARCH);
    }
}

/// The server the watcher chose, for the connector's reconnect-to-server callback.
#[derive(Debug, Default)]
pub struct NextServer(Mutex<Option<(ServerAddr, Instant)>>);

impl NextServer {
    fn set(&self, addr: ServerAddr) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((addr, Instant::now()));
    }

    /// The chosen server, once, if it is in `pool` and was chosen recently; `None` lets the
    /// connector choose as it always does.
    pub fn take(&self, pool: &[Server]) -> Option<ReconnectToServer> {
        let (addr, at) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        (at.elapsed() < TARGET_TTL && pool.iter().any(|s| s.addr == addr)).then_some(
            ReconnectToServer {
                addr,
                delay: Some(Duration::ZERO),
            },
        )
    }
}

/// How many handles share `client`'s statistics (every `Client` clone holds one, and the
/// connection's connector).
fn holders(client: &Client) -> usize {
    Arc::strong_count(&client.statistics()).saturating_sub(1)
}

/// How many of those handles belong to the connection itself, not to a `Client`: the
/// connector always holds one, and a live connection (async-nats 0.51 `Connection`) another.
/// While not connected a connection attempt may or may not hold one; counting it as absent
/// only delays the watcher's end to the next check that finds the client connected.
fn internal_holders(connected: bool) -> usize {
    if connected { 2 } else { 1 }
}

/// Starts the watcher of `client` (see the module docs). It holds a clone of the client and
/// ends, releasing it, once every other clone is gone or the connection is closed.
pub fn spawn(client: &Client, next: Arc<NextServer>, configured: usize) {
    let watched = client.clone();
    tokio::spawn(async move {
        let mut watcher = Watcher {
            client: watched,
            next,
            judge: Judge::new(configured),
            located: None,
            last_locate: None,
        };
        watcher.run().await;
    });
}

struct Watcher {
    client: Client,
    next: Arc<NextServer>,
    judge: Judge,
    /// The address of the server the client is on, and that server's id.
    located: Option<(ServerAddr, String)>,
    last_locate: Option<Instant>,
}

impl Watcher {
    async fn run(&mut self) {
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut released = false;
        loop {
            ticks.tick().await;
            // Only the watcher's clone is left: the connection is the caller's no more.
            let connected =
                self.client.connection_state() == async_nats::connection::State::Connected;
            // Twice in a row: a check racing a reconnect (state and connection handle
            // changing apart) must not end the watcher of a client still in use.
            if holders(&self.client) <= internal_holders(connected) + 1 {
                if released {
                    return;
                }
                released = true;
                continue;
            }
            released = false;
            if !connected {
                continue;
            }
            let info = self.client.server_info();
            // A server outside a cluster cannot be cut off from one: nothing to ask.
            if info.server_id.is_empty() || info.cluster.as_deref().is_none_or(str::is_empty) {
                continue;
            }
            if let Err(closed) = self.check(&info.server_id).await {
                tracing::debug!(error = %closed, "NATS connection closed, failover watcher ends");
                return;
            }
        }
    }

    /// One check of the server with id `server_id` the client is on.
    async fn check(&mut self, server_id: &str) -> Result<(), async_nats::client::ReconnectError> {
        if self.located.as_ref().is_none_or(|(_, id)| id != server_id) {
            self.judge.reset();
            if !self.locate(server_id).await {
                return Ok(());
            }
        }
        let Some((addr, _)) = self.located.clone() else {
            return Ok(());
        };
        let Some(current) = probe(&addr).await else {
            return Ok(());
        };
        if current.server_id != server_id {
            // The address now leads to another server (a restart, a load balancer).
            self.located = None;
            return Ok(());
        }
        let now = Instant::now();
        if !self.judge.check(&current, now) {
            return Ok(());
        }
        let candidates = self.probe_pool(Some(&addr)).await;
        let Some(target) = self.judge.choose(&current, &candidates).cloned() else {
            tracing::warn!(
                server = %current.server_name,
                advertised = current.size,
                largest = self.judge.largest(),
                "NATS server is cut off from its cluster's majority, and no other server \
                 reaches one: staying"
            );
            self.judge.found_none(now);
            return Ok(());
        };
        tracing::warn!(
            server = %current.server_name,
            advertised = current.size,
            largest = self.judge.largest(),
            to = %target.as_url_str(),
            "NATS server is cut off from its cluster's majority: moving the connection"
        );
        self.next.set(target);
        self.judge.moved(now);
        self.located = None;
        self.client.force_reconnect().await
    }

    /// Finds which address of the pool leads to the server with id `server_id`.
    async fn locate(&mut self, server_id: &str) -> bool {
        if self
            .last_locate
            .is_some_and(|at| at.elapsed() < LOCATE_EVERY)
        {
            return false;
        }
        self.last_locate = Some(Instant::now());
        let found = self
            .probe_pool(None)
            .await
            .into_iter()
            .find(|(_, view)| view.server_id == server_id);
        self.located = found.map(|(addr, view)| (addr, view.server_id));
        self.located.is_some()
    }

    /// Probes every address of the client's pool but `except`, at once, in random order.
    async fn probe_pool(&mut self, except: Option<&ServerAddr>) -> Vec<(ServerAddr, ClusterView)> {
        use rand::seq::SliceRandom as _;
        let Ok(mut pool) = self.client.server_pool().await else {
            return Vec::new();
        };
        pool.retain(|s| except.is_none_or(|e| s.addr != *e));
        pool.shuffle(&mut rand::rng());
        let probes = pool.into_iter().map(|server| async move {
            let view = probe(&server.addr).await;
            view.map(|view| (server.addr, view))
        });
        let views: Vec<_> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        for (_, view) in &views {
            self.judge.see(view);
        }
        views
    }
}

/// The number of distinct server URLs in a `NATS_URL` list.
pub fn configured_servers(urls: &[&str]) -> usize {
    let mut urls: Vec<&str> = urls.iter().copied().filter(|u| !u.is_empty()).collect();
    urls.sort_unstable();
    urls.dedup();
    urls.len().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, size: usize) -> ClusterView {
        ClusterView {
            server_id: id.to_owned(),
            server_name: id.to_owned(),
            cluster: Some("ymera".to_owned()),
            size,
        }
    }

    fn addr(port: u16) -> ServerAddr {
        format!("nats://127.0.0.1:{port}").parse().expect("address")
    }

    #[test]
    fn info_line_gives_the_advertised_cluster() {
        let line = "INFO {\"server_id\":\"NA\",\"server_name\":\"n1\",\"cluster\":\"ymera\",\
                    \"connect_urls\":[\"127.0.0.1:4222\",\"127.0.0.1:4223\",\"127.0.0.1:4222\"],\
                    \"max_payload\":1048576} \r\n";
        let view = parse_info_line(line).expect("an INFO");
        assert_eq!(view.server_id, "NA");
        assert_eq!(view.cluster.as_deref(), Some("ymera"));
        assert_eq!(view.size, 2, "duplicates counted once");
        let single = parse_info_line("INFO {\"server_id\":\"S\"}\r\n").expect("an INFO");
        assert_eq!((single.size, single.cluster), (1, None));
        assert_eq!(parse_info_line("-ERR 'x'\r\n"), None);
        assert_eq!(parse_info_line("INFO {not json\r\n"), None);
    }

    #[test]
    fn a_single_server_is_never_cut_off() {
        let mut judge = Judge::new(1);
        let now = Instant::now();
        let alone = ClusterView {
            cluster: None,
            ..view("S", 1)
        };
        for _ in 0..10 {
            assert!(!judge.check(&alone, now));
        }
        assert_eq!(judge.choose(&alone, &[]), None);
    }

    #[test]
    fn a_server_of_a_majority_stays() {
        let mut judge = Judge::new(3);
        let now = Instant::now();
        // One of three servers gone (killed or partitioned away): two is still a majority.
        for _ in 0..10 {
            assert!(!judge.check(&view("A", 2), now));
            assert!(!judge.check(&view("A", 3), now));
        }
    }

    #[test]
    fn a_cut_off_server_is_left_after_two_checks_for_a_majority_server() {
        let mut judge = Judge::new(1);
        let now = Instant::now();
        // Learned from the first INFO: a cluster of 3.
        assert!(!judge.check(&view("A", 3), now));
        assert_eq!(judge.majority(), 2);
        assert!(!judge.check(&view("A", 1), now), "one check is not enough");
        assert!(judge.check(&view("A", 1), now));
        let candidates = [
            (addr(1), view("A", 1)), // the same server under another address
            (addr(2), view("B", 2)),
            (addr(3), view("C", 2)),
        ];
        assert_eq!(judge.choose(&view("A", 1), &candidates), Some(&addr(2)));
        judge.moved(now);
        // Quiet after a move, however long the new server looks cut off.
        assert!(!judge.check(&view("B", 1), now));
        assert!(!judge.check(&view("B", 1), now + Duration::from_secs(1)));
        assert!(judge.check(&view("B", 1), now + COOLDOWN));
    }

    #[test]
    fn a_strike_run_is_broken_by_one_good_check() {
        let mut judge = Judge::new(3);
        let now = Instant::now();
        assert!(!judge.check(&view("A", 1), now));
        assert!(!judge.check(&view("A", 3), now));
        assert!(!judge.check(&view("A", 1), now));
        assert!(judge.check(&view("A", 1), now));
    }

    #[test]
    fn no_move_without_a_server_that_reaches_a_majority() {
        let mut judge = Judge::new(3);
        let now = Instant::now();
        judge.check(&view("A", 1), now);
        assert!(judge.check(&view("A", 1), now));
        // Every server alone (a full split, or the others are another cluster).
        let alone = [(addr(2), view("B", 1)), (addr(3), view("C", 1))];
        assert_eq!(judge.choose(&view("A", 1), &alone), None);
        let other_cluster = [(
            addr(4),
            ClusterView {
                cluster: Some("other".to_owned()),
                ..view("D", 3)
            },
        )];
        assert_eq!(judge.choose(&view("A", 1), &other_cluster), None);
        judge.found_none(now);
        assert!(!judge.check(&view("A", 1), now + Duration::from_millis(500)));
        assert!(judge.check(&view("A", 1), now + RETRY_SEARCH));
    }

    #[test]
    fn the_largest_cluster_seen_sets_the_majority() {
        let mut judge = Judge::new(3);
        // A 5-node cluster learned from a probe: 2 is a minority of 5.
        judge.see(&view("E", 5));
        assert_eq!(judge.majority(), 3);
        assert!(judge.is_minority(&view("A", 2)));
        let candidates = [(addr(2), view("B", 3)), (addr(3), view("C", 4))];
        assert_eq!(judge.choose(&view("A", 2), &candidates), Some(&addr(3)));
        // A server that is not a minority is never left, whatever the others say.
        assert_eq!(judge.choose(&view("A", 3), &candidates), None);
    }

    fn server(port: u16) -> Server {
        Server {
            addr: addr(port),
            failed_attempts: 0,
            did_connect: true,
            is_discovered: false,
            last_error: None,
        }
    }

    #[test]
    fn the_chosen_server_is_handed_out_once_and_only_from_the_pool() {
        let next = NextServer::default();
        let pool = [server(1), server(2)];
        assert!(
            next.take(&pool).is_none(),
            "nothing chosen: the connector's own choice"
        );
        next.set(addr(2));
        let target = next.take(&pool).expect("the chosen server");
        assert_eq!(target.addr, addr(2));
        assert_eq!(target.delay, Some(Duration::ZERO));
        assert!(next.take(&pool).is_none(), "handed out once");
        next.set(addr(3));
        assert!(next.take(&pool).is_none(), "not in the pool");
    }

    #[test]
    fn configured_urls_are_counted_once() {
        assert_eq!(configured_servers(&["nats://a:4222"]), 1);
        assert_eq!(
            configured_servers(&["nats://a:4222", "nats://b:4222", "nats://a:4222"]),
            2
        );
        assert_eq!(configured_servers(&[]), 1);
    }
}
