//! The service runtime: the only place that connects to NATS, registers
//! endpoints with the NATS Services API, maps errors to replies and serves
//! `/health`, `/ready` and `/metrics`. Services write handlers, not plumbing.
//!
//! ```no_run
//! # async fn example() -> Result<(), ymera_core::runtime::RuntimeError> {
//! use ymera_core::{config::ServiceConfig, runtime::{Reply, Runtime, ServiceBuilder, ServiceRequest}};
//! let runtime = Runtime::start("echo", ServiceConfig::default()).await?;
//! ServiceBuilder::new("echo", "0.1.0", "Echoes requests")
//!     .endpoint("echo.say", |req: ServiceRequest| async move { Ok(Reply::bytes(req.payload)) })
//!     // With YMERA_AUTH=required the runtime checks `echo:admin` before the handler runs.
//!     .secured("echo.reset", "echo:admin", |req: ServiceRequest| async move {
//!         let who = req.principal().map(|p| p.owner.clone());
//!         Reply::json(&serde_json::json!({"reset_by": who}))
//!     })
//!     .serve(runtime)
//!     .await
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::service::ServiceExt;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::{Authorizer, Principal};
use crate::client::{ConnectError, Credential, connect_nats};
use crate::config::ServiceConfig;
use crate::error::{Error, ErrorKind};
use crate::health::{CheckResult, HealthReport, HealthStatus};
use crate::limits::{self, MAX_CREDENTIAL_HEADER, MAX_IN_FLIGHT_REQUESTS};
use crate::store::{self, StoreError};
use crate::telemetry::{self, Telemetry, TelemetryError};

/// Errors that stop a service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// PostgreSQL or Redis could not be reached or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Telemetry could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The configuration conflicts with the server (e.g. MAX_MESSAGE_SIZE).
    #[error("{variable}: {reason}")]
    Config {
        /// The variable at fault.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Registering with the NATS Services API failed.
    #[error("cannot register the service with NATS: {0}")]
    Register(String),
    /// The HTTP side port could not be bound.
    #[error("YMERA_HTTP_ADDR: cannot listen on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// The process exit code for this error: 64 for configuration, 69
    /// (EX_UNAVAILABLE) for unreachable dependencies, 70 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Config { .. }
            | RuntimeError::Http { .. }
            | RuntimeError::Telemetry(_) => crate::config::EXIT_CONFIG,
            RuntimeError::Connect(_) | RuntimeError::Store(_) => 69,
            RuntimeError::Register(_) => 70,
        }
    }
}

/// Process-level resources: configuration, telemetry, the NATS connection
/// and the optional PostgreSQL pool and Redis connection.
pub struct Runtime {
    config: ServiceConfig,
    telemetry: Telemetry,
    client: Client,
    postgres: Option<PgPool>,
    redis: Option<redis::aio::ConnectionManager>,
    shutdown: CancellationToken,
    started: Instant,
    authorizer: OnceLock<Arc<Authorizer>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Sets up telemetry and metrics, connects to NATS (retrying until it
    /// answers), and to PostgreSQL (applying migrations) and Redis when their
    /// URLs are configured.
    pub async fn start(service: &str, config: ServiceConfig) -> Result<Runtime, RuntimeError> {
        let telemetry = Telemetry::init(service, &config)?;
        crate::metrics::install();
        let client = connect_nats(&config.nats, &format!("ymera-{service}")).await?;
        wait_until_connected(&client, &config.nats.url).await;
        let max_payload = client.server_info().max_payload;
        if max_payload > 0 && config.max_message_size > max_payload {
            return Err(RuntimeError::Config {
                variable: "MAX_MESSAGE_SIZE",
                reason: format!(
                    "{} bytes is more than the NATS server's max_payload of {max_payload} bytes",
                    config.max_message_size
                ),
            });
        }
        let postgres = match &config.postgres_url {
            Some(url) => {
                let pool = store::connect_postgres(url, 16).await?;
                store::migrate(&pool).await?;
                Some(pool)
            }
            None => None,
        };
        let redis = match &config.redis_url {
            Some(url) => Some(store::connect_redis(url).await?),
            None => None,
        };
        metrics::gauge!("ymera_up", "service" => service.to_owned()).set(1.0);
        metrics::gauge!("ymera_build_info", "service" => service.to_owned(), "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
        Ok(Runtime {
            config,
            telemetry,
            client,
            postgres,
            redis,
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            authorizer: OnceLock::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The NATS connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The PostgreSQL pool, when `POSTGRES_URL` is set.
    pub fn postgres(&self) -> Option<&PgPool> {
        self.postgres.as_ref()
    }

    /// The Redis connection, when `REDIS_URL` is set.
    pub fn redis(&self) -> Option<&redis::aio::ConnectionManager> {
        self.redis.as_ref()
    }

    /// The one [`Authorizer`] of this process (made on first use, following
    /// `YMERA_AUTH`): the runtime checks [`ServiceBuilder::secured`]
    /// endpoints with it, and handlers use it for checks that depend on the
    /// request's content.
    pub fn authorizer(&self) -> Arc<Authorizer> {
        self.authorizer
            .get_or_init(|| Arc::new(Authorizer::new(self.config.auth, self.client.clone())))
            .clone()
    }

    /// Cancelled when the process is asked to stop; background tasks of a
    /// service watch it. Cancelling it stops the service.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Waits for the first connection (the client retries in the background),
/// logging every 5 s, so start-up checks see the server's INFO.
async fn wait_until_connected(client: &Client, url: &str) {
    let started = Instant::now();
    let mut next_log = Duration::from_secs(5);
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if started.elapsed() >= next_log {
            tracing::warn!(url = %url, waited_s = next_log.as_secs(), "waiting for NATS");
            next_log += Duration::from_secs(5);
        }
    }
}

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    /// The subject it arrived on.
    pub subject: String,
    /// NATS headers.
    pub headers: Option<HeaderMap>,
    /// The body.
    pub payload: Bytes,
    max_size: usize,
    principal: Option<Arc<Principal>>,
}

impl ServiceRequest {
    /// A request built by hand (for calling handlers directly in tests).
    pub fn new(
        subject: impl Into<String>,
        headers: Option<HeaderMap>,
        payload: Bytes,
        max_size: usize,
    ) -> Self {
        ServiceRequest {
            subject: subject.into(),
            headers,
            payload,
            max_size,
            principal: None,
        }
    }

    /// Who sent it, when the endpoint is [`ServiceBuilder::secured`] and
    /// auth is required (`None` with `YMERA_AUTH=off`).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_deref()
    }

    /// Parses the body as JSON into `T` (400 on malformed JSON, unknown
    /// fields where `T` denies them, too-deep nesting, NUL or bad UTF-8).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        limits::parse_json(&self.payload, self.max_size)
    }

    /// Parses the body as JSON, treating an empty body as `{}`.
    pub fn json_or_default<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if self.payload.iter().all(u8::is_ascii_whitespace) {
            return limits::parse_json(b"{}", self.max_size);
        }
        self.json()
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name).map(|v| v.as_str())
    }

    /// The credential in `Authorization: Bearer` or `X-API-Key`; a header
    /// over 8 KiB is refused before anything else looks at it.
    pub fn credential(&self) -> Result<Option<Credential>, Error> {
        if let Some(auth) = self.header("Authorization") {
            if auth.len() > MAX_CREDENTIAL_HEADER {
                return Err(Error::unauthenticated("Authorization header too long"));
            }
            let token = auth
                .strip_prefix("Bearer ")
                .ok_or_else(|| Error::unauthenticated("Authorization must be 'Bearer <token>'"))?;
            return Ok(Some(Credential::Bearer(token.trim().to_owned())));
        }
        if let Some(key) = self.header("X-API-Key") {
            if key.len() > MAX_CREDENTIAL_HEADER {
                return Err(Error::unauthenticated("X-API-Key header too long"));
            }
            return Ok(Some(Credential::ApiKey(key.trim().to_owned())));
        }
        Ok(None)
    }
}

/// A successful reply.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The body.
    pub body: Bytes,
    /// Extra headers.
    pub headers: HeaderMap,
}

impl Reply {
    /// A JSON reply.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Reply, Error> {
        let body = serde_json::to_vec(value).map_err(Error::internal)?;
        Ok(Reply::bytes(Bytes::from(body)))
    }

    /// A raw reply.
    pub fn bytes(body: impl Into<Bytes>) -> Reply {
        Reply {
            body: body.into(),
            headers: HeaderMap::new(),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send + 'static>>;

/// A handler calling `f` with a clone of the service's shared `state` and
/// the request (for `async fn f(state: Arc<S>, req: ServiceRequest)`).
pub fn with_state<S, Fut>(
    state: &Arc<S>,
    f: fn(Arc<S>, ServiceRequest) -> Fut,
) -> impl Fn(ServiceRequest) -> Fut + Send + Sync + 'static
where
    S: Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Error>> + Send + 'static,
{
    let state = state.clone();
    move |req| f(state.clone(), req)
}

/// An endpoint handler: an async function from request to reply.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, request: ServiceRequest) -> BoxFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(ServiceRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Error>> + Send + 'static,
{
    fn call(&self, request: ServiceRequest) -> BoxFuture {
        Box::pin(self(request))
    }
}

struct EndpointSpec {
    subject: String,
    /// Checked by the runtime before the handler runs.
    permission: Option<&'static str>,
    handler: Arc<dyn Handler>,
}

/// Declares a service and its endpoints, then serves them.
pub struct ServiceBuilder {
    name: String,
    version: String,
    description: String,
    endpoints: Vec<EndpointSpec>,
    request_timeout: Duration,
    shutdown_deadline: Duration,
    max_in_flight: usize,
    optional_checks: Vec<&'static str>,
}

impl ServiceBuilder {
    /// A service named `name` (the micro name and subject prefix).
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        ServiceBuilder {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            endpoints: Vec::new(),
            request_timeout: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(10),
            max_in_flight: MAX_IN_FLIGHT_REQUESTS,
            optional_checks: vec!["redis"],
        }
    }

    /// Adds an endpoint answering requests on `subject` (queue group `q`,
    /// so instances share the load) that anyone may call: health-like
    /// endpoints, and the security service's own, which check credentials
    /// themselves.
    pub fn endpoint(self, subject: &str, handler: impl Handler) -> Self {
        self.add(subject, None, handler)
    }

    /// Adds an endpoint that needs `permission`: with `YMERA_AUTH=required`
    /// the runtime checks the request's credential with the process's
    /// [`Authorizer`] before `handler` runs (401 without a valid
    /// credential, 403 without the permission) and hands the handler the
    /// [`Principal`] ([`ServiceRequest::principal`]).
    pub fn secured(self, subject: &str, permission: &'static str, handler: impl Handler) -> Self {
        self.add(subject, Some(permission), handler)
    }

    fn add(
        mut self,
        subject: &str,
        permission: Option<&'static str>,
        handler: impl Handler,
    ) -> Self {
        self.endpoints.push(EndpointSpec {
            subject: subject.to_owned(),
            permission,
            handler: Arc::new(handler),
        });
        self
    }

    /// The permission each endpoint declares (`None`: open), by subject.
    pub fn permissions(&self) -> BTreeMap<&str, Option<&'static str>> {
        self.endpoints
            .iter()
            .map(|spec| (spec.subject.as_str(), spec.permission))
            .collect()
    }

    /// How long one handler may run before the caller gets 503 (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long in-flight requests may take to finish at shutdown (default 10 s).
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// Serves until SIGTERM/SIGINT or the runtime's shutdown token, then stops
    /// taking requests, finishes in-flight ones within the deadline, flushes
    /// NATS and telemetry, and returns.
    pub async fn serve(self, runtime: Runtime) -> Result<(), RuntimeError> {
        let error_counts = Arc::new(ErrorCounts::default());
        let service = runtime
            .client
            .service_builder()
            .description(&self.description)
            .stats_handler(stats_data_handler(error_counts.clone()))
            .start(&self.name, &self.version)
            .await
            .map_err(|e| RuntimeError::Register(e.to_string()))?;
        let instance_id = service.info().await.id;
        let probe = Arc::new(HealthProbe {
            service: self.name.clone(),
            instance_id: instance_id.clone(),
            version: self.version.clone(),
            client: runtime.client.clone(),
            postgres: runtime.postgres.clone(),
            redis: runtime.redis.clone(),
            started: runtime.started,
            optional: self.optional_checks.clone(),
        });
        let shutdown = runtime.shutdown.clone();
        let http_addr =
            crate::http::serve(runtime.config.http_addr, probe.clone(), shutdown.clone()).await?;
        tracing::info!(service = %self.name, instance = %instance_id, http = %http_addr, "service started");

        let authorizer = self
            .endpoints
            .iter()
            .any(|spec| spec.permission.is_some())
            .then(|| runtime.authorizer());
        let ctx = Arc::new(RequestContext {
            authorizer,
            service: self.name.clone(),
            max_size: runtime.config.max_message_size,
            timeout: self.request_timeout,
            in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
            tracker: TaskTracker::new(),
            error_counts,
        });
        let mut endpoints = self.endpoints;
        // `<name>.health` reaches any instance (queue group); `<name>.health.<id>`
        // reaches this one, so `ymera health` can ask every instance.
        for subject in [
            format!("{}.health", self.name),
            format!("{}.health.{instance_id}", self.name),
        ] {
            let health_probe = probe.clone();
            endpoints.push(EndpointSpec {
                subject,
                permission: None,
                handler: Arc::new(move |_req: ServiceRequest| {
                    let probe = health_probe.clone();
                    async move { Reply::json(&probe.report().await) }
                }),
            });
        }
        let mut loops = Vec::new();
        for spec in endpoints {
            let endpoint = service
                .endpoint_builder()
                .name(endpoint_name(&self.name, &spec.subject))
                .add(spec.subject.clone())
                .await
                .map_err(|e| RuntimeError::Register(format!("{}: {e}", spec.subject)))?;
            loops.push(tokio::spawn(endpoint_loop(
                endpoint,
                spec,
                ctx.clone(),
                shutdown.clone(),
            )));
        }
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        shutdown.cancelled().await;

        tracing::info!(service = %self.name, "shutting down: no new requests");
        futures::future::join_all(loops).await;
        ctx.tracker.close();
        if tokio::time::timeout(self.shutdown_deadline, ctx.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(service = %self.name, "in-flight requests did not finish before the deadline");
        }
        if let Err(err) = service.stop().await {
            tracing::warn!(error = %err, "stopping the services API handler failed");
        }
        if let Err(err) = runtime.client.flush().await {
            tracing::warn!(error = %err, "flushing NATS failed");
        }
        metrics::gauge!("ymera_up", "service" => self.name.clone()).set(0.0);
        tracing::info!(service = %self.name, "stopped");
        runtime.telemetry.shutdown();
        Ok(())
    }
}

/// Per-service state shared by the endpoint loops.
struct RequestContext {
    /// Present when an endpoint is secured.
    authorizer: Option<Arc<Authorizer>>,
    service: String,
    max_size: usize,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
    tracker: TaskTracker,
    error_counts: Arc<ErrorCounts>,
}

/// The Services API endpoint name for a subject: the part after the service
/// prefix, dots as underscores (`config.schema.set` → `schema_set`).
fn endpoint_name(service: &str, subject: &str) -> String {
    let rest = subject
        .strip_prefix(&format!("{service}."))
        .unwrap_or(subject);
    // Every instance's own health subject gets one stable endpoint name.
    if rest.starts_with("health.") {
        return "health_instance".to_owned();
    }
    rest.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn endpoint_loop(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    spec: EndpointSpec,
    ctx: Arc<RequestContext>,
    shutdown: CancellationToken,
) {
    let spec = Arc::new(spec);
    loop {
        let request = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            request = endpoint.next() => request,
        };
        let Some(request) = request else { return };
        dispatch(request, &spec, &ctx).await;
    }
    // Stop taking requests, then answer what was already delivered to us.
    if let Err(err) = endpoint.stop().await {
        tracing::warn!(error = %err, subject = %spec.subject, "unsubscribe failed");
    }
    let drain = async {
        while let Some(request) = endpoint.next().await {
            dispatch(request, &spec, &ctx).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

async fn dispatch(
    request: async_nats::service::Request,
    spec: &Arc<EndpointSpec>,
    ctx: &Arc<RequestContext>,
) {
    let Ok(permit) = ctx.in_flight.clone().acquire_owned().await else {
        return;
    };
    let (spec, ctx2) = (spec.clone(), ctx.clone());
    ctx.tracker.spawn(async move {
        handle_request(request, &spec, &ctx2).await;
        drop(permit);
    });
}

async fn handle_request(
    request: async_nats::service::Request,
    spec: &EndpointSpec,
    ctx: &RequestContext,
) {
    let started = Instant::now();
    let message = &request.message;
    let span = tracing::info_span!("request", service = %ctx.service, subject = %spec.subject, otel.kind = "server");
    telemetry::set_parent_from_headers(&span, message.headers.as_ref());
    let outcome = async {
        if message.payload.len() > ctx.max_size {
            return Err(Error::payload_too_large(
                "request",
                message.payload.len(),
                ctx.max_size,
            ));
        }
        let mut req = ServiceRequest::new(
            spec.subject.clone(),
            message.headers.clone(),
            message.payload.clone(),
            ctx.max_size,
        );
        if let (Some(permission), Some(authorizer)) = (spec.permission, &ctx.authorizer) {
            req.principal = authorizer.check(&req, permission).await?;
        }
        run_handler(spec.handler.clone(), req, ctx.timeout).await
    }
    .instrument(span.clone())
    .await;
    let endpoint = spec.subject.clone();
    metrics::counter!("ymera_requests_total", "service" => ctx.service.clone(), "endpoint" => endpoint.clone()).increment(1);
    let (payload, headers) = match outcome {
        Ok(reply) => (reply.body, reply.headers),
        Err(err) => {
            metrics::counter!("ymera_request_errors_total", "service" => ctx.service.clone(), "endpoint" => endpoint.clone(), "code" => err.code().to_string())
                .increment(1);
            record_stats_error(&ctx.error_counts, &ctx.service, &endpoint, &err);
            span.in_scope(
                || tracing::info!(code = err.code(), error = %err.message, "request failed"),
            );
            (err.to_body(), err.to_headers())
        }
    };
    if let Err(err) = request.respond_with_headers(Ok(payload), headers).await {
        tracing::warn!(error = %err, subject = %spec.subject, "could not send reply");
    }
    metrics::histogram!("ymera_request_duration_seconds", "service" => ctx.service.clone(), "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
}

/// Runs a handler in its own task so a panic becomes a 500 reply instead of
/// taking the service down, and bounds its time.
async fn run_handler(
    handler: Arc<dyn Handler>,
    request: ServiceRequest,
    timeout: Duration,
) -> Result<Reply, Error> {
    let task = tokio::spawn(handler.call(request).in_current_span());
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(Error::internal(format!("handler panicked: {join}"))),
        Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            format!("request timed out after {} ms", timeout.as_millis()),
        )
        .with_detail("reason", "timeout")),
    }
}

/// Error count and last error per endpoint name, for one service instance.
type ErrorCounts = std::sync::Mutex<HashMap<String, (u64, String)>>;

fn record_stats_error(counts: &ErrorCounts, service: &str, endpoint: &str, err: &Error) {
    let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
    let entry = counts.entry(endpoint_name(service, endpoint)).or_default();
    entry.0 += 1;
    entry.1 = format!("{} {}", err.code(), err.message);
}

/// `$SRV.STATS` counts errors only for replies sent through its error path,
/// which carries no body; ours carry the JSON error body, so the counts and
/// last error are reported in each endpoint's `data` instead.
fn stats_data_handler(
    counts: Arc<ErrorCounts>,
) -> impl FnMut(String, async_nats::service::endpoint::Stats) -> serde_json::Value + Send + Sync + 'static
{
    move |endpoint: String, _stats| {
        let counts = counts.lock().unwrap_or_else(|p| p.into_inner());
        match counts.get(&endpoint) {
            Some((n, last)) => serde_json::json!({"errors": n, "last_error": last}),
            None => serde_json::json!({"errors": 0}),
        }
    }
}

async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = token.cancelled() => return,
    }
    token.cancel();
}

/// Probes the dependencies for `<service>.health`, `/health` and `/ready`.
pub struct HealthProbe {
    service: String,
    instance_id: String,
    version: String,
    client: Client,
    postgres: Option<PgPool>,
    redis: Option<redis::aio::ConnectionManager>,
    started: Instant,
    optional: Vec<&'static str>,
}

impl HealthProbe {
    /// Probes every dependency now.
    pub async fn report(&self) -> HealthReport {
        let mut checks = BTreeMap::new();
        checks.insert("nats".to_owned(), timed(self.probe_nats()).await);
        if let Some(pool) = &self.postgres {
            checks.insert(
                "postgres".to_owned(),
                timed(store::probe_postgres(pool)).await,
            );
        }
        if let Some(redis) = &self.redis {
            checks.insert("redis".to_owned(), timed(store::probe_redis(redis)).await);
        }
        HealthReport {
            service: self.service.clone(),
            instance_id: self.instance_id.clone(),
            version: self.version.clone(),
            status: HealthReport::overall(&checks, &self.optional),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            checks,
            timestamp: chrono::Utc::now(),
        }
    }

    async fn probe_nats(&self) -> Result<(), Error> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Error::dependency_down("nats"));
        }
        match tokio::time::timeout(store::PROBE_TIMEOUT, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::dependency_down("nats")),
        }
    }
}

async fn timed(probe: impl Future<Output = Result<(), Error>>) -> CheckResult {
    let started = Instant::now();
    let result = probe.await;
    CheckResult {
        status: if result.is_ok() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        },
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error: result.err().map(|e| e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names() {
        assert_eq!(endpoint_name("config", "config.schema.set"), "schema_set");
        assert_eq!(
            endpoint_name("code-analysis", "code-analysis.analyze"),
            "analyze"
        );
        assert_eq!(endpoint_name("x", "other.subject"), "other_subject");
        assert_eq!(endpoint_name("x", "x.health.AbC123"), "health_instance");
    }

    #[test]
    fn credentials_are_parsed_and_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert("Authorization", "Bearer abc");
        let req = ServiceRequest::new("s", Some(headers), Bytes::new(), 10);
        assert_eq!(
            req.credential().unwrap(),
            Some(Credential::Bearer("abc".into()))
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "Authorization",
            format!("Bearer {}", "a".repeat(9000)).as_str(),
        );
        let req = ServiceRequest::new("s", Some(headers), Bytes::new(), 10);
        assert_eq!(
            req.credential().unwrap_err().kind,
            ErrorKind::Unauthenticated
        );
    }
}
