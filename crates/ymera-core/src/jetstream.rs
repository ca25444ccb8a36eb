//! How many copies JetStream keeps of every stream and KV bucket the platform creates
//! (DESIGN.md §5 `YMERA_JS_REPLICAS`, §11).
//!
//! Every service that creates a stream or bucket passes its configuration through
//! [`apply_replicas`] (or uses [`ensure_stream`]), so a stream is created at the cluster's
//! replica count and an existing stream made before is updated in place at start
//! (JetStream scales a stream's RAFT group, and its consumers that inherit the stream's
//! replicas, on a stream update).
//!
//! The count: `YMERA_JS_REPLICAS` (1 to 5) when set; otherwise 3 when the JetStream cluster
//! has at least 3 servers, else 1. Without the variable an existing stream is never scaled
//! *down*: a service restarting while one server of three is away sees two, and must not
//! turn an R3 stream into R1.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

use crate::config::ConfigError;
use crate::env::Env;

/// The variable naming the replica count.
pub const REPLICAS_ENV: &str = "YMERA_JS_REPLICAS";
/// Most replicas JetStream supports for a stream.
pub const MAX_REPLICAS: usize = 5;
/// How long [`replicas`] waits for the server to announce the rest of its cluster.
const CLUSTER_GOSSIP_WAIT: Duration = Duration::from_secs(2);

/// The replica count asked for, and whether it was asked for explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// Copies of every stream and bucket.
    pub count: usize,
    /// True when `YMERA_JS_REPLICAS` set it (then an existing stream is set to exactly this,
    /// also down); false for the default (never lowers an existing stream).
    pub explicit: bool,
}

/// `YMERA_JS_REPLICAS` from `env`: `None` when unset; a value outside 1–5 is refused.
pub fn configured_replicas(env: &Env<'_>) -> Result<Option<usize>, ConfigError> {
    env.value(REPLICAS_ENV, |text| match text.parse::<usize>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a whole number between 1 and {MAX_REPLICAS}"
        )),
    })
}

/// The default replica count for a JetStream cluster of `servers` servers.
pub fn default_replicas(servers: usize) -> usize {
    if servers >= 3 { 3 } else { 1 }
}

/// How many servers the cluster of `client`'s server has, from its `INFO`: the client URLs
/// it gossips (every server of the cluster, itself included); 1 for a server outside a
/// cluster. A clustered server that announced fewer than 3 is watched for up to 2 s, as
/// routes come up after the first `INFO`.
pub async fn cluster_size(client: &async_nats::Client) -> usize {
    let deadline = Instant::now() + CLUSTER_GOSSIP_WAIT;
    loop {
        let info = client.server_info();
        let mut urls: Vec<&String> = info.connect_urls.iter().collect();
        urls.sort();
        urls.dedup();
        let size = urls.len().max(1);
        if info.cluster.is_none() || size >= 3 || Instant::now() >= deadline {
            return size;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replica count for this process: `YMERA_JS_REPLICAS` from the environment if set,
/// else [`default_replicas`] of [`cluster_size`]. A malformed variable is an error naming it.
///
/// The environment is read before the first `.await` (`Env` is not `Send`), so the future
/// stays `Send` and can be spawned.
pub async fn replicas(client: &async_nats::Client) -> Result<Replicas, ConfigError> {
    let configured = configured_replicas(&Env::from_process())?;
    match configured {
        Some(count) => Ok(Replicas {
            count,
            explicit: true,
        }),
        None => Ok(Replicas {
            count: default_replicas(cluster_size(client).await),
            explicit: false,
        }),
    }
}

/// Sets `config.num_replicas` for a stream whose current replica count is `existing`
/// (`None`: the stream does not exist yet).
pub fn apply_replicas(config: &mut stream::Config, replicas: Replicas, existing: Option<usize>) {
    config.num_replicas = match existing {
        Some(current) if !replicas.explicit => replicas.count.max(current),
        _ => replicas.count,
    };
}

/// How long [`ensure_stream`] keeps retrying while JetStream is not ready (a cluster electing
/// its meta or stream leader at start, a scale-up in progress): a service started beside a
/// cluster that is still forming waits instead of exiting.
const NOT_READY_DEADLINE: Duration = Duration::from_secs(30);

/// Creates the stream of `config` at `replicas`, or updates the existing one in place
/// (its replica count included, see [`apply_replicas`]). Returns the stream's info.
///
/// Time-outs, no responders and JetStream's "cluster not available / no leader" answers are
/// retried with backoff for up to 30 s; any other error (a bad configuration, a permission)
/// is returned at once.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    replicas: Replicas,
) -> Result<stream::Info, String> {
    let deadline = Instant::now() + NOT_READY_DEADLINE;
    let mut delay = Duration::from_millis(200);
    loop {
        match try_ensure_stream(js, config.clone(), replicas).await {
            Ok(info) => return Ok(info),
            Err(err) if err.transient && Instant::now() + delay < deadline => {
                tracing::warn!(stream = %config.name, error = %err.message, "JetStream not ready, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => return Err(err.message),
        }
    }
}

/// An [`ensure_stream`] failure: its message, and whether waiting may cure it.
struct EnsureError {
    message: String,
    transient: bool,
}

impl EnsureError {
    fn new(name: &str, err: impl std::fmt::Display, transient: bool) -> Self {
        Self {
            message: format!("stream {name}: {err}"),
            transient,
        }
    }
}

/// JetStream API error codes that mean "not ready yet" rather than "refused".
fn not_ready(code: jetstream::ErrorCode) -> bool {
    use jetstream::ErrorCode as C;
    [
        C::CLUSTER_NOT_AVAILABLE,
        C::CLUSTER_NOT_ACTIVE,
        C::CLUSTER_NOT_LEADER,
        C::CLUSTER_NOT_ASSIGNED,
        C::CLUSTER_NO_PEERS,
        C::CLUSTER_INCOMPLETE,
        C::CLUSTER_SERVER_MEMBER_CHANGE_INFLIGHT,
    ]
    .contains(&code)
}

fn create_error_transient(kind: &jetstream::context::CreateStreamErrorKind) -> bool {
    use jetstream::context::CreateStreamErrorKind as K;
    match kind {
        K::TimedOut | K::JetStreamUnavailable => true,
        K::JetStream(inner) => not_ready(inner.error_code()),
        _ => false,
    }
}

async fn try_ensure_stream(
    js: &jetstream::Context,
    mut config: stream::Config,
    replicas: Replicas,
) -> Result<stream::Info, EnsureError> {
    use jetstream::context::{GetStreamErrorKind, RequestErrorKind};
    let name = config.name.clone();
    let existing = match js.get_stream(&config.name).await {
        Ok(mut stream) => Some(
            stream
                .info()
                .await
                .map_err(|e| {
                    let transient = matches!(
                        e.kind(),
                        RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
                    );
                    EnsureError::new(&name, e, transient)
                })?
                .config
                .num_replicas,
        ),
        Err(err) => match err.kind() {
            GetStreamErrorKind::JetStream(inner)
                if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                None
            }
            GetStreamErrorKind::JetStream(inner) => {
                let transient = not_ready(inner.error_code());
                return Err(EnsureError::new(&name, err, transient));
            }
            GetStreamErrorKind::Request => return Err(EnsureError::new(&name, err, true)),
            _ => return Err(EnsureError::new(&name, err, false)),
        },
    };
    apply_replicas(&mut config, replicas, existing);
    let info = match existing {
        Some(_) => js.update_stream(&config).await,
        None => js.create_or_update_stream(config).await,
    };
    info.map_err(|e| {
        let transient = create_error_transient(&e.kind());
        EnsureError::new(&name, e, transient)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(value: Option<&'static str>) -> Env<'static> {
        Env::from_lookup(move |name| (name == REPLICAS_ENV).then(|| value.map(str::to_owned))?)
    }

    #[test]
    fn the_variable_is_one_to_five() {
        assert_eq!(configured_replicas(&env(None)).unwrap(), None);
        assert_eq!(configured_replicas(&env(Some("3"))).unwrap(), Some(3));
        for bad in ["0", "6", "three", "-1"] {
            let err = configured_replicas(&env(Some(bad))).unwrap_err();
            assert_eq!(err.variable, REPLICAS_ENV, "{bad}");
        }
    }

    /// `replicas` can run inside `tokio::spawn` (compile-time check).
    #[allow(dead_code)]
    fn replicas_future_is_send(client: &async_nats::Client) {
        fn send<T: Send>(_: &T) {}
        send(&replicas(client));
    }

    #[test]
    fn default_is_three_on_three_servers() {
        assert_eq!(default_replicas(1), 1);
        assert_eq!(default_replicas(2), 1);
        assert_eq!(default_replicas(3), 3);
        assert_eq!(default_replicas(5), 3);
    }

    #[test]
    fn the_default_never_scales_a_stream_down() {
        let mut config = stream::Config::default();
        let default = Replicas {
            count: 1,
            explicit: false,
        };
        apply_replicas(&mut config, default, Some(3));
        assert_eq!(config.num_replicas, 3);
        apply_replicas(&mut config, default, None);
        assert_eq!(config.num_replicas, 1);
        let explicit = Replicas {
            count: 1,
            explicit: true,
        };
        apply_replicas(&mut config, explicit, Some(3));
        assert_eq!(config.num_replicas, 1);
        let three = Replicas {
            count: 3,
            explicit: false,
        };
        apply_replicas(&mut config, three, Some(1));
        assert_eq!(config.num_replicas, 3);
    }
}
