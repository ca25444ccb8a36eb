//! One stack per test: servers, the five services (auth required, a
//! bootstrap admin key) and a gateway on a free port.

use std::path::PathBuf;
use std::time::Duration;

use ymera_devstack::{Service, ServiceOptions};
use ymera_testkit::{Servers, free_port};

pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn spawn(name: &str, env: &[(&str, &str)]) -> Service {
    let options = ServiceOptions::binary(name)
        .unwrap_or_else(|err| {
            panic!("{err} (build the service binaries first: cargo build --workspace --bins)")
        })
        .envs(env.iter().copied())
        .env("ENVIRONMENT", "development")
        .env("YMERA_AUTH", "required")
        .env("LOG_LEVEL", "warn");
    Service::start(options).unwrap()
}

#[allow(dead_code)]
pub struct Stack {
    pub servers: Servers,
    pub client: async_nats::Client,
    pub admin: String,
    pub services: Vec<Service>,
    pub gateways: Vec<Service>,
    /// `http://127.0.0.1:<port>` of each gateway.
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Which services a test needs besides security (always started).
pub const ALL: &[&str] = &["config", "communication", "drafting", "code-analysis"];

impl Stack {
    /// Servers, security + `services`, and `gateways` gateway processes with `gateway_env`.
    pub async fn start(services: &[&str], gateways: usize, gateway_env: &[(&str, &str)]) -> Stack {
        let servers = Servers::with_redis();
        let client = servers.client().await;
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("admin.key");
        let key_str = key_path.display().to_string();
        let base = servers.env();
        let mut security_env = base.clone();
        security_env.push(("YMERA_BOOTSTRAP_ADMIN_KEY", &key_str));
        let security = spawn("security", &security_env);
        security
            .wait_healthy(&client, HEALTH_TIMEOUT)
            .await
            .unwrap();
        let admin = std::fs::read_to_string(&key_path)
            .unwrap()
            .trim()
            .to_owned();
        let mut agent_env = base.clone();
        agent_env.push(("YMERA_SERVICE_API_KEY", &admin));
        let mut started = vec![security];
        for name in services {
            let env = if ["drafting", "code-analysis"].contains(name) {
                &agent_env
            } else {
                &base
            };
            started.push(spawn(name, env));
        }
        for name in services {
            if let Err(err) = ymera_devstack::wait_healthy(&client, name, HEALTH_TIMEOUT).await {
                panic!("{err}");
            }
        }
        let mut stack = Stack {
            servers,
            client,
            admin,
            services: started,
            gateways: Vec::new(),
            urls: Vec::new(),
            _dir: dir,
        };
        for _ in 0..gateways {
            stack.add_gateway(gateway_env).await;
        }
        stack
    }

    /// Starts one more gateway (its own port) and waits until it serves.
    pub async fn add_gateway(&mut self, extra: &[(&str, &str)]) {
        let port = free_port().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let mut env = self.servers.env();
        env.retain(|(k, _)| *k != "POSTGRES_URL");
        env.push(("GATEWAY_ADDR", &addr));
        env.push(("YMERA_SERVICE_API_KEY", &self.admin));
        env.push(("GATEWAY_REGISTRY_REFRESH", "1s"));
        env.extend_from_slice(extra);
        let gateway = spawn("gateway", &env);
        let url = format!("http://{addr}");
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + HEALTH_TIMEOUT;
        loop {
            if let Ok(r) = http.get(format!("{url}/health")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway did not serve: {}",
                gateway.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.gateways.push(gateway);
        self.urls.push(url);
    }

    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    /// Waits until the gateway routes `subject` (its registry saw the service).
    pub async fn wait_routed(&self, subject: &str) {
        let http = reqwest::Client::new();
        let path = subject.replace('.', "/");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = http
                .post(format!("{}/v1/{path}", self.url()))
                .body("{}")
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status != 404 && status != 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{subject} never routed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The repo venv's Python (made by scripts/setup).
#[allow(dead_code)]
pub fn venv_python() -> PathBuf {
    let python = ymera_testkit::workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run scripts/setup (scripts/setup.d/gateway.sh installs the gateway's Python tools)",
        python.display()
    );
    python
}
