//! Service processes for the suites: the binaries the workspace build puts
//! beside this test, started with authentication required.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;

/// A service binary built beside this test (the workspace build puts every
/// binary in the same target directory).
pub fn service_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join(format!("ymera-{name}"));
    assert!(
        path.is_file(),
        "{} is not built: run the workspace tests (cargo nextest run --workspace)",
        path.display()
    );
    path
}

pub fn spawn(name: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    tokio::process::Command::new(service_binary(name))
        .envs(env.iter().copied())
        .env("ENVIRONMENT", "development")
        .env("YMERA_AUTH", "required")
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

pub async fn wait_healthy(client: &async_nats::Client, service: &str) {
    for _ in 0..600 {
        if let Ok(reply) = client
            .request(format!("{service}.health"), Bytes::new())
            .await
            && reply.headers.is_none()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service} never became healthy");
}

/// Starts the security service with `env` and a bootstrap admin key, waits
/// until it is healthy, and returns it with the admin key (`ymk_…`).
pub async fn spawn_security(
    client: &async_nats::Client,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let key_dir = tempfile::tempdir().unwrap();
    let key_path = key_dir.path().join("admin.key");
    let key_str = key_path.display().to_string();
    let mut security_env = env.to_vec();
    security_env.push(("YMERA_BOOTSTRAP_ADMIN_KEY", &key_str));
    let security = spawn("security", &security_env);
    wait_healthy(client, "security").await;
    let key = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_owned();
    (security, key)
}

/// nats-server and PostgreSQL for one suite, with a client and the
/// environment every service needs.
pub struct Servers {
    pub _nats: ymera_testkit::NatsServer,
    pub _pg: ymera_testkit::Postgres,
    pub url: String,
    pub db: String,
    pub client: async_nats::Client,
}

impl Servers {
    pub async fn start() -> Servers {
        let nats = ymera_testkit::NatsServer::start().unwrap();
        let pg = ymera_testkit::Postgres::start().unwrap();
        let db = pg.create_database().unwrap();
        let url = nats.url();
        let client = async_nats::connect(&url).await.unwrap();
        Servers {
            _nats: nats,
            _pg: pg,
            url,
            db,
            client,
        }
    }

    /// `NATS_URL` and `POSTGRES_URL`.
    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![("NATS_URL", &self.url), ("POSTGRES_URL", &self.db)]
    }
}
