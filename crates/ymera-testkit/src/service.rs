//! Service plumbing every crate's tests share: the servers a service needs ([`Servers`],
//! [`shared_postgres`], [`nats_large_payload`]), the wait until a service answers ([`wait_until_serving`]), a
//! stand-in for the security service's `security.authorize` ([`FakeAuthorizer`]), a
//! bounded poll ([`eventually`]) and a plain HTTP GET of a service's `/health`, `/metrics`
//! ([`http_get`], [`try_http_get`]).
//!
//! ```no_run
//! use ymera_testkit::{FakeAuthorizer, Servers, wait_until_serving};
//!
//! # async fn demo() {
//! let servers = Servers::start(); // nats-server, PostgreSQL and a fresh database
//! let client = servers.client().await;
//! // … start the service under test on servers.nats.url() and servers.database_url …
//! wait_until_serving(&client, "drafting.health").await;
//! // `writer` may read and write drafts (owner alice); any other credential is refused.
//! let _security =
//!     FakeAuthorizer::start(&client, &[("writer", "alice", &["drafting:read", "drafting:write"])])
//!         .await;
//! # }
//! ```

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::{NatsOptions, NatsServer, Postgres, Redis};

/// How long [`wait_until_serving`] waits at the most.
pub const SERVING_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until a request on `subject` (empty body) is answered without error headers;
/// panics naming the subject after [`SERVING_TIMEOUT`]. A service registers its endpoints
/// asynchronously, so a test waits for this before its first request. Built on
/// `ymera_devstack::wait_serving` (devstack's `wait_healthy` is the same wait on
/// `<service>.health`, for service processes).
pub async fn wait_until_serving(client: &async_nats::Client, subject: &str) {
    if let Err(err) = ymera_devstack::wait_serving(client, subject, SERVING_TIMEOUT).await {
        panic!("{err}");
    }
}

/// Polls `check` every 50 ms until it holds; panics with "timed out waiting for: `what`"
/// after `within`. For a synchronous condition: `|| std::future::ready(cond())`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` on `127.0.0.1:port` (HTTP/1.1, `Connection: close`): the status code and
/// the body, or `None` when nothing listens there or the connection breaks.
pub async fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// [`try_http_get`]; panics, naming the address, when nothing answers.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path)
        .await
        .unwrap_or_else(|| panic!("GET http://127.0.0.1:{port}{path}: no answer"))
}

/// One PostgreSQL cluster for the whole test binary; each test takes its own
/// [`Postgres::create_database`]. Kept in a `static`, so never dropped: the parent-death
/// signal ends it with the test process.
pub fn shared_postgres() -> &'static Postgres {
    static POSTGRES: OnceLock<Postgres> = OnceLock::new();
    POSTGRES.get_or_init(|| Postgres::start().unwrap_or_else(|e| panic!("start PostgreSQL: {e}")))
}

/// The `max_payload` of [`nats_large_payload`]: 8 MiB.
pub const LARGE_PAYLOAD: u32 = 8 * 1024 * 1024;

/// nats-server with an 8 MiB `max_payload` ([`LARGE_PAYLOAD`]), so that a request over a
/// service's own 1 MiB `MAX_MESSAGE_SIZE` reaches the service and the service's limit is
/// what refuses it.
pub fn nats_large_payload() -> NatsServer {
    NatsServer::start_with(NatsOptions {
        max_payload: Some(LARGE_PAYLOAD),
        ..NatsOptions::default()
    })
    .unwrap_or_else(|e| panic!("start nats-server: {e}"))
}

/// What [`Servers::start_with`] starts.
#[derive(Debug, Clone, Default)]
pub struct ServersOptions {
    /// nats-server's options (a larger `max_payload`, …).
    pub nats: NatsOptions,
    /// Start a Redis server too.
    pub redis: bool,
}

/// The servers one test's services need: nats-server (JetStream on), a PostgreSQL
/// cluster of its own with a fresh database, and Redis when asked for. Dropping it stops
/// them.
pub struct Servers {
    pub nats: NatsServer,
    pub postgres: Postgres,
    /// `postgres://…` of the fresh database.
    pub database_url: String,
    pub redis: Option<Redis>,
    nats_url: String,
    redis_url: Option<String>,
}

impl Servers {
    /// nats-server and PostgreSQL, no Redis. Panics when a server does not start.
    pub fn start() -> Servers {
        Servers::start_with(ServersOptions::default())
    }

    /// nats-server, PostgreSQL and Redis.
    pub fn with_redis() -> Servers {
        Servers::start_with(ServersOptions {
            redis: true,
            ..ServersOptions::default()
        })
    }

    /// The servers `options` ask for.
    pub fn start_with(options: ServersOptions) -> Servers {
        let nats = NatsServer::start_with(options.nats)
            .unwrap_or_else(|e| panic!("start nats-server: {e}"));
        let postgres = Postgres::start().unwrap_or_else(|e| panic!("start PostgreSQL: {e}"));
        let database_url = postgres
            .create_database()
            .unwrap_or_else(|e| panic!("create database: {e}"));
        let redis = options
            .redis
            .then(|| Redis::start().unwrap_or_else(|e| panic!("start redis-server: {e}")));
        Servers {
            nats_url: nats.url(),
            redis_url: redis.as_ref().map(Redis::url),
            nats,
            postgres,
            database_url,
            redis,
        }
    }

    /// `nats://127.0.0.1:<port>` (the same after a restart of the server).
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// `redis://…` when Redis runs.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }

    /// `NATS_URL`, `POSTGRES_URL` and, with Redis, `REDIS_URL`: the environment of a
    /// service process on these servers.
    pub fn env(&self) -> Vec<(&str, &str)> {
        let mut env = vec![
            ("NATS_URL", self.nats_url.as_str()),
            ("POSTGRES_URL", self.database_url.as_str()),
        ];
        if let Some(url) = &self.redis_url {
            env.push(("REDIS_URL", url.as_str()));
        }
        env
    }

    /// A new client connection to the nats-server.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.nats_url)
            .await
            .unwrap_or_else(|e| panic!("connect to nats-server: {e}"))
    }
}

/// The tenant of every fake key: the security service's system tenant, whose keys act in
/// every tenant (so the fake never answers `tenant_mismatch`).
pub const FAKE_TENANT: &str = "system";

/// A stand-in for the security service's `security.authorize` on real NATS, for testing a
/// service with `YMERA_AUTH=required` without running the security service. It answers
/// from a table of credential → (owner, permissions) with the real service's reply shape
/// (`proto/schemas/security/authorize.reply.schema.json`):
///
/// * a credential in the table holding the permission: `allowed: true`, reason `granted`;
/// * one without it: `allowed: false`, reason `insufficient_permissions`, with its principal;
/// * any other credential: `allowed: false`, reason `invalid_api_key`, principal `null`.
///
/// Principals are API keys in [`FAKE_TENANT`]. Dropping the handle stops answering.
pub struct FakeAuthorizer {
    task: tokio::task::JoinHandle<()>,
}

impl FakeAuthorizer {
    /// Subscribes to `security.authorize` on `client`'s server (flushed: it answers once
    /// this returns) and answers from `keys`: `(credential, owner, permissions)`.
    pub async fn start(client: &async_nats::Client, keys: &[(&str, &str, &[&str])]) -> Self {
        let table: Vec<(String, Value)> = keys
            .iter()
            .enumerate()
            .map(|(n, (credential, owner, permissions))| {
                let principal = json!({
                    "kind": "api_key",
                    "owner": owner,
                    "tenant": FAKE_TENANT,
                    "key_id": format!("fake{n}"),
                    "permissions": permissions,
                    "expires_at": "2999-01-01T00:00:00Z",
                });
                ((*credential).to_owned(), principal)
            })
            .collect();
        let mut requests = client
            .subscribe("security.authorize")
            .await
            .unwrap_or_else(|e| panic!("subscribe to security.authorize: {e}"));
        client
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flush the subscription: {e}"));
        let client = client.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let Some(reply_to) = message.reply else {
                    continue;
                };
                let body: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
                let answer = answer(&table, &body);
                let _ = client.publish(reply_to, answer.to_string().into()).await;
            }
        });
        FakeAuthorizer { task }
    }
}

impl Drop for FakeAuthorizer {
    fn drop(&mut self) {
        // Dropping the subscription with the task unsubscribes.
        self.task.abort();
    }
}

/// The real service's answer to `body` for the keys in `table`.
fn answer(table: &[(String, Value)], body: &Value) -> Value {
    let credential = body["credential"].as_str().unwrap_or_default();
    let permission = body["permission"].as_str().unwrap_or_default();
    let Some((_, principal)) = table.iter().find(|(c, _)| c == credential) else {
        return json!({"allowed": false, "principal": null, "permissions": [], "reason": "invalid_api_key"});
    };
    let permissions = principal["permissions"].clone();
    let allowed = permissions
        .as_array()
        .is_some_and(|held| held.iter().any(|p| p == permission));
    json!({
        "allowed": allowed,
        "principal": principal,
        "permissions": permissions,
        "reason": if allowed { "granted" } else { "insufficient_permissions" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_authorizer_answers_as_the_security_service_does() {
        let nats = NatsServer::start().unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let security = FakeAuthorizer::start(&client, &[("reader", "bob", &["config:read"])]).await;
        let ask = |credential: &str, permission: &str| {
            let client = client.clone();
            let body = json!({"credential": credential, "permission": permission});
            async move {
                crate::proto::assert_valid("security/authorize.request.schema.json", &body);
                let reply = client
                    .request("security.authorize", body.to_string().into())
                    .await
                    .unwrap();
                let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
                crate::proto::assert_valid("security/authorize.reply.schema.json", &reply);
                reply
            }
        };
        let granted = ask("reader", "config:read").await;
        assert_eq!(granted["allowed"], true, "{granted}");
        assert_eq!(granted["reason"], "granted");
        assert_eq!(granted["principal"]["owner"], "bob");
        let denied = ask("reader", "config:write").await;
        assert_eq!(denied["allowed"], false, "{denied}");
        assert_eq!(denied["reason"], "insufficient_permissions");
        assert_eq!(denied["principal"]["owner"], "bob");
        let unknown = ask("nobody", "config:read").await;
        assert_eq!(unknown["reason"], "invalid_api_key", "{unknown}");
        assert!(unknown["principal"].is_null());

        wait_until_serving(&client, "security.authorize").await;
        drop(security);
        // The unsubscription goes out asynchronously: ask with a short timeout.
        eventually(
            Duration::from_secs(5),
            "nobody answers after the drop",
            || {
                let request = client.request("security.authorize", "{}".into());
                async move {
                    matches!(
                        tokio::time::timeout(Duration::from_millis(200), request).await,
                        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders
                    )
                }
            },
        )
        .await;
    }

    #[tokio::test]
    async fn eventually_returns_once_the_check_holds() {
        let mut calls = 0;
        eventually(Duration::from_secs(5), "the third call", || {
            calls += 1;
            std::future::ready(calls == 3)
        })
        .await;
        assert_eq!(calls, 3);
    }
}
