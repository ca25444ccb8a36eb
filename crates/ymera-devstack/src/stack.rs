//! A local stack in a kept directory: nats-server (JetStream), PostgreSQL and Redis on
//! fixed ports, then service processes with their logs under `<dir>/logs/`, the
//! development admin key at `<dir>/admin.key` and what is running in `<dir>/stack.json`.
//!
//! ```text
//! <dir>/nats/        JetStream store, nats-server.log (a cluster: nats/n1/, nats/n2/, …)
//! <dir>/postgres/    data directory, postgres.log
//! <dir>/redis/       redis-server.log
//! <dir>/logs/        <service>.log for every service
//! <dir>/admin.key    the development admin key (written by the security service)
//! <dir>/stack.json   StackInfo of the running stack
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::io_context;
use crate::service::{Service, ServiceOptions, stop_all};
use crate::{
    DevstackError, NatsCluster, NatsClusterOptions, NatsOptions, NatsServer, Postgres,
    PostgresOptions, Redis, RedisOptions, Result,
};

/// The file a running stack describes itself in.
pub const STACK_INFO_FILE: &str = "stack.json";

/// Where a [`Stack`] keeps its files and which ports its servers use (`None`: a free one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackOptions {
    /// The state directory (kept between runs).
    pub dir: PathBuf,
    /// NATS client port.
    pub nats_port: Option<u16>,
    /// NATS monitoring port.
    pub nats_monitor_port: Option<u16>,
    /// PostgreSQL port.
    pub postgres_port: Option<u16>,
    /// Redis port.
    pub redis_port: Option<u16>,
    /// The database the services use (created if missing).
    pub database: String,
    /// Number of nats-servers: 1 is one plain server; more is a JetStream cluster whose
    /// node i uses the ports `nats_port + i`, `nats_monitor_port + i` and
    /// `nats_route_port + i`.
    pub nats_cluster: usize,
    /// First route port of a cluster (`None`: free ports).
    pub nats_route_port: Option<u16>,
    /// `sync_interval: always` on the cluster's servers.
    pub nats_sync_always: bool,
    /// Node i of the cluster runs with group `base + i` (root only; see
    /// `NatsClusterOptions::node_group_base`).
    pub nats_node_group_base: Option<u32>,
}

impl StackOptions {
    /// Everything in `dir`, free ports, database `ymera`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            nats_port: None,
            nats_monitor_port: None,
            postgres_port: None,
            redis_port: None,
            database: "ymera".to_owned(),
            nats_cluster: 1,
            nats_route_port: None,
            nats_sync_always: false,
            nats_node_group_base: None,
        }
    }
}

/// The three servers of a local stack and the services started on it.
///
/// Dropping it kills everything; [`Stack::stop`] stops the services gracefully (together),
/// then Redis, PostgreSQL (fast shutdown) and nats-server.
pub struct Stack {
    // Field order matters on drop: services go before the servers they use.
    services: Vec<Service>,
    redis: Redis,
    postgres: Postgres,
    nats: Nats,
    database_url: String,
    dir: PathBuf,
}

impl Stack {
    /// Starts nats-server, PostgreSQL and Redis with their files under `options.dir` and
    /// creates the database if it is missing. Blocking (seconds: `initdb` on a first run).
    pub fn start(options: StackOptions) -> Result<Self> {
        fs::create_dir_all(options.dir.join("logs"))
            .map_err(io_context(format!("creating {:?}", options.dir)))?;
        let dir = fs::canonicalize(&options.dir)
            .map_err(io_context(format!("resolving {:?}", options.dir)))?;
        let nats = if options.nats_cluster > 1 {
            Nats::Cluster(NatsCluster::start_with(NatsClusterOptions {
                dir: Some(dir.join("nats")),
                client_base_port: options.nats_port,
                monitor_base_port: options.nats_monitor_port,
                route_base_port: options.nats_route_port,
                sync_always: options.nats_sync_always,
                node_group_base: options.nats_node_group_base,
                ..NatsClusterOptions::new(options.nats_cluster)
            })?)
        } else {
            Nats::Single(Box::new(NatsServer::start_with(NatsOptions {
                dir: Some(dir.join("nats")),
                port: options.nats_port,
                monitor_port: options.nats_monitor_port,
                ..NatsOptions::default()
            })?))
        };
        let postgres = Postgres::start_with(PostgresOptions {
            dir: Some(dir.join("postgres")),
            port: options.postgres_port,
        })?;
        let redis = Redis::start_with(RedisOptions {
            dir: Some(dir.join("redis")),
            port: options.redis_port,
        })?;
        let database_url = postgres.ensure_database(&options.database)?;
        Ok(Self {
            services: Vec::new(),
            redis,
            postgres,
            nats,
            database_url,
            dir,
        })
    }

    /// The state directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The nats-server (of a cluster: its first node).
    pub fn nats(&self) -> &NatsServer {
        match &self.nats {
            Nats::Single(server) => server,
            Nats::Cluster(cluster) => &cluster.nodes()[0],
        }
    }

    /// Every nats-server, in order.
    pub fn nats_servers(&self) -> &[NatsServer] {
        match &self.nats {
            Nats::Single(server) => std::slice::from_ref(server),
            Nats::Cluster(cluster) => cluster.nodes(),
        }
    }

    /// Every nats-server as `stack.json` lists it.
    pub fn nats_node_infos(&self) -> Vec<NatsNodeInfo> {
        match &self.nats {
            Nats::Single(server) => vec![NatsNodeInfo {
                name: String::new(),
                url: server.url(),
                monitor_port: server.monitor_port(),
            }],
            Nats::Cluster(cluster) => (0..cluster.len())
                .filter_map(|i| {
                    let node = cluster.node(i)?;
                    Some(NatsNodeInfo {
                        name: cluster.server_name(i)?.to_owned(),
                        url: node.url(),
                        monitor_port: node.monitor_port(),
                    })
                })
                .collect(),
        }
    }

    /// The JetStream cluster, when the stack runs one.
    pub fn nats_cluster(&self) -> Option<&NatsCluster> {
        match &self.nats {
            Nats::Single(_) => None,
            Nats::Cluster(cluster) => Some(cluster),
        }
    }

    /// The JetStream cluster, to kill or restart a node.
    pub fn nats_cluster_mut(&mut self) -> Option<&mut NatsCluster> {
        match &mut self.nats {
            Nats::Single(_) => None,
            Nats::Cluster(cluster) => Some(cluster),
        }
    }

    /// The PostgreSQL cluster, to kill or restart it.
    pub fn postgres_mut(&mut self) -> &mut Postgres {
        &mut self.postgres
    }

    /// The services started so far, to signal, kill or stop one.
    pub fn services_mut(&mut self) -> &mut [Service] {
        &mut self.services
    }

    /// The PostgreSQL cluster.
    pub fn postgres(&self) -> &Postgres {
        &self.postgres
    }

    /// The redis-server.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// `nats://127.0.0.1:<port>`; of a cluster, every node's URL, comma-separated.
    pub fn nats_url(&self) -> String {
        match &self.nats {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.urls(),
        }
    }

    /// The URL of the services' database.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// `redis://127.0.0.1:<port>`
    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// Where the development admin key lives: the security service is told to write it
    /// here (`YMERA_BOOTSTRAP_ADMIN_KEY`) and the CLI reads it.
    pub fn admin_key_path(&self) -> PathBuf {
        self.dir.join("admin.key")
    }

    /// The log file of service `name`: `<dir>/logs/<name>.log`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// Starts a service on this stack, logging to [`Stack::log_path`] unless `options`
    /// name another file.
    pub fn start_service(&mut self, options: ServiceOptions) -> Result<&Service> {
        let log_path = self.log_path(options.name());
        let service = Service::start(options.default_log_path(log_path))?;
        self.services.push(service);
        Ok(&self.services[self.services.len() - 1])
    }

    /// Starts instance `instance` (1-based) of a service, logging to
    /// `<dir>/logs/<name>-<instance>.log` unless `options` name another file.
    pub fn start_service_instance(
        &mut self,
        options: ServiceOptions,
        instance: usize,
    ) -> Result<&Service> {
        let log_path = self.log_path(&format!("{}-{instance}", options.name()));
        let service = Service::start(options.default_log_path(log_path))?;
        self.services.push(service);
        Ok(&self.services[self.services.len() - 1])
    }

    /// The services started so far, in order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The PIDs of the servers and of the services' current runs.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut pids: Vec<(String, u32)> = match &self.nats {
            Nats::Single(server) => vec![("nats-server".to_owned(), server.pid())],
            Nats::Cluster(cluster) => (0..cluster.len())
                .filter_map(|i| {
                    Some((
                        format!("nats-server {}", cluster.server_name(i)?),
                        cluster.node(i)?.pid(),
                    ))
                })
                .collect(),
        };
        pids.push(("postgres".to_owned(), self.postgres.pid()));
        pids.push(("redis-server".to_owned(), self.redis.pid()));
        pids.extend(
            self.services
                .iter()
                .filter_map(|service| Some((service.name().to_owned(), service.pid()?))),
        );
        pids
    }

    /// Stops everything gracefully: the services together (SIGTERM, 15 s, SIGKILL), then
    /// Redis, PostgreSQL and nats-server. Returns what failed, by component.
    pub fn stop(mut self) -> Vec<(String, DevstackError)> {
        let mut failures = Vec::new();
        if let Err(err) = stop_all(&mut self.services) {
            failures.push(("services".to_owned(), err));
        }
        for (name, result) in [
            ("redis", self.redis.stop()),
            ("postgres", self.postgres.stop()),
            ("nats", self.nats.stop()),
        ] {
            if let Err(err) = result {
                failures.push((name.to_owned(), err));
            }
        }
        failures
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("dir", &self.dir)
            .field("nats", &self.nats)
            .field("postgres", &self.postgres)
            .field("redis", &self.redis)
            .field("services", &self.services)
            .finish()
    }
}

/// The nats-server of a stack: one, or a JetStream cluster.
enum Nats {
    Single(Box<NatsServer>),
    Cluster(NatsCluster),
}

impl Nats {
    fn stop(&mut self) -> Result<()> {
        match self {
            Nats::Single(server) => server.stop(),
            Nats::Cluster(cluster) => cluster.stop(),
        }
    }
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nats::Single(server) => server.fmt(f),
            Nats::Cluster(cluster) => cluster.fmt(f),
        }
    }
}

/// One nats-server of a running stack, as `stack.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatsNodeInfo {
    /// Its `server_name` (`n1`, …; empty for a single server).
    pub name: String,
    /// Its client URL.
    pub url: String,
    /// Its monitoring port.
    pub monitor_port: u16,
}

/// What a running stack wrote to `<dir>/stack.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackInfo {
    /// PID of the supervising process (`ymera up`).
    pub pid: u32,
    /// NATS URL.
    pub nats_url: String,
    /// PostgreSQL URL of the services' database.
    pub postgres_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// Services started, with their HTTP side ports (a service with several instances is
    /// listed once per instance).
    pub services: Vec<(String, u16)>,
    /// Every nats-server (more than one: a JetStream cluster).
    #[serde(default)]
    pub nats_servers: Vec<NatsNodeInfo>,
    /// PIDs of the servers and services when the file was written (a restarted service
    /// has a new one).
    #[serde(default)]
    pub pids: Vec<(String, u32)>,
}

impl StackInfo {
    /// `<dir>/stack.json`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STACK_INFO_FILE)
    }

    /// The stack described in `<dir>/stack.json`, if the file is there and readable.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = fs::read(Self::path(dir)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes `<dir>/stack.json` (whole, through a temporary file and a rename, so a reader
    /// never sees half of it) and returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = Self::path(dir);
        let partial = dir.join(format!("{STACK_INFO_FILE}.partial"));
        let text = serde_json::to_vec_pretty(self).map_err(|err| DevstackError::Io {
            context: "encoding stack.json".to_owned(),
            source: std::io::Error::other(err),
        })?;
        fs::write(&partial, text).map_err(io_context(format!("writing {partial:?}")))?;
        fs::rename(&partial, &path).map_err(io_context(format!("renaming to {path:?}")))?;
        Ok(path)
    }

    /// Removes `<dir>/stack.json` (nothing if it is not there).
    pub fn remove(dir: &Path) {
        let _ = fs::remove_file(Self::path(dir));
    }
}
