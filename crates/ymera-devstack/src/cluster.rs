//! A JetStream cluster of nats-servers on loopback: every node its own client, monitoring
//! and route port, its own store directory, routes to every other node.
//!
//! ```text
//! <dir>/n1/   store/ (JetStream), nats-server.log, cluster.conf
//! <dir>/n2/   …
//! ```

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::io_context;
use crate::host::{ServerDir, free_port, server_dir};
use crate::process::RunAs;
use crate::{DevstackError, NatsOptions, NatsServer, Result};

/// Most nodes a [`NatsCluster`] starts (JetStream clusters are 3 or 5 in production).
pub const MAX_CLUSTER_SIZE: usize = 7;
/// Route keep-alive, as `k8s/base/nats/nats.conf` ships it: a route whose peer stopped
/// answering (partition, SIGSTOP) is dropped after ~4–6 s, so its queue subscribers stop
/// drawing requests (nats-server's default, the server-wide 2 min, keeps them minutes).
const ROUTE_PINGS: &str = "ping_interval: \"2s\"\n  ping_max: 2";
/// How many times a cluster start is tried on fresh ports after a port was taken.
const START_ATTEMPTS: u32 = 3;

/// How to start a [`NatsCluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsClusterOptions {
    /// Number of servers, 1 to [`MAX_CLUSTER_SIZE`].
    pub size: usize,
    /// The cluster's name (`cluster { name }`).
    pub name: String,
    /// Keep every node's files under `<dir>/n<i>` (not removed on drop) instead of a
    /// temporary directory.
    pub dir: Option<PathBuf>,
    /// Node i's client port is `base + i` (default: free ports).
    pub client_base_port: Option<u16>,
    /// Node i's monitoring port is `base + i` (default: free ports).
    pub monitor_base_port: Option<u16>,
    /// Node i's route port is `base + i` (default: free ports).
    pub route_base_port: Option<u16>,
    /// `jetstream { sync_interval: always }`: fsync every write before it is acknowledged
    /// (nats-server's default flushes every two minutes).
    pub sync_always: bool,
    /// The servers' `max_payload` in bytes.
    pub max_payload: Option<u32>,
    /// Node i (0-based) runs with `base + i` as its only group (real and effective gid;
    /// needs root), so firewall rules can tell its sockets from the other nodes' on the
    /// shared loopback (`meta skgid`): how `ymera chaos` partitions one node, inside a
    /// network namespace of its own. `None`: the nodes run as the current user.
    pub node_group_base: Option<u32>,
}

impl NatsClusterOptions {
    /// `size` nodes named `ymera`, free ports, temporary directories, default fsync.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            name: "ymera".to_owned(),
            dir: None,
            client_base_port: None,
            monitor_base_port: None,
            route_base_port: None,
            sync_always: false,
            max_payload: None,
            node_group_base: None,
        }
    }
}

/// One node's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodePorts {
    client: u16,
    monitor: u16,
    route: u16,
}

/// A running JetStream cluster. Dropping it kills every node and removes temporary files.
pub struct NatsCluster {
    // Field order matters: the nodes go before their parent directory is removed.
    nodes: Vec<NatsServer>,
    names: Vec<String>,
    route_ports: Vec<u16>,
    node_group_base: Option<u32>,
    _dir: ServerDir,
}

impl NatsCluster {
    /// Starts a cluster of `size` nodes on free ports and waits until every node is ready.
    pub fn start(size: usize) -> Result<Self> {
        Self::start_with(NatsClusterOptions::new(size))
    }

    /// Starts every node, then waits until each answers `/healthz` (which needs a JetStream
    /// meta leader, so a quorum of the nodes) and sends `INFO`. With free ports, a start
    /// that lost a port to another process is tried again on fresh ports.
    pub fn start_with(options: NatsClusterOptions) -> Result<Self> {
        if options.size == 0 || options.size > MAX_CLUSTER_SIZE {
            return Err(DevstackError::Io {
                context: format!(
                    "a NATS cluster has 1 to {MAX_CLUSTER_SIZE} servers, not {}",
                    options.size
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        let fixed = options.client_base_port.is_some()
            || options.monitor_base_port.is_some()
            || options.route_base_port.is_some();
        let mut attempt = 1;
        loop {
            match Self::try_start(&options) {
                Ok(cluster) => return Ok(cluster),
                Err((err, in_use)) if in_use && !fixed && attempt < START_ATTEMPTS => {
                    let _ = err;
                    attempt += 1;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    fn try_start(options: &NatsClusterOptions) -> std::result::Result<Self, (DevstackError, bool)> {
        let plain = |err| (err, false);
        let dir = server_dir("natscluster", options.dir.as_deref()).map_err(plain)?;
        let ports = (0..options.size)
            .map(|i| {
                let offset = u16::try_from(i).unwrap_or(u16::MAX);
                let pick = |base: Option<u16>| match base {
                    Some(base) => Ok(base.saturating_add(offset)),
                    None => free_port(),
                };
                Ok(NodePorts {
                    client: pick(options.client_base_port)?,
                    monitor: pick(options.monitor_base_port)?,
                    route: pick(options.route_base_port)?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(plain)?;
        let names: Vec<String> = (1..=options.size).map(|i| format!("n{i}")).collect();
        let mut nodes = Vec::with_capacity(options.size);
        for (i, name) in names.iter().enumerate() {
            let node_dir = dir.path().join(name);
            fs::create_dir_all(&node_dir)
                .map_err(io_context(format!("creating {node_dir:?}")))
                .map_err(plain)?;
            let config = write_node_config(&node_dir, name, i, &ports, options).map_err(plain)?;
            let run_as = match options.node_group_base {
                Some(base) => RunAs::Group(base.saturating_add(u32::try_from(i).unwrap_or(0))),
                None => RunAs::CurrentUser,
            };
            let node = NatsServer::spawn_unready(
                NatsOptions {
                    config_file: Some(config),
                    max_payload: options.max_payload,
                    jetstream: true,
                    extra_args: Vec::new(),
                    dir: Some(node_dir),
                    port: Some(ports[i].client),
                    monitor_port: Some(ports[i].monitor),
                },
                run_as,
            )
            .map_err(plain)?;
            nodes.push(node);
        }
        let mut cluster = Self {
            nodes,
            names,
            route_ports: ports.iter().map(|p| p.route).collect(),
            node_group_base: options.node_group_base,
            _dir: dir,
        };
        for i in 0..cluster.nodes.len() {
            if let Err(err) = cluster.nodes[i].wait_ready() {
                let in_use = cluster.nodes.iter().any(|node| {
                    fs::read_to_string(node.log_path()).is_ok_and(|log| {
                        log.to_ascii_lowercase().contains("address already in use")
                    })
                });
                return Err((err, in_use));
            }
        }
        Ok(cluster)
    }

    /// The nodes, in order (`n1`, `n2`, …).
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> Option<&NatsServer> {
        self.nodes.get(i)
    }

    /// Node `i`, to kill, stop or restart it.
    pub fn node_mut(&mut self, i: usize) -> Option<&mut NatsServer> {
        self.nodes.get_mut(i)
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `server_name` of node `i` (`n1`, …), as JetStream names stream leaders.
    pub fn server_name(&self, i: usize) -> Option<&str> {
        self.names.get(i).map(String::as_str)
    }

    /// The index of the node whose `server_name` is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The route (cluster) port of node `i`.
    pub fn route_port(&self, i: usize) -> Option<u16> {
        self.route_ports.get(i).copied()
    }

    /// The group node `i` runs as (see [`NatsClusterOptions::node_group_base`]).
    pub fn node_group(&self, i: usize) -> Option<u32> {
        let offset = u32::try_from(i).ok()?;
        (i < self.nodes.len())
            .then_some(self.node_group_base?)
            .map(|base| base.saturating_add(offset))
    }

    /// Every node's client URL, comma-separated: what `NATS_URL` takes.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's client URL, for `async_nats::connect` (which takes a list, not a
    /// comma-separated string).
    pub fn url_list(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Crash of node `i`: SIGKILL, then reap.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.node_mut_or_err(i)?.kill()
    }

    /// Starts node `i` again (same ports, same store) and waits until it is ready.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.node_mut_or_err(i)?.restart()
    }

    /// Stops every node gracefully (SIGTERM to all first, so no node waits on the others),
    /// returning the first error.
    pub fn stop(&mut self) -> Result<()> {
        for node in &self.nodes {
            let _ = node.signal("TERM");
        }
        let mut first = None;
        for node in &mut self.nodes {
            if let Err(err) = node.stop() {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Starts every node that is not running again (all spawned first, then waited for, so
    /// a cluster stopped whole comes back whole).
    pub fn restart_stopped(&mut self) -> Result<()> {
        let mut restarted = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !node.is_running() {
                node.respawn_unready()?;
                restarted.push(i);
            }
        }
        for i in restarted {
            self.nodes[i].wait_ready()?;
        }
        Ok(())
    }

    /// Waits until every running node answers `/healthz` with 200, at most `timeout`.
    pub fn wait_healthy(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let healthy = self.nodes.iter_mut().all(|node| {
                !node.is_running() || crate::probe::http_ok(node.monitor_port(), "/healthz")
            });
            if healthy {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn node_mut_or_err(&mut self, i: usize) -> Result<&mut NatsServer> {
        let len = self.nodes.len();
        self.nodes.get_mut(i).ok_or_else(|| DevstackError::Io {
            context: format!("the cluster has {len} nodes, there is no node {i}"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("names", &self.names)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// Writes `<node_dir>/cluster.conf`: the server name, the routes to every other node and
/// the fsync policy. Ports, the store directory and JetStream itself come as flags.
fn write_node_config(
    node_dir: &Path,
    name: &str,
    index: usize,
    ports: &[NodePorts],
    options: &NatsClusterOptions,
) -> Result<PathBuf> {
    let mut text = format!(
        "# Generated by ymera-devstack: node {name} of cluster {}\n",
        options.name
    );
    let _ = writeln!(text, "server_name: {name}");
    if options.sync_always {
        let _ = writeln!(text, "jetstream {{\n  sync_interval: always\n}}");
    }
    if ports.len() > 1 {
        let routes: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, p)| format!("    \"nats-route://127.0.0.1:{}\"", p.route))
            .collect();
        let _ = writeln!(
            text,
            "cluster {{\n  name: {}\n  listen: \"127.0.0.1:{}\"\n  {ROUTE_PINGS}\n  routes: [\n{}\n  ]\n}}",
            options.name,
            ports[index].route,
            routes.join("\n")
        );
    }
    let path = node_dir.join("cluster.conf");
    fs::write(&path, text).map_err(io_context(format!("writing {path:?}")))?;
    Ok(path)
}
