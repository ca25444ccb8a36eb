//! `POST /v1/webhooks/{source}`: webhook intake.
//!
//! Sources live in the config manager, in the gateway's own document
//! (agent `GATEWAY_CONFIG_AGENT`, default `gateway`, in the process's
//! `ENVIRONMENT`), followed live:
//!
//! ```json
//! {"webhooks": {"github": {"kind": "github", "secret_env": "GITHUB_WEBHOOK_SECRET",
//!                          "agent": "ci-bot", "subject": "github.push"}}}
//! ```
//!
//! The secret is a reference, never the value: `secret_env` (a variable of
//! the gateway's environment) or `secret_file` (a path, e.g. a mounted
//! Secret). `kind` is `standard` (Standard Webhooks: `webhook-id`,
//! `webhook-timestamp`, `webhook-signature`, HMAC-SHA256 over
//! `id.timestamp.body` with the base64 `whsec_` secret, ±5 minutes) or
//! `github` (`X-Hub-Signature-256: sha256=<hex>` over the body, delivery id
//! `X-GitHub-Delivery`).
//!
//! A verified delivery becomes one `event` envelope to the source's agent
//! through `communication.send` (with the gateway's service credential),
//! and is answered 202 only after the send was accepted. The delivery id is
//! claimed in the JetStream KV bucket `ymera_gateway_webhooks` first (shared
//! by every replica): a repeat is answered 200 `duplicate` and sends
//! nothing; a repeat while the first is still being sent gets 409 (the
//! sender retries); a failed send releases the claim. The envelope id is
//! derived from the source and delivery id, so even a send retried after a
//! lost claim is a duplicate inside communication's window. Every refusal is
//! published as the security event `events.security.webhook_refused`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use ymera_core::client::ServiceClient;
use ymera_core::{Error, ErrorKind};

use crate::AppState;
use crate::reply::error_response;

/// The KV bucket of claimed delivery ids.
pub const DEDUPE_BUCKET: &str = "ymera_gateway_webhooks";
/// Timestamps further than this from the gateway's clock are refused.
pub const TOLERANCE: Duration = Duration::from_secs(300);
/// A claim still `pending` after this long belongs to a gateway that died
/// mid-send; a repeat may take it over.
pub const PENDING_TAKEOVER: Duration = Duration::from_secs(30);
/// The security event of a refusal (stored by the security service).
pub const REFUSAL_SUBJECT: &str = "events.security.webhook_refused";
/// Longest wait for JetStream to store a refusal.
const REFUSAL_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest delivery id accepted.
const MAX_ID_LEN: usize = 256;

type HmacSha256 = Hmac<Sha256>;

/// The gateway's document in the config manager (only `webhooks` is read).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GatewayDocument {
    /// Webhook sources by name.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookSource>,
}

/// How deliveries of a source are signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureKind {
    /// Standard Webhooks.
    #[default]
    Standard,
    /// GitHub's `X-Hub-Signature-256`.
    Github,
}

/// One webhook source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSource {
    /// The signature scheme.
    #[serde(default)]
    pub kind: SignatureKind,
    /// The environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The file holding the secret.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// The recipient agent of the envelopes.
    pub agent: String,
    /// The envelope subject (default `webhook.<source>`).
    #[serde(default)]
    pub subject: Option<String>,
    /// The envelope sender (default `gateway`; the gateway's credential must
    /// own it or hold `comm:send_as`).
    #[serde(default)]
    pub sender: Option<String>,
}

/// What the webhook handler shares.
pub struct Webhooks {
    sources: watch::Receiver<GatewayDocument>,
    dedupe: kv::Store,
    client: ServiceClient,
    secrets: SecretCache,
}

/// How long a secret read from its variable or file is reused (a rotated
/// secret is in use within this time).
pub const SECRET_TTL: Duration = Duration::from_secs(10);
/// Most secrets cached (one per source reference).
const MAX_CACHED_SECRETS: usize = 1024;

/// Secrets by reference (`env:NAME` / `file:PATH`), read at most every
/// [`SECRET_TTL`]: no file read or environment lookup per delivery.
#[derive(Default)]
struct SecretCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Arc<str>)>>,
}

impl SecretCache {
    fn get(&self, source: &WebhookSource) -> Result<Arc<str>, String> {
        let reference = match (&source.secret_env, &source.secret_file) {
            (Some(var), _) => format!("env:{var}"),
            (None, Some(path)) => format!("file:{path}"),
            (None, None) => {
                return Err("the source names neither secret_env nor secret_file".to_owned());
            }
        };
        let now = std::time::Instant::now();
        if let Ok(entries) = self.entries.lock()
            && let Some((at, secret)) = entries.get(&reference)
            && now.duration_since(*at) < SECRET_TTL
        {
            return Ok(secret.clone());
        }
        let secret: Arc<str> = read_secret(source)?.into();
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_CACHED_SECRETS {
                entries.retain(|_, (at, _)| now.duration_since(*at) < SECRET_TTL);
                if entries.len() >= MAX_CACHED_SECRETS {
                    entries.clear();
                }
            }
            entries.insert(reference, (now, secret.clone()));
        }
        Ok(secret)
    }
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Opens (or creates) the dedupe bucket with `ttl` and follows the sources in the
    /// config manager through `client` (the gateway's service credential).
    pub async fn start(
        client: ServiceClient,
        sources: watch::Receiver<GatewayDocument>,
        ttl: Duration,
    ) -> Result<Webhooks, String> {
        let nats = client.nats().clone();
        let js = jetstream::new(nats.clone());
        let replicas = ymera_core::jetstream::replicas(&nats)
            .await
            .map_err(|e| e.to_string())?;
        let dedupe = match js.get_key_value(DEDUPE_BUCKET).await {
            Ok(store) => {
                // A bucket made before (or at another replica count) is scaled in place.
                let name = format!("KV_{DEDUPE_BUCKET}");
                let mut stream = js
                    .get_stream(&name)
                    .await
                    .map_err(|e| format!("KV {DEDUPE_BUCKET}: {e}"))?;
                let config = stream
                    .info()
                    .await
                    .map_err(|e| format!("KV {DEDUPE_BUCKET}: {e}"))?
                    .config
                    .clone();
                ymera_core::jetstream::ensure_stream(&js, config, replicas).await?;
                store
            }
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: DEDUPE_BUCKET.to_owned(),
                    description: "webhook delivery ids the gateway accepted".to_owned(),
                    history: 1,
                    max_age: ttl,
                    num_replicas: replicas.count,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("KV {DEDUPE_BUCKET}: {e}"))?,
        };
        Ok(Webhooks {
            sources,
            dedupe,
            client,
            secrets: SecretCache::default(),
        })
    }
}

/// A refusal: the error answered and the reason recorded.
struct Refusal {
    error: Error,
    reason: &'static str,
}

fn refuse(kind: ErrorKind, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        error: Error::new(kind, message).with_detail("reason", reason),
        reason,
    }
}

/// The handler of `POST /v1/webhooks/{source}`.
pub async fn intake(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(webhooks) = state.webhooks.clone() else {
        return error_response(&Error::new(
            ErrorKind::Unavailable,
            "webhook intake is not configured",
        ));
    };
    let outcome = accept(&state, &webhooks, &source, &headers, body).await;
    let (response, label) = match outcome {
        Ok(response) => (response, "accepted"),
        Err(refusal) => {
            if refusal.error.kind != ErrorKind::Unavailable
                && refusal.error.kind != ErrorKind::Conflict
            {
                record_refusal(&state.nats, &source, refusal.reason, peer, &headers).await;
            }
            (error_response(&refusal.error), refusal.reason)
        }
    };
    metrics::counter!("ymera_gateway_webhooks_total", "outcome" => label).increment(1);
    response
}

async fn accept(
    state: &AppState,
    webhooks: &Webhooks,
    source_name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let source = webhooks
        .sources
        .borrow()
        .webhooks
        .get(source_name)
        .cloned()
        .ok_or_else(|| {
            refuse(
                ErrorKind::NotFound,
                "unknown_source",
                format!("no webhook source {source_name:?}"),
            )
        })?;
    let limit = state.settings.max_body;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        refuse(
            ErrorKind::PayloadTooLarge,
            "payload_too_large",
            format!("webhook body exceeds the limit of {limit} bytes"),
        )
    })?;
    let secret = webhooks.secrets.get(&source).map_err(|message| {
        tracing::error!(source = source_name, %message, "webhook secret unavailable");
        refuse(
            ErrorKind::Unavailable,
            "secret_unavailable",
            "the source's secret is not available",
        )
    })?;
    let delivery_id = match source.kind {
        SignatureKind::Standard => verify_standard(&secret, headers, &body, now_unix())?,
        SignatureKind::Github => verify_github(&secret, headers, &body)?,
    };
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        refuse(
            ErrorKind::InvalidRequest,
            "malformed_json",
            format!("webhook body is not JSON: {e}"),
        )
    })?;
    let key = dedupe_key(source_name, &delivery_id);
    match claim(&webhooks.dedupe, &key).await? {
        Claim::Done => Ok((
            StatusCode::OK,
            axum::Json(json!({"accepted": true, "duplicate": true, "webhook_id": delivery_id})),
        )
            .into_response()),
        Claim::Mine(revision) => {
            let event = match source.kind {
                SignatureKind::Github => headers
                    .get("x-github-event")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                SignatureKind::Standard => payload
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            };
            let envelope = envelope(source_name, &source, &delivery_id, event, payload);
            let id = envelope["id"].clone();
            match webhooks
                .client
                .request::<_, Value>("communication.send", &envelope)
                .await
            {
                Ok(_) => {
                    if let Err(err) = webhooks
                        .dedupe
                        .update(&key, Bytes::from_static(b"done"), revision)
                        .await
                    {
                        tracing::warn!(error = %err, "marking a webhook delivery done failed");
                    }
                    Ok((
                        StatusCode::ACCEPTED,
                        axum::Json(json!({"accepted": true, "duplicate": false, "webhook_id": delivery_id, "id": id})),
                    )
                        .into_response())
                }
                Err(err) => {
                    let _ = webhooks.dedupe.delete(&key).await;
                    tracing::warn!(source = source_name, error = %err, "communication.send refused a webhook envelope");
                    Err(Refusal {
                        reason: "send_failed",
                        error: err,
                    })
                }
            }
        }
    }
}

enum Claim {
    /// This request owns the delivery (the KV revision of its claim).
    Mine(u64),
    /// Already sent.
    Done,
}

async fn claim(store: &kv::Store, key: &str) -> Result<Claim, Refusal> {
    let pending = || Bytes::from(format!("pending {}", now_unix()));
    match store.create(key, pending()).await {
        Ok(revision) => return Ok(Claim::Mine(revision)),
        Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(err) => {
            tracing::warn!(error = %err, "webhook dedupe claim failed");
            return Err(refuse(
                ErrorKind::Unavailable,
                "dedupe_unavailable",
                "cannot record the delivery; retry later",
            ));
        }
    }
    let entry = store.entry(key).await.map_err(|_| {
        refuse(
            ErrorKind::Unavailable,
            "dedupe_unavailable",
            "cannot read the delivery; retry later",
        )
    })?;
    let Some(entry) = entry else {
        // Released between our create and read: try once more.
        return match store.create(key, pending()).await {
            Ok(revision) => Ok(Claim::Mine(revision)),
            Err(_) => Err(in_progress()),
        };
    };
    if entry.operation != kv::Operation::Put {
        return match store.update(key, pending(), entry.revision).await {
            Ok(revision) => Ok(Claim::Mine(revision)),
            Err(_) => Err(in_progress()),
        };
    }
    let text = String::from_utf8_lossy(&entry.value);
    if text == "done" {
        return Ok(Claim::Done);
    }
    let since: u64 = text
        .strip_prefix("pending ")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    if now_unix().saturating_sub(since) >= PENDING_TAKEOVER.as_secs()
        && let Ok(revision) = store.update(key, pending(), entry.revision).await
    {
        return Ok(Claim::Mine(revision));
    }
    Err(in_progress())
}

fn in_progress() -> Refusal {
    refuse(
        ErrorKind::Conflict,
        "in_progress",
        "this delivery is being processed; retry later",
    )
}

/// The KV key of a delivery (delivery ids are arbitrary strings).
pub fn dedupe_key(source: &str, delivery_id: &str) -> String {
    let digest = Sha256::digest(format!("{source}\n{delivery_id}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{source}.{hex}")
}

/// A UUID-v7-shaped id derived from the delivery (stable across retries).
pub fn envelope_id(source: &str, delivery_id: &str) -> uuid::Uuid {
    let digest = Sha256::digest(format!("webhook\n{source}\n{delivery_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes)
}

fn envelope(
    name: &str,
    source: &WebhookSource,
    delivery_id: &str,
    event: Option<String>,
    payload: Value,
) -> Value {
    json!({
        "id": envelope_id(name, delivery_id).to_string(),
        "type": "event",
        "sender": source.sender.clone().unwrap_or_else(|| "gateway".to_owned()),
        "recipients": [source.agent],
        "subject": source.subject.clone().unwrap_or_else(|| format!("webhook.{name}")),
        "payload": {"source": name, "webhook_id": delivery_id, "event": event, "body": payload},
        "metadata": {"webhook_source": name, "webhook_id": delivery_id},
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

fn read_secret(source: &WebhookSource) -> Result<String, String> {
    if let Some(var) = &source.secret_env {
        return std::env::var(var)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("environment variable {var} is not set"));
    }
    if let Some(path) = &source.secret_file {
        return std::fs::read_to_string(path)
            .map(|v| v.trim().to_owned())
            .map_err(|e| format!("{path}: {e}"));
    }
    Err("the source names neither secret_env nor secret_file".to_owned())
}

fn now_unix() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn delivery_id_of(value: Option<&str>, name: &str) -> Result<String, Refusal> {
    match value {
        Some(id) if id.len() <= MAX_ID_LEN => Ok(id.to_owned()),
        Some(_) => Err(refuse(
            ErrorKind::InvalidRequest,
            "bad_id",
            format!("{name} is longer than {MAX_ID_LEN} characters"),
        )),
        None => Err(refuse(
            ErrorKind::Unauthenticated,
            "missing_headers",
            format!("missing {name} header"),
        )),
    }
}

/// Verifies a Standard Webhooks delivery at `now` (unix seconds); returns its id.
fn verify_standard(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<String, Refusal> {
    let id = delivery_id_of(header(headers, "webhook-id"), "webhook-id")?;
    let timestamp = header(headers, "webhook-timestamp").ok_or_else(|| {
        refuse(
            ErrorKind::Unauthenticated,
            "missing_headers",
            "missing webhook-timestamp header",
        )
    })?;
    let signatures = header(headers, "webhook-signature").ok_or_else(|| {
        refuse(
            ErrorKind::Unauthenticated,
            "missing_headers",
            "missing webhook-signature header",
        )
    })?;
    let ts: u64 = timestamp.parse().map_err(|_| {
        refuse(
            ErrorKind::Unauthenticated,
            "bad_timestamp",
            "webhook-timestamp is not a unix time",
        )
    })?;
    if now.abs_diff(ts) > TOLERANCE.as_secs() {
        return Err(refuse(
            ErrorKind::Unauthenticated,
            "stale_timestamp",
            "webhook-timestamp is more than 5 minutes from the gateway's clock",
        ));
    }
    let key_text = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_text)
        .map_err(|_| {
            refuse(
                ErrorKind::Unavailable,
                "secret_unavailable",
                "the source's secret is not valid base64",
            )
        })?;
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| {
        refuse(
            ErrorKind::Unavailable,
            "secret_unavailable",
            "the source's secret is empty",
        )
    })?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let valid = signatures.split(' ').any(|candidate| {
        let Some(("v1", sig)) = candidate.split_once(',') else {
            return false;
        };
        base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map(|given| {
                subtle::ConstantTimeEq::ct_eq(given.as_slice(), expected.as_slice()).into()
            })
            .unwrap_or(false)
    });
    if valid {
        Ok(id)
    } else {
        Err(refuse(
            ErrorKind::Unauthenticated,
            "bad_signature",
            "no webhook-signature matches",
        ))
    }
}

/// Verifies a GitHub delivery; returns its `X-GitHub-Delivery` id.
fn verify_github(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal> {
    let signature = header(headers, "x-hub-signature-256").ok_or_else(|| {
        refuse(
            ErrorKind::Unauthenticated,
            "missing_headers",
            "missing X-Hub-Signature-256 header",
        )
    })?;
    let given = signature
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .ok_or_else(|| {
            refuse(
                ErrorKind::Unauthenticated,
                "bad_signature",
                "X-Hub-Signature-256 is not sha256=<hex>",
            )
        })?;
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| {
        refuse(
            ErrorKind::Unavailable,
            "secret_unavailable",
            "the source's secret is empty",
        )
    })?;
    mac.update(body);
    if mac.verify_slice(&given).is_err() {
        return Err(refuse(
            ErrorKind::Unauthenticated,
            "bad_signature",
            "X-Hub-Signature-256 does not match",
        ));
    }
    delivery_id_of(header(headers, "x-github-delivery"), "X-GitHub-Delivery")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Publishes `events.security.webhook_refused` (the security events' shape).
async fn record_refusal(
    nats: &async_nats::Client,
    source: &str,
    reason: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
) {
    let webhook_id = header(headers, "webhook-id")
        .or_else(|| header(headers, "x-github-delivery"))
        .map(|id| id.chars().take(MAX_ID_LEN).collect::<String>());
    let source: String = source.chars().take(64).collect();
    let event = json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "event_type": "webhook_refused",
        "principal": null,
        "tenant": null,
        "key_id": null,
        "details": {"source": source, "reason": reason, "webhook_id": webhook_id, "remote": peer.ip().to_string()},
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    // Into YMERA_EVENTS with the JetStream ack awaited (bounded), so the
    // security service's consumer stores it in `security_events`; the
    // event id is the Nats-Msg-Id, so a resend is a no-op.
    let id = event["id"].as_str().unwrap_or_default().to_owned();
    let mut msg_headers = async_nats::HeaderMap::new();
    msg_headers.insert("Nats-Msg-Id", id.as_str());
    let js = jetstream::new(nats.clone());
    let published = tokio::time::timeout(REFUSAL_PUBLISH_TIMEOUT, async {
        js.publish_with_headers(REFUSAL_SUBJECT, msg_headers, Bytes::from(event.to_string()))
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    match published {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "storing a webhook refusal failed"),
        Err(_) => tracing::warn!("storing a webhook refusal timed out"),
    }
    metrics::counter!("ymera_gateway_webhook_refusals_total", "reason" => reason.to_owned())
        .increment(1);
}

/// Shared handle.
pub type SharedWebhooks = Arc<Webhooks>;

#[cfg(test)]
mod tests {
    use super::*;

    fn standard_headers(id: &str, ts: u64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn standard_webhooks_spec_example_verifies() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let headers = standard_headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        );
        assert_eq!(
            verify_standard(secret, &headers, body, 1614265330).ok(),
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned())
        );
        assert_eq!(
            verify_standard(secret, &headers, body, 1614265330 + 301)
                .err()
                .map(|r| r.reason),
            Some("stale_timestamp")
        );
        assert_eq!(
            verify_standard(secret, &headers, b"{}", 1614265330)
                .err()
                .map(|r| r.reason),
            Some("bad_signature")
        );
    }

    #[test]
    fn envelope_ids_are_stable_and_v7_shaped() {
        let a = envelope_id("github", "d-1");
        assert_eq!(a, envelope_id("github", "d-1"));
        assert_ne!(a, envelope_id("github", "d-2"));
        assert_eq!(a.get_version_num(), 7);
    }
}
