//! NATS login with Ymera credentials: the security service as the server's auth callout
//! (NATS ADR-26).
//!
//! nats-server (configured with `authorization { auth_callout { … } }`, see
//! `deploy/nats-callout.conf`) sends every connecting client that is not one of its
//! `auth_users` to `$SYS.REQ.USER.AUTH` as an authorization request JWT signed by the
//! server. [`answer`] verifies it, takes the Ymera API key or bearer token the client passed
//! as its NATS token (or password, with any user name), checks it like every other
//! credential ([`SecurityState::authenticate`]: revoked, expired and unknown credentials
//! are refused and recorded), and answers with an authorization response JWT carrying a
//! user JWT — both signed with the callout issuer's account nkey — whose permissions follow
//! from the key's permissions ([`permissions::nats_permissions`]) and which expires with
//! the credential. A refusal is a response with `error` set, so the server refuses the
//! connection at once.
//!
//! Invariants: the credential in a request is never logged or published; a request that
//! does not verify gets no answer (the server refuses the client when its auth timeout
//! runs out, as it does when no security replica is running); a user JWT is only ever
//! issued for the `user_nkey` and server of the request it answers.

pub mod nats_jwt;
pub mod permissions;

use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use nkeys::KeyPair;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use ymera_core::config::NatsSettings;
use ymera_core::env::Env;

use crate::SecurityError;
use crate::service::credential_of;
use crate::state::{MAX_CREDENTIAL_LEN, SecurityState};

/// The subject nats-server sends authorization requests to.
pub const SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// Queue group of the security replicas on [`SUBJECT`].
pub const QUEUE_GROUP: &str = "security-auth-callout";
/// The audience of the server's authorization requests.
pub const REQUEST_AUDIENCE: &str = "nats-authorization-request";
/// Longest lifetime of an issued user JWT; the server closes the connection when it ends
/// and the client logs in again with its credential (checked afresh).
pub const MAX_USER_JWT_SECONDS: i64 = 24 * 3600;
/// Lifetime of an authorization response.
const RESPONSE_SECONDS: i64 = 60;
/// Authorization requests answered at once per replica (more wait in the subscription).
pub const MAX_IN_FLIGHT: usize = 64;

/// Settings of the auth callout (`YMERA_NATS_CALLOUT_*`).
#[derive(Clone)]
pub struct CalloutSettings {
    /// `YMERA_NATS_CALLOUT_ISSUER_SEED` (or `_FILE`): the account nkey seed (`SA…`) whose
    /// public key is the server's `auth_callout.issuer`.
    pub issuer: Arc<KeyPair>,
    /// `YMERA_NATS_CALLOUT_ACCOUNT`: the account logged-in agents are placed in (default
    /// `YMERA`, where the services' endpoints are).
    pub account: String,
    /// `YMERA_NATS_CALLOUT_USER` / `YMERA_NATS_CALLOUT_PASSWORD`: a separate NATS login for
    /// the callout subscription (the server's `auth_callout.auth_users` member in the
    /// callout account). Unset: the service's own connection subscribes.
    pub user_password: Option<(String, String)>,
}

impl std::fmt::Debug for CalloutSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalloutSettings")
            .field("issuer", &self.issuer.public_key())
            .field("account", &self.account)
            .field("user", &self.user_password.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl CalloutSettings {
    /// Reads the settings; `None` when `YMERA_NATS_CALLOUT_ISSUER_SEED` is unset.
    pub fn read(env: &Env<'_>) -> Result<Option<Self>, SecurityError> {
        let Some(seed) = env.secret("YMERA_NATS_CALLOUT_ISSUER_SEED")? else {
            return Ok(None);
        };
        let issuer = KeyPair::from_seed(seed.trim())
            .ok()
            .filter(|k| k.public_key().starts_with('A'))
            .ok_or(SecurityError::Config {
                variable: "YMERA_NATS_CALLOUT_ISSUER_SEED",
                reason:
                    "must be an account nkey seed (SA…, e.g. from `nsc generate nkey --account`)"
                        .into(),
            })?;
        let account = env
            .get("YMERA_NATS_CALLOUT_ACCOUNT")
            .unwrap_or_else(|| "YMERA".into());
        if account.len() > 128
            || account
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'.')
        {
            return Err(SecurityError::Config {
                variable: "YMERA_NATS_CALLOUT_ACCOUNT",
                reason: "must be a NATS account name".into(),
            });
        }
        let user_password = match (
            env.get("YMERA_NATS_CALLOUT_USER"),
            env.secret("YMERA_NATS_CALLOUT_PASSWORD")?,
        ) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(SecurityError::Config {
                    variable: "YMERA_NATS_CALLOUT_PASSWORD",
                    reason: "required when YMERA_NATS_CALLOUT_USER is set".into(),
                });
            }
            (None, Some(_)) => {
                return Err(SecurityError::Config {
                    variable: "YMERA_NATS_CALLOUT_USER",
                    reason: "required when YMERA_NATS_CALLOUT_PASSWORD is set".into(),
                });
            }
        };
        Ok(Some(CalloutSettings {
            issuer: Arc::new(issuer),
            account,
            user_password,
        }))
    }
}

/// The parts of the server's authorization request the callout reads.
#[derive(Debug, Deserialize)]
struct RequestClaims {
    aud: Option<String>,
    exp: Option<i64>,
    nats: AuthorizationRequest,
}

#[derive(Debug, Deserialize)]
struct AuthorizationRequest {
    server_id: ServerId,
    user_nkey: String,
    #[serde(default)]
    connect_opts: ConnectOptions,
    #[serde(default, rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct ServerId {
    id: String,
}

#[derive(Default, Deserialize)]
struct ConnectOptions {
    #[serde(default)]
    auth_token: Option<String>,
    #[serde(default)]
    pass: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectOptions(<redacted>)")
    }
}

/// What became of one authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A user JWT was issued for agent `name`.
    Allowed {
        /// The agent (the credential's owner).
        name: String,
    },
    /// Refused with this reason (sent to the server as the response's `error`).
    Refused(String),
}

/// Answers one authorization request: `Some((response JWT, outcome))`, or `None` when the
/// request itself does not verify (no answer is sent).
pub async fn answer(
    state: &SecurityState,
    settings: &CalloutSettings,
    request: &[u8],
) -> Option<(String, Outcome)> {
    let token = std::str::from_utf8(request).ok()?.trim();
    let (_server_key, claims): (String, RequestClaims) =
        match nats_jwt::decode_verified(token, 'N', "server") {
            Ok(decoded) => decoded,
            Err(err) => {
                tracing::warn!(error = %err, "auth callout: authorization request refused");
                return None;
            }
        };
    let now = Utc::now().timestamp();
    if claims.aud.as_deref() != Some(REQUEST_AUDIENCE)
        || claims.nats.kind != "authorization_request"
        || claims.exp.is_some_and(|exp| exp + 5 < now)
        || !claims.nats.user_nkey.starts_with('U')
    {
        tracing::warn!("auth callout: not a current authorization request");
        return None;
    }
    let outcome = decide(state, settings, &claims, now).await;
    let (user_jwt, error) = match outcome {
        Ok((jwt, name)) => (Some(jwt), Ok(name)),
        Err(reason) => (None, Err(reason)),
    };
    let mut nats = json!({"type": "authorization_response", "version": 2});
    match (&user_jwt, &error) {
        (Some(jwt), _) => nats["jwt"] = jwt.clone().into(),
        (None, Err(reason)) => nats["error"] = reason.clone().into(),
        (None, Ok(_)) => return None,
    }
    let response = json!({
        "sub": claims.nats.user_nkey,
        "aud": claims.nats.server_id.id,
        "exp": now + RESPONSE_SECONDS,
        "nats": nats,
    });
    let encoded = nats_jwt::encode(&settings.issuer, response, now).ok()?;
    Some((
        encoded,
        match error {
            Ok(name) => Outcome::Allowed { name },
            Err(reason) => Outcome::Refused(reason),
        },
    ))
}

/// The user JWT and agent name for the request's credential, or the refusal's reason.
async fn decide(
    state: &SecurityState,
    settings: &CalloutSettings,
    claims: &RequestClaims,
    now: i64,
) -> Result<(String, String), String> {
    let opts = &claims.nats.connect_opts;
    let presented = opts
        .auth_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .or(opts.pass.as_deref().filter(|p| !p.is_empty()))
        .ok_or("no Ymera credential: pass the API key or token as the NATS token or password")?;
    if presented.len() > MAX_CREDENTIAL_LEN {
        state.deny_too_long().await;
        return Err("credential_too_long".into());
    }
    let principal = match state.authenticate(&credential_of(presented)).await {
        Ok(Ok(principal)) => principal,
        Ok(Err(denial)) => return Err(denial.reason.into()),
        Err(err) => {
            tracing::warn!(error = %err, "auth callout: cannot check the credential");
            return Err("security service unavailable".into());
        }
    };
    let name = principal.owner.clone();
    if ymera_core::envelope::validate_agent_name(&name).is_err() {
        return Err(
            "the credential's owner is not an agent name ([a-z0-9][a-z0-9_-]{0,63})".into(),
        );
    }
    let expires = principal
        .expires_at
        .timestamp()
        .min(now + MAX_USER_JWT_SECONDS);
    let mut user = permissions::nats_permissions(&name, &principal.permissions);
    if let Some(map) = user.as_object_mut() {
        map.insert("subs".into(), (-1).into());
        map.insert("data".into(), (-1).into());
        map.insert("payload".into(), (-1).into());
        map.insert("type".into(), "user".into());
        map.insert("version".into(), 2.into());
    }
    let user_claims = json!({
        "sub": claims.nats.user_nkey,
        "name": name,
        "aud": settings.account,
        "exp": expires,
        "nats": user,
    });
    let jwt = nats_jwt::encode(&settings.issuer, user_claims, now)
        .map_err(|_| "cannot sign the user JWT".to_owned())?;
    tracing::info!(agent = %name, key_id = %principal.key_id, "NATS login accepted");
    Ok((jwt, name))
}

/// Connects the callout's own NATS login when one is configured, else uses `client`.
pub async fn connection(
    client: &async_nats::Client,
    nats: &NatsSettings,
    settings: &CalloutSettings,
) -> Result<async_nats::Client, SecurityError> {
    let Some((user, password)) = &settings.user_password else {
        return Ok(client.clone());
    };
    let mut login = nats.clone();
    login.creds = None;
    login.token = None;
    login.user_password = Some((user.clone(), password.clone()));
    ymera_core::client::connect_nats(&login, "security-auth-callout")
        .await
        .map_err(|err| SecurityError::Config {
            variable: "YMERA_NATS_CALLOUT_USER",
            reason: err.to_string(),
        })
}

/// Answers authorization requests on `client` until `shutdown`.
pub async fn serve(
    client: async_nats::Client,
    state: Arc<SecurityState>,
    settings: CalloutSettings,
    shutdown: CancellationToken,
) -> Result<(), SecurityError> {
    let mut requests = client
        .queue_subscribe(SUBJECT, QUEUE_GROUP.into())
        .await
        .map_err(|err| SecurityError::Config {
            variable: "YMERA_NATS_CALLOUT_ISSUER_SEED",
            reason: format!("cannot subscribe to {SUBJECT}: {err}"),
        })?;
    tracing::info!(issuer = %settings.issuer.public_key(), account = %settings.account, "answering NATS authorization requests");
    let settings = Arc::new(settings);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        if message
            .headers
            .as_ref()
            .is_some_and(|h| h.get("Nats-Server-Xkey").is_some())
        {
            tracing::warn!(
                "auth callout: encrypted requests (xkey) are not supported; remove `xkey` from auth_callout"
            );
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (client, state, settings) = (client.clone(), state.clone(), settings.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some((response, outcome)) = answer(&state, &settings, &message.payload).await {
                if let Outcome::Refused(reason) = &outcome {
                    tracing::info!(%reason, "NATS login refused");
                }
                if let Err(err) = client.publish(reply, response.into()).await {
                    tracing::warn!(error = %err, "auth callout: cannot answer");
                }
            }
        });
    }
    let _ = requests.unsubscribe().await;
    Ok(())
}
