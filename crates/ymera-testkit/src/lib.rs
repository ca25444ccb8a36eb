//! Test helpers: real servers (re-exported from `ymera-devstack`) and the wire-contract
//! helpers every contract test uses ([`proto`]).
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

pub use ymera_devstack::{
    DevstackError as TestkitError, NATS_SERVER_ENV, NatsOptions, NatsServer, PG_BIN_DIR_ENV,
    Postgres, PostgresOptions, REDIS_SERVER_ENV, Redis, RedisOptions, Result, free_port,
    nats_server_bin, postgres_bin_dir, redis_server_bin, workspace_root,
};
