//! Service processes for the suites: the binaries the workspace build puts
//! beside this test, started through ymera-devstack with authentication
//! required (output to a log file, parent-death signal; a failing test prints
//! the end of each log it held).

use std::time::Duration;

use ymera_devstack::{Service, ServiceOptions};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn spawn(name: &str, env: &[(&str, &str)]) -> Service {
    let options = ServiceOptions::binary(name)
        .unwrap_or_else(|err| {
            panic!("{err} (or run the workspace tests: cargo nextest run --workspace)")
        })
        .envs(env.iter().copied())
        .env("ENVIRONMENT", "development")
        .env("YMERA_AUTH", "required")
        .env("LOG_LEVEL", "warn");
    Service::start(options).unwrap()
}

pub async fn wait_healthy(client: &async_nats::Client, service: &str) {
    if let Err(err) = ymera_devstack::wait_healthy(client, service, HEALTH_TIMEOUT).await {
        panic!("{err}");
    }
}

/// Starts the security service with `env` and a bootstrap admin key, waits
/// until it is healthy, and returns it with the admin key (`ymk_…`).
pub async fn spawn_security(
    client: &async_nats::Client,
    env: &[(&str, &str)],
) -> (Service, String) {
    let key_dir = tempfile::tempdir().unwrap();
    let key_path = key_dir.path().join("admin.key");
    let key_str = key_path.display().to_string();
    let mut security_env = env.to_vec();
    security_env.push(("YMERA_BOOTSTRAP_ADMIN_KEY", &key_str));
    let security = spawn("security", &security_env);
    if let Err(err) = security.wait_healthy(client, HEALTH_TIMEOUT).await {
        panic!("{err}");
    }
    let key = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_owned();
    (security, key)
}
