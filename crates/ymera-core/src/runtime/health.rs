//! The dependency probe behind `<service>.health`, `/health` and `/ready`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_nats::Client;
use sqlx::PgPool;
use tokio::sync::Mutex;

use super::endpoint::Serialized;
use super::{CalledServices, Runtime};
use crate::error::Error;
use crate::health::{CheckResult, HealthReport, HealthStatus};
use crate::store;

/// When a probe's checks started, its report and the report's JSON.
type LastProbe = (Instant, Arc<HealthReport>, Serialized<HealthReport>);

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
    called: CalledServices,
    /// The last report (and its JSON) and when its checks started; one
    /// probe at a time.
    last: Mutex<Option<LastProbe>>,
}

impl HealthProbe {
    pub(crate) fn new(
        service: &str,
        instance_id: &str,
        version: &str,
        runtime: &Runtime,
        optional: Vec<&'static str>,
    ) -> Self {
        HealthProbe {
            service: service.to_owned(),
            instance_id: instance_id.to_owned(),
            version: version.to_owned(),
            client: runtime.client.clone(),
            postgres: runtime.postgres.clone(),
            redis: runtime.redis.clone(),
            started: runtime.started,
            optional,
            called: runtime.called.clone(),
            last: Mutex::new(None),
        }
    }

    /// The dependencies' health, from checks that started after this call
    /// did: concurrent callers share one round of checks (a burst of health
    /// requests costs one or two probes, not one each), and no caller gets
    /// a report older than its request.
    pub async fn report(&self) -> Arc<HealthReport> {
        self.shared().await.0
    }

    /// [`HealthProbe::report`] as the JSON reply of `<service>.health`,
    /// serialised once per probe rather than once per request.
    pub async fn reply(&self) -> Result<Serialized<HealthReport>, Error> {
        self.shared().await.1
    }

    async fn shared(&self) -> (Arc<HealthReport>, Result<Serialized<HealthReport>, Error>) {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((started, report, json)) = last.as_ref()
            && *started >= arrived
        {
            return (report.clone(), Ok(json.clone()));
        }
        let started = Instant::now();
        let report = Arc::new(self.probe().await);
        match Serialized::new(report.as_ref()) {
            Ok(json) => {
                *last = Some((started, report.clone(), json.clone()));
                (report, Ok(json))
            }
            Err(err) => (report, Err(err)),
        }
    }

    /// Probes every dependency now.
    async fn probe(&self) -> HealthReport {
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

    /// Probes every dependency (a fresh report, and `<service>.health` of
    /// every service this process calls, concurrently) and sets
    /// `ymera_dependency_up{service, dependency}` from the results.
    pub async fn record_dependencies(&self) {
        let called: Vec<String> = self
            .called
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let services = futures::future::join_all(
            called
                .iter()
                .map(|name| async move { (name, self.service_answers(name).await) }),
        );
        let (report, services) = futures::join!(self.report(), services);
        for (name, check) in &report.checks {
            crate::metrics::set_dependency_up(
                &self.service,
                name,
                check.status == HealthStatus::Healthy,
            );
        }
        for (name, up) in services {
            crate::metrics::set_dependency_up(&self.service, name, up);
        }
    }

    /// Whether some instance of `service` answers `<service>.health` within
    /// [`store::PROBE_TIMEOUT`] without reporting itself unhealthy.
    async fn service_answers(&self, service: &str) -> bool {
        let request = self.client.request(
            format!("{service}.health"),
            bytes::Bytes::from_static(b"{}"),
        );
        match tokio::time::timeout(store::PROBE_TIMEOUT, request).await {
            Ok(Ok(reply)) => serde_json::from_slice::<HealthReport>(&reply.payload)
                .is_ok_and(|report| report.status != HealthStatus::Unhealthy),
            _ => false,
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
