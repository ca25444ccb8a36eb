//! Test helpers: real servers (re-exported from `ymera-devstack`), the service plumbing
//! every crate's tests share ([`service`]) and the wire-contract helpers every contract test
//! uses ([`proto`]).
//!
//! [`service`], written once for every crate (no test suite keeps a copy):
//!
//! * [`Servers`] — nats-server, PostgreSQL with a fresh database and optionally Redis
//!   ([`Servers::start`], [`Servers::with_redis`], [`Servers::start_with`]), with the
//!   `NATS_URL`/`POSTGRES_URL`/`REDIS_URL` environment of a service process
//!   ([`Servers::env`]); [`shared_postgres`] — one cluster per test binary;
//!   [`nats_large_payload`] — nats-server with an 8 MiB `max_payload`.
//! * [`wait_until_serving`] — until a request on a subject is answered without error
//!   headers (bounded, panics naming the subject); built on devstack's `wait_serving`, the
//!   loop behind its `wait_healthy` for service processes.
//! * [`FakeAuthorizer`] — a stand-in `security.authorize` answering from a table of
//!   credential → (owner, permissions) in the real reply shape; stops when dropped.
//! * [`eventually`] — a bounded poll that panics naming what it waited for.
//! * [`http_get`], [`try_http_get`] — `GET` on a service's HTTP port (status and body).
//!
//! The servers — private `nats-server`, PostgreSQL and Redis processes that die with the
//! test process — live in `ymera-devstack`, which `ymera up` and the benchmarks use too;
//! their documentation is there. This crate is a dev-dependency only: no shipped crate
//! depends on it.
//!
//! ```no_run
//! use ymera_testkit::{NatsServer, Postgres};
//!
//! # fn main() -> ymera_testkit::Result<()> {
//! let nats = NatsServer::start()?;
//! let postgres = Postgres::start()?;
//! let database_url = postgres.create_database()?;
//! # let _ = (nats.url(), database_url);
//! # Ok(())
//! # }
//! ```

pub mod proto;
pub mod service;

pub use ymera_devstack::{
    DevstackError as TestkitError, NATS_SERVER_ENV, NatsCluster, NatsClusterOptions, NatsOptions,
    NatsServer, PG_BIN_DIR_ENV, Postgres, PostgresOptions, REDIS_SERVER_ENV, Redis, RedisOptions,
    Result, free_port, nats_server_bin, postgres_bin_dir, redis_server_bin, workspace_root,
};

pub use service::{
    FAKE_TENANT, FakeAuthorizer, LARGE_PAYLOAD, SERVING_TIMEOUT, Servers, ServersOptions,
    eventually, http_get, nats_large_payload, shared_postgres, try_http_get, wait_until_serving,
};
