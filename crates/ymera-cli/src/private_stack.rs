//! A throw-away stack for benchmarks: a private nats-server and PostgreSQL
//! and the named service binaries (built beside `ymera`), all started through
//! ymera-devstack and stopped when dropped.
//!
//! A benchmark's output is its tables and verdicts: each service's stdout and
//! stderr go to `<log dir>/<n>-<service>.log`, and the first stack of a run
//! prints one line to stderr naming that directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use ymera_devstack::{HEALTH_TIMEOUT, NatsOptions, NatsServer, Postgres, Service, ServiceOptions};

/// Private servers plus service processes.
pub struct PrivateStack {
    // Services first: they are killed before the servers go away.
    services: Vec<Service>,
    nats: NatsServer,
    _postgres: Postgres,
}

impl PrivateStack {
    /// Starts the servers and `services` with `extra_env`, and waits until
    /// each answers `<service>.health`.
    pub async fn start(services: &[&str], extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let (nats, postgres, database) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
            let nats = NatsServer::start_with(NatsOptions {
                max_payload: Some(8 * 1024 * 1024),
                ..Default::default()
            })?;
            let postgres = Postgres::start()?;
            let database = postgres.create_database()?;
            Ok((nats, postgres, database))
        })
        .await??;
        let log_dir = log_dir();
        let mut started = Vec::new();
        for service in services {
            let options = ServiceOptions::binary(*service)
                .with_context(|| format!("{service} (cargo build --release --workspace --bins)"))?
                .env("NATS_URL", nats.url())
                .env("POSTGRES_URL", &database)
                .env("ENVIRONMENT", "development")
                .env("YMERA_AUTH", "off")
                .env("LOG_LEVEL", "warn")
                .envs(extra_env.iter().copied())
                .log_path(next_log_path(log_dir, service));
            started.push(Service::start(options).with_context(|| format!("starting {service}"))?);
        }
        let stack = PrivateStack {
            services: started,
            nats,
            _postgres: postgres,
        };
        let client = async_nats::connect(stack.nats_url()).await?;
        for service in &stack.services {
            service.wait_healthy(&client, HEALTH_TIMEOUT).await?;
        }
        Ok(stack)
    }

    /// The private server's URL.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The process id of the running service `name` (e.g. `gateway`), for
    /// reading its memory from `/proc/<pid>/status`.
    pub fn service_pid(&self, name: &str) -> Option<u32> {
        self.services
            .iter()
            .find(|s| s.name() == name)
            .and_then(Service::pid)
    }

    /// The private nats-server's process id.
    pub fn nats_pid(&self) -> u32 {
        self.nats.pid()
    }

    /// The private server's JetStream store directory (for on-disk sizes).
    pub fn nats_store_dir(&self) -> &Path {
        self.nats.store_dir()
    }
}

/// The directory this run's service logs go to (kept after the run), named
/// once on stderr by the first stack.
pub(crate) fn log_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ymera-bench-{}", std::process::id()));
        eprintln!("service logs: {}", dir.display());
        dir
    })
}

/// `<dir>/<n>-<service>.log`, numbered so that later stacks of the same run
/// do not append to earlier ones.
fn next_log_path(dir: &Path, service: &str) -> PathBuf {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
    dir.join(format!("{n:02}-{service}.log"))
}

/// Waits until `<service>.health` answers healthy (at most 60 s), for a
/// service this process does not hold a handle of.
pub(crate) async fn wait_healthy(client: &async_nats::Client, service: &str) -> anyhow::Result<()> {
    ymera_devstack::wait_healthy(client, service, HEALTH_TIMEOUT)
        .await
        .map_err(|_| anyhow::anyhow!("{service} did not become healthy within 60 s"))
}
