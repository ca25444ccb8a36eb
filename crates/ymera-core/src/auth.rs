//! The auth client every service uses when `YMERA_AUTH=required`; the
//! runtime calls it for every endpoint whose [`Call`](crate::runtime::Call)
//! names a permission (see [`ServiceBuilder::route`](crate::runtime::ServiceBuilder::route))
//! before the body is parsed.
//!
//! - **`X-API-Key`**: asked of the security service (`security.authorize`).
//!   Grants are cached for [`GRANT_TTL`] per credential and permission (at
//!   most 10,000 entries), so a revocation is visible within that time;
//!   refusals are never cached.
//! - **`Authorization: Bearer`**: verified here, without a round trip,
//!   against the public keys of `security.jwks` ([`crate::jwt`], the same
//!   checks as the security service). The key set is fetched at start
//!   (retried from 1 s, doubling up to [`REFRESH_EVERY`], until it is in),
//!   every [`REFRESH_EVERY`], and again when a token names an unknown `kid`
//!   (at most once per [`JWKS_REFETCH_MIN`]; an unknown `kid` within that
//!   window is asked of the security service, so a just-rotated key is never
//!   refused).
//! - **Revocation of tokens**: a deny-list of revoked token ids and revoked
//!   API keys (whose tokens stop with them), loaded from
//!   `security.tokens.revoked` at start and every [`REFRESH_EVERY`], and
//!   kept current between loads by `events.security.token_revoked` and
//!   `events.security.key_revoked`. Pending events are applied before every
//!   token check, so a request sent after a revocation call has answered is
//!   refused (the security service publishes the event before it answers,
//!   and one NATS connection delivers in order). An event lost to a
//!   reconnect is caught up by the next load. Until a complete list has been
//!   loaded (or when it would exceed [`MAX_DENIED`] entries) tokens are
//!   asked of the security service instead.
//! - A verified token's claims are reused for [`VERIFIED_TTL`] (at most
//!   10,000 tokens): its signature cannot change, and expiry, the deny-list
//!   and the permission are checked again on every request.
//! - A token refused here is reported to `security.authorize` in the
//!   background (at most [`MAX_REPORTS_IN_FLIGHT`] at once), so the security
//!   service records the same event it would have recorded itself.
//! - An unreachable security service is 503 `dependency_down` for API keys
//!   and for tokens that cannot be decided locally.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::client::{Credential, ServiceClient};
use crate::config::AuthMode;
use crate::error::{Error, ErrorKind};
use crate::jwt::{self, Claims, JwksVerifier, TokenRejection};
use crate::runtime::ServiceRequest;

/// How long an API key grant is reused.
pub const GRANT_TTL: Duration = Duration::from_secs(10);
/// Shortest time between two JWKS fetches caused by unknown `kid`s.
pub const JWKS_REFETCH_MIN: Duration = Duration::from_secs(5);
/// How often the JWKS and the revocation list are loaded again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Most deny-list entries (token ids plus key ids) held; beyond, tokens are
/// asked of the security service.
pub const MAX_DENIED: usize = 100_000;
/// How long a token's verified signature and claims are reused (expiry,
/// the deny-list and the permission are still checked on every request).
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// Most tokens whose verification is remembered.
const MAX_VERIFIED: usize = 10_000;
/// Most background refusal reports in flight (more are dropped).
pub const MAX_REPORTS_IN_FLIGHT: usize = 16;
/// The subject answering the deny-list.
pub const REVOKED_SUBJECT: &str = "security.tokens.revoked";
/// The subjects of the revocation events followed.
pub const REVOCATION_EVENTS: [&str; 2] = [
    "events.security.token_revoked",
    "events.security.key_revoked",
];
const MAX_GRANTS: usize = 10_000;
/// How often pending revocation events are applied when no request comes.
const DRAIN_EVERY: Duration = Duration::from_millis(250);
/// Most events applied by one drain.
const MAX_DRAIN: usize = 10_000;

/// Who a request was made by, once its credential has been checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// `api_key` or `token`.
    #[serde(default)]
    pub kind: String,
    /// The key's owner (a token's `sub`).
    pub owner: String,
    /// The key's tenant.
    #[serde(default)]
    pub tenant: String,
    /// The public key id (for a token, the key it was issued from).
    #[serde(default)]
    pub key_id: String,
    /// Every permission the credential holds.
    #[serde(default)]
    pub permissions: Vec<String>,
}

impl Principal {
    /// Whether the credential holds `permission`.
    pub fn has(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// The principal of a verified token's claims.
    pub fn of_token(claims: Claims) -> Principal {
        Principal {
            kind: "token".into(),
            owner: claims.sub,
            tenant: claims.tenant,
            key_id: claims.key_id,
            permissions: claims.permissions,
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    allowed: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    principal: Option<Principal>,
}

/// (credential, permission).
type GrantKey = (String, &'static str);

/// A bounded map whose entries are reused for a fixed time (API key
/// grants, verified tokens). When full, expired entries are dropped, and if
/// none had expired, all of them.
struct Expiring<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    ttl: Duration,
    max: usize,
}

impl<K: Eq + std::hash::Hash, V: Clone> Expiring<K, V> {
    fn new(ttl: Duration, max: usize) -> Self {
        Expiring {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, value)| value.clone())
    }

    fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if entries.len() >= self.max {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, value));
    }
}

/// Checks callers' permissions: API keys with the security service, bearer
/// tokens locally.
pub struct Authorizer {
    mode: AuthMode,
    client: ServiceClient,
    grants: Expiring<GrantKey, Arc<Principal>>,
    local: Option<Arc<LocalTokens>>,
    reports: Arc<Semaphore>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer asking over `nats`. With auth required it starts (on
    /// the current Tokio runtime) the task that follows the JWKS and the
    /// deny-list; the task ends when the authorizer is dropped.
    pub fn new(mode: AuthMode, nats: async_nats::Client) -> Self {
        let client = ServiceClient::new(nats).with_timeout(Duration::from_secs(5));
        let local = (mode == AuthMode::Required).then(|| {
            let local = Arc::new(LocalTokens::new());
            tokio::spawn(follow(Arc::downgrade(&local), client.clone()));
            local
        });
        Authorizer {
            mode,
            client,
            grants: Expiring::new(GRANT_TTL, MAX_GRANTS),
            local,
            reports: Arc::new(Semaphore::new(MAX_REPORTS_IN_FLIGHT)),
        }
    }

    /// Whether credentials are checked at all.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Ok(None) when auth is off; Ok(Some(principal)) when the caller's
    /// credential holds `permission`; 401/403/503 otherwise.
    pub async fn check(
        &self,
        req: &ServiceRequest,
        permission: &'static str,
    ) -> Result<Option<Arc<Principal>>, Error> {
        if self.mode == AuthMode::Off {
            return Ok(None);
        }
        let credential = match req.credential()? {
            Some(Credential::Bearer(token)) => {
                if let Some(verdict) = self.check_token_locally(&token, permission).await {
                    return verdict.map(Some);
                }
                format!("Bearer {token}")
            }
            Some(Credential::ApiKey(key)) => key,
            None => {
                return Err(Error::unauthenticated(
                    "a credential is required (Authorization: Bearer or X-API-Key)",
                ));
            }
        };
        self.check_remotely(credential, permission).await.map(Some)
    }

    /// The local verdict on a bearer token, or `None` when it must be asked
    /// of the security service (keys or deny-list not loaded, an unknown
    /// `kid` just after a fetch).
    async fn check_token_locally(
        &self,
        token: &str,
        permission: &'static str,
    ) -> Option<Result<Arc<Principal>, Error>> {
        let local = self.local.as_ref()?;
        local.drain_events();
        if !local.deny_list_usable() {
            metrics::counter!("ymera_auth_token_checks_total", "path" => "remote").increment(1);
            return None;
        }
        let verdict = match local.verified.get(token) {
            Some(claims) if claims.expired() => Err(TokenRejection::Expired),
            Some(claims) => Ok(claims),
            None => {
                let mut verdict = match local.verifier() {
                    Some(verifier) => verifier.verify(token),
                    None => Err(TokenRejection::UnknownKey),
                };
                if verdict == Err(TokenRejection::UnknownKey) {
                    if !local.refetch_jwks(&self.client).await {
                        metrics::counter!("ymera_auth_token_checks_total", "path" => "remote")
                            .increment(1);
                        return None;
                    }
                    verdict = local.verifier()?.verify(token);
                }
                verdict.map(|claims| {
                    let claims = Arc::new(claims);
                    local.verified.insert(token.to_owned(), claims.clone());
                    claims
                })
            }
        };
        metrics::counter!("ymera_auth_token_checks_total", "path" => "local").increment(1);
        let refusal = match verdict {
            Ok(claims) => match local.revocation(&claims) {
                Some(rejection) => Err(rejection),
                None if claims.permissions.iter().any(|p| p == permission) => {
                    return Some(Ok(Arc::new(Principal::of_token((*claims).clone()))));
                }
                None => Ok(()),
            },
            Err(rejection) => Err(rejection),
        };
        self.report(format!("Bearer {token}"), permission);
        Some(Err(match refusal {
            Err(rejection) => refused(permission, rejection.as_str()),
            Ok(()) => refused(permission, "insufficient_permissions"),
        }))
    }

    /// Has the security service record a refusal decided here (its answer
    /// is not waited for).
    fn report(&self, credential: String, permission: &'static str) {
        let Ok(permit) = self.reports.clone().try_acquire_owned() else {
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            let body = json!({"credential": credential, "permission": permission});
            let _: Result<serde_json::Value, Error> =
                client.request("security.authorize", &body).await;
            drop(permit);
        });
    }

    async fn check_remotely(
        &self,
        credential: String,
        permission: &'static str,
    ) -> Result<Arc<Principal>, Error> {
        let key = (credential, permission);
        if let Some(principal) = self.grants.get(&key) {
            return Ok(principal);
        }
        let answer: Answer = self
            .client
            .request(
                "security.authorize",
                &json!({"credential": key.0, "permission": permission}),
            )
            .await
            .map_err(|e| match e.kind {
                ErrorKind::Internal | ErrorKind::Unavailable => Error::dependency_down("security"),
                _ => e,
            })?;
        if !answer.allowed {
            return Err(refused(permission, &answer.reason));
        }
        let principal = Arc::new(answer.principal.ok_or_else(|| {
            Error::internal("security.authorize allowed a credential without a principal")
        })?);
        self.grants.insert(key, principal.clone());
        Ok(principal)
    }
}

/// The refusal for `reason` (the security service's slug, also in
/// `details.reason`): 403 for a valid credential without the permission,
/// 401 otherwise.
fn refused(permission: &str, reason: &str) -> Error {
    match reason {
        "insufficient_permissions" | "tenant_mismatch" => {
            Error::forbidden(format!("{permission} denied: {reason}")).with_detail("reason", reason)
        }
        _ => credential_refused(reason),
    }
}

/// The 401 for a credential refused for `reason` (the security service's
/// slug, also in `details.reason`), worded alike by every service.
pub fn credential_refused(reason: &str) -> Error {
    Error::unauthenticated(format!("credential refused: {reason}")).with_detail("reason", reason)
}

/// Revoked token ids and API keys, each until its tokens have expired.
#[derive(Debug, Default)]
struct DenyList {
    /// A complete list has been loaded.
    loaded: bool,
    /// jti → until (Unix seconds).
    tokens: HashMap<String, i64>,
    /// key id → until (Unix seconds).
    keys: HashMap<String, i64>,
}

impl DenyList {
    fn len(&self) -> usize {
        self.tokens.len() + self.keys.len()
    }

    fn prune(&mut self, now: i64) {
        self.tokens.retain(|_, until| *until > now);
        self.keys.retain(|_, until| *until > now);
    }
}

/// What bearer tokens are checked against locally.
struct LocalTokens {
    verifier: RwLock<Option<Arc<JwksVerifier>>>,
    /// When the JWKS was last asked for (whatever the outcome).
    fetched_at: Mutex<Option<Instant>>,
    /// One JWKS fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    deny: RwLock<DenyList>,
    events: Mutex<Vec<async_nats::Subscriber>>,
    /// token → its verified claims, for [`VERIFIED_TTL`].
    verified: Expiring<String, Arc<Claims>>,
}

/// `security.tokens.revoked` answer.
#[derive(Deserialize)]
struct RevokedList {
    tokens: Vec<Revoked>,
    keys: Vec<RevokedKey>,
    complete: bool,
}

#[derive(Deserialize)]
struct Revoked {
    jti: String,
    until: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize)]
struct RevokedKey {
    key_id: String,
    until: chrono::DateTime<chrono::Utc>,
}

/// The parts of a revocation event used here.
#[derive(Deserialize)]
struct RevocationEvent {
    event_type: String,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    details: serde_json::Value,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// How long a revocation learned from an event is kept: past the expiry of
/// any token it can concern.
fn event_until() -> i64 {
    unix_now() + jwt::MAX_TTL_SECONDS + 2 * jwt::LEEWAY_SECONDS as i64
}

impl LocalTokens {
    fn verifier(&self) -> Option<Arc<JwksVerifier>> {
        self.verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn new() -> Self {
        LocalTokens {
            verifier: RwLock::default(),
            fetched_at: Mutex::default(),
            fetching: tokio::sync::Mutex::default(),
            deny: RwLock::default(),
            events: Mutex::default(),
            verified: Expiring::new(VERIFIED_TTL, MAX_VERIFIED),
        }
    }

    fn deny_list_usable(&self) -> bool {
        let deny = self.deny.read().unwrap_or_else(|p| p.into_inner());
        deny.loaded && deny.len() <= MAX_DENIED
    }

    /// Why `claims` are revoked, if they are.
    fn revocation(&self, claims: &Claims) -> Option<TokenRejection> {
        let deny = self.deny.read().unwrap_or_else(|p| p.into_inner());
        if deny.tokens.contains_key(&claims.jti) {
            Some(TokenRejection::Revoked)
        } else if deny.keys.contains_key(&claims.key_id) {
            Some(TokenRejection::KeyRevoked)
        } else {
            None
        }
    }

    /// Fetches the JWKS unless one was fetched less than
    /// [`JWKS_REFETCH_MIN`] ago; whether a fetch was made and succeeded.
    async fn refetch_jwks(&self, client: &ServiceClient) -> bool {
        let _one = self.fetching.lock().await;
        {
            let mut fetched_at = self.fetched_at.lock().unwrap_or_else(|p| p.into_inner());
            if fetched_at.is_some_and(|at| at.elapsed() < JWKS_REFETCH_MIN) {
                return false;
            }
            *fetched_at = Some(Instant::now());
        }
        self.load_jwks(client).await
    }

    async fn load_jwks(&self, client: &ServiceClient) -> bool {
        match client
            .request::<_, serde_json::Value>("security.jwks", &json!({}))
            .await
        {
            Ok(jwks) => match JwksVerifier::from_jwks(&jwks) {
                Some(verifier) => {
                    *self.verifier.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(Arc::new(verifier));
                    true
                }
                None => {
                    tracing::warn!("security.jwks answered no usable key");
                    false
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot fetch security.jwks");
                false
            }
        }
    }

    async fn load_deny_list(&self, client: &ServiceClient) {
        let list: RevokedList = match client.request(REVOKED_SUBJECT, &json!({})).await {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(error = %err, "cannot fetch {REVOKED_SUBJECT}");
                return;
            }
        };
        let mut deny = self.deny.write().unwrap_or_else(|p| p.into_inner());
        // A union: revocations are never undone, and an event that arrived
        // while the list was on its way must not be lost.
        for t in list.tokens {
            let until = deny.tokens.entry(t.jti).or_default();
            *until = (*until).max(t.until.timestamp());
        }
        for k in list.keys {
            let until = deny.keys.entry(k.key_id).or_default();
            *until = (*until).max(k.until.timestamp());
        }
        deny.prune(unix_now());
        deny.loaded = list.complete;
        if !list.complete {
            tracing::warn!(
                "the revocation list is incomplete: bearer tokens are checked by the security service"
            );
        }
    }

    /// Applies every revocation event already received.
    fn drain_events(&self) {
        let mut subscribers = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut applied = Vec::new();
        for subscriber in subscribers.iter_mut() {
            while applied.len() < MAX_DRAIN {
                match subscriber.next().now_or_never() {
                    Some(Some(message)) => applied.push(message),
                    _ => break,
                }
            }
        }
        drop(subscribers);
        if applied.is_empty() {
            return;
        }
        let mut deny = self.deny.write().unwrap_or_else(|p| p.into_inner());
        for message in applied {
            let Ok(event) = serde_json::from_slice::<RevocationEvent>(&message.payload) else {
                continue;
            };
            match event.event_type.as_str() {
                "token_revoked" => {
                    if let Some(jti) = event.details.get("jti").and_then(|j| j.as_str()) {
                        deny.tokens.insert(jti.to_owned(), event_until());
                    }
                }
                "key_revoked" => {
                    if let Some(key_id) = event.key_id {
                        deny.keys.insert(key_id, event_until());
                    }
                }
                _ => {}
            }
        }
    }
}

/// Subscribes to the revocation events, then loads the JWKS and the
/// deny-list every [`REFRESH_EVERY`] and applies events in between, until
/// the authorizer is dropped.
async fn follow(weak: Weak<LocalTokens>, client: ServiceClient) {
    for subject in REVOCATION_EVENTS {
        match client.nats().subscribe(subject).await {
            Ok(subscriber) => {
                let Some(local) = weak.upgrade() else { return };
                local
                    .events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(subscriber);
            }
            Err(err) => {
                tracing::warn!(error = %err, subject, "cannot follow revocations");
                return;
            }
        }
    }
    let mut next_load = Instant::now();
    // Until both are in: 1 s, doubling to REFRESH_EVERY (so a security
    // service that is down is neither hammered nor logged every second).
    let mut retry = Duration::from_secs(1);
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(local) = weak.upgrade() else { return };
        local.drain_events();
        if Instant::now() >= next_load {
            // The list first: a token is only checked locally once it is in.
            local.load_deny_list(&client).await;
            *local.fetched_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            local.load_jwks(&client).await;
            let loaded = local.deny_list_usable() && local.verifier().is_some();
            next_load = Instant::now()
                + if loaded {
                    retry = Duration::from_secs(1);
                    REFRESH_EVERY
                } else {
                    let wait = retry;
                    retry = (retry * 2).min(REFRESH_EVERY);
                    wait
                };
        }
    }
}
