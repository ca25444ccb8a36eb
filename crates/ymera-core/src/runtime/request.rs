//! What a handler is given: the request as it arrived ([`ServiceRequest`],
//! seen through [`Call`]), and what the runtime sends back ([`Reply`]).

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::client::Credential;
use crate::error::Error;
use crate::limits::{self, MAX_CREDENTIAL_HEADER};

/// A request as the runtime received it.
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    /// The subject it arrived on.
    pub subject: String,
    /// NATS headers.
    pub headers: Option<HeaderMap>,
    /// The body.
    pub payload: Bytes,
    pub(crate) max_size: usize,
    pub(crate) principal: Option<Arc<Principal>>,
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

    /// Who sent it, when the endpoint declares a permission and auth is
    /// required (`None` with `YMERA_AUTH=off` and on open endpoints).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_deref()
    }

    /// The verified principal, shared.
    pub fn principal_arc(&self) -> Option<Arc<Principal>> {
        self.principal.clone()
    }

    /// The transport's size limit (`MAX_MESSAGE_SIZE`), which also bounds replies.
    pub fn max_size(&self) -> usize {
        self.max_size
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

/// A reply as the runtime sends it: a body and extra headers.
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
