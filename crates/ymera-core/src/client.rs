//! Connecting to NATS, and calling Ymera endpoints with typed errors.

pub mod failover;

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::NatsSettings;
use crate::error::{Error, ErrorKind};
use crate::telemetry;

/// Default time a request waits for its reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors connecting to NATS.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A credentials file could not be read.
    #[error("NATS_CREDS: cannot read credentials: {0}")]
    Credentials(#[source] std::io::Error),
    /// The connection could not be set up.
    #[error("NATS_URL: cannot connect to NATS: {0}")]
    Connect(#[source] async_nats::ConnectError),
}

/// Connects with the platform's options: a connection name, credentials and
/// TLS from `settings`, retry on the initial connect and reconnect forever.
///
/// Every connection gets a [`failover`] watcher: when its server is cut off from its
/// cluster's majority (a partition between the servers), the connection moves to a server
/// that reaches one.
pub async fn connect_nats(
    settings: &NatsSettings,
    connection_name: &str,
) -> Result<Client, ConnectError> {
    let next = Arc::new(failover::NextServer::default());
    let chosen = Arc::clone(&next);
    let mut options = ConnectOptions::new()
        .reconnect_to_server_callback(move |pool, _info| {
            let target = chosen.take(&pool);
            async move { target }
        })
        .name(connection_name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS, reconnecting")
                }
                other => tracing::info!(event = %other, "NATS event"),
            }
        });
    if let Some(path) = &settings.creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(ConnectError::Credentials)?;
    }
    if let Some((user, password)) = &settings.user_password {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &settings.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &settings.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &settings.cert_key {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let urls: Vec<&str> = settings.url.split(',').map(str::trim).collect();
    let configured = failover::configured_servers(&urls);
    let client = options.connect(urls).await.map_err(ConnectError::Connect)?;
    failover::spawn(&client, next, configured);
    Ok(client)
}

/// Reconnect backoff: 0 for the first try, then doubling from 50 ms to 2 s.
fn reconnect_delay(attempt: usize) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(6);
    Duration::from_millis(50 * 2u64.pow(exp)).min(Duration::from_secs(2))
}

/// A credential sent with requests. Its `Debug` form never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <jwt>`.
    Bearer(String),
    /// `X-API-Key: <key>`.
    ApiKey(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
        }
    }
}

impl Credential {
    /// Adds the credential header.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            Credential::Bearer(token) => {
                headers.insert("Authorization", format!("Bearer {token}").as_str())
            }
            Credential::ApiKey(key) => headers.insert("X-API-Key", key.as_str()),
        }
    }
}

/// Calls endpoints: JSON in, JSON out, error replies as [`Error`].
#[derive(Debug, Clone)]
pub struct ServiceClient {
    client: Client,
    timeout: Duration,
    credential: Option<Credential>,
}

impl ServiceClient {
    /// A client with the default timeout and no credential.
    pub fn new(client: Client) -> Self {
        ServiceClient {
            client,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            credential: None,
        }
    }

    /// Sets the reply timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `credential` with every request.
    pub fn with_credential(mut self, credential: Option<Credential>) -> Self {
        self.credential = credential;
        self
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &Client {
        &self.client
    }

    /// Sends `body` as JSON to `subject` and decodes the JSON reply.
    pub async fn request<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        subject: &str,
        body: &T,
    ) -> Result<R, Error> {
        let payload = serde_json::to_vec(body)
            .map_err(|e| Error::invalid_request(format!("cannot encode request: {e}")))?;
        let reply = self.request_bytes(subject, Bytes::from(payload)).await?;
        serde_json::from_slice(&reply).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("{subject} answered with unexpected JSON: {e}"),
            )
        })
    }

    /// Sends raw bytes and returns the raw reply (errors decoded).
    pub async fn request_bytes(&self, subject: &str, payload: Bytes) -> Result<Bytes, Error> {
        let mut headers = HeaderMap::new();
        if let Some(credential) = &self.credential {
            credential.apply(&mut headers);
        }
        telemetry::inject_current_context(&mut headers);
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(self.timeout));
        // No header block at all when there is nothing to say (a plain PUB).
        if !headers.is_empty() {
            request = request.headers(headers);
        }
        let message = self
            .client
            .send_request(subject.to_owned(), request)
            .await
            .map_err(|e| transport_error(subject, e))?;
        Error::from_reply(message.headers.as_ref(), &message.payload)
    }
}

/// Maps a NATS request failure to the platform error.
pub fn transport_error(subject: &str, err: async_nats::RequestError) -> Error {
    use async_nats::RequestErrorKind;
    match err.kind() {
        RequestErrorKind::NoResponders => Error::new(
            ErrorKind::Unavailable,
            format!("no service answers on {subject}"),
        )
        .with_detail("reason", "no_responders"),
        RequestErrorKind::TimedOut => Error::new(
            ErrorKind::Unavailable,
            format!("{subject} did not answer in time"),
        )
        .with_detail("reason", "timeout"),
        RequestErrorKind::InvalidSubject => {
            Error::invalid_request(format!("invalid subject {subject:?}"))
        }
        RequestErrorKind::MaxPayloadExceeded => Error::new(
            ErrorKind::PayloadTooLarge,
            format!("request to {subject} exceeds the NATS server's max_payload"),
        ),
        _ => Error::dependency_down("nats"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_and_cap() {
        let delays: Vec<u128> = (1..12).map(|a| reconnect_delay(a).as_millis()).collect();
        assert_eq!(
            delays,
            [0, 50, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000]
        );
    }
}
