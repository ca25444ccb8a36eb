//! A throw-away stack for benchmarks: a private nats-server and PostgreSQL
//! (ymera-testkit) and the named service binaries (built beside `ymera`),
//! all stopped when dropped.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use ymera_testkit::{NatsOptions, NatsServer, Postgres};

/// Private servers plus service processes.
pub struct PrivateStack {
    // Children first: they are killed before the servers go away.
    children: Vec<tokio::process::Child>,
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
        let bin_dir = std::env::current_exe()?
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let mut children = Vec::new();
        for service in services {
            let path = bin_dir.join(format!("ymera-{service}"));
            anyhow::ensure!(
                path.is_file(),
                "{} is not built (cargo build --release --workspace --bins)",
                path.display()
            );
            let child = tokio::process::Command::new(&path)
                .env("NATS_URL", nats.url())
                .env("POSTGRES_URL", &database)
                .env("ENVIRONMENT", "development")
                .env("YMERA_AUTH", "off")
                .env("LOG_LEVEL", "warn")
                .envs(extra_env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", path.display()))?;
            children.push(child);
        }
        let stack = PrivateStack {
            children,
            nats,
            _postgres: postgres,
        };
        let client = async_nats::connect(stack.nats_url()).await?;
        for service in services {
            wait_healthy(&client, service).await?;
        }
        Ok(stack)
    }

    /// The private server's URL.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

/// Waits until `<service>.health` answers healthy (at most 60 s).
pub(crate) async fn wait_healthy(client: &async_nats::Client, service: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(Ok(reply)) = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(format!("{service}.health"), Bytes::new()),
        )
        .await
            && reply.headers.is_none()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{service} did not become healthy within 60 s")
}
