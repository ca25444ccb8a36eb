//! [`ServiceBuilder`]: a service's name and endpoints, then
//! [`serve`](ServiceBuilder::serve) until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::ServiceExt;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::dispatch::{self, ErrorCounts, RequestContext, Route};
use super::endpoint::{
    self, Call, EndpointInfo, ErasedHandler, Open, Permission, Raw, ReplyBody, RequestBody,
};
use super::health::HealthProbe;
use super::{Runtime, RuntimeError};
use crate::error::Error;
use crate::limits::MAX_IN_FLIGHT_REQUESTS;

pub(crate) struct EndpointSpec {
    pub(crate) info: EndpointInfo,
    pub(crate) handler: ErasedHandler,
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

    /// Adds the endpoint `subject` (queue group `q`, so instances share the
    /// load) answered by `handler`, an `async fn(state, Call<P>, Request) ->
    /// Result<Reply, Error>` (see [`endpoint`](super::endpoint) for the
    /// types). With `YMERA_AUTH=required` the runtime checks `P` with the
    /// process's [`Authorizer`](crate::auth::Authorizer) before the body is
    /// parsed: 401 without a valid credential, 403 without the permission.
    pub fn route<S, P, Req, Resp, F, Fut>(self, subject: &str, state: &S, handler: F) -> Self
    where
        S: Clone + Send + Sync + 'static,
        P: Permission,
        Req: RequestBody,
        Resp: ReplyBody,
        F: Fn(S, Call<P>, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.push(EndpointSpec {
            info: EndpointInfo {
                subject: subject.to_owned(),
                permission: P::NAME,
                request: Req::schema_name(),
                reply: Resp::schema_name(),
            },
            handler: endpoint::erase(state.clone(), handler),
        })
    }

    pub(crate) fn push(mut self, spec: EndpointSpec) -> Self {
        self.endpoints.push(spec);
        self
    }

    /// Every endpoint declared so far (the health endpoints the runtime
    /// adds at [`serve`](Self::serve) aside), in registration order.
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.endpoints
            .iter()
            .map(|spec| spec.info.clone())
            .collect()
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
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
        let version = super::version_override().unwrap_or_else(|| self.version.clone());
        let service = runtime
            .client
            .service_builder()
            .description(&self.description)
            .stats_handler(dispatch::stats_data_handler(error_counts.clone()))
            .start(&self.name, &version)
            .await
            .map_err(|e| RuntimeError::Register(e.to_string()))?;
        let instance_id = service.info().await.id;
        let probe = Arc::new(HealthProbe::new(
            &self.name,
            &instance_id,
            &version,
            &runtime,
            self.optional_checks.clone(),
        ));
        let shutdown = runtime.shutdown.clone();
        tokio::spawn(record_dependencies(probe.clone(), shutdown.clone()));
        let http_addr =
            crate::http::serve(runtime.config.http_addr, probe.clone(), shutdown.clone()).await?;
        tracing::info!(service = %self.name, instance = %instance_id, http = %http_addr, "service started");

        let authorizer = self
            .endpoints
            .iter()
            .any(|spec| spec.info.permission.is_some())
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
            let health = ServiceBuilder::new(&self.name, "", "").route(
                &subject,
                &probe,
                |probe: Arc<HealthProbe>, _call: Call<Open>, _body: Raw| async move {
                    probe.reply().await
                },
            );
            endpoints.extend(health.endpoints);
        }
        let mut loops = Vec::new();
        for spec in endpoints {
            let route = Arc::new(Route::new(&self.name, spec));
            let endpoint = service
                .endpoint_builder()
                .name(route.name.clone())
                .metadata(route.metadata())
                .add(route.subject.clone())
                .await
                .map_err(|e| RuntimeError::Register(format!("{}: {e}", route.subject)))?;
            loops.push(tokio::spawn(dispatch::endpoint_loop(
                endpoint,
                route,
                ctx.clone(),
                shutdown.clone(),
            )));
        }
        tokio::spawn(dispatch::cancel_on_signal(shutdown.clone()));
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

/// Sets `ymera_dependency_up` now and every
/// [`DEPENDENCY_PROBE_INTERVAL`](crate::metrics::DEPENDENCY_PROBE_INTERVAL)
/// until shutdown.
async fn record_dependencies(
    probe: Arc<HealthProbe>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(crate::metrics::DEPENDENCY_PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => probe.record_dependencies().await,
        }
    }
}
