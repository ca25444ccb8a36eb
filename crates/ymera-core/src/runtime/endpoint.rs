//! The one handler shape. An endpoint is an `async fn` whose argument types
//! declare everything the runtime needs:
//!
//! ```ignore
//! async fn get(state: Arc<State>, call: Call<Read>, req: GetRequest) -> Result<GetReply, Error>
//! ```
//!
//! - `Call<P>`: the caller; `P` is the endpoint's [`Permission`] ([`Open`],
//!   or a type made with [`permission!`](crate::permission)). The runtime
//!   checks it before the body is parsed and hands over the verified
//!   principal ([`Call::principal`]).
//! - the request: any `DeserializeOwned` type is parsed strictly from the
//!   JSON body (400 malformed, then the handler's 422s); [`OrEmpty<T>`]
//!   reads an empty body as `{}`; [`Raw`] is the body untouched.
//! - the reply: any `Serialize` type becomes the JSON body; [`Raw`] is sent
//!   as is. A reply over `MAX_MESSAGE_SIZE` is refused with 413 rather than
//!   left for NATS to drop.
//!
//! [`ServiceBuilder::route`](super::ServiceBuilder::route) registers it; the
//! registry of every service's endpoints ([`EndpointInfo`]) is enumerable at
//! run time, which is what routes and API documents are generated from.

use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::request::{Reply, ServiceRequest};
use crate::error::Error;

/// What an endpoint needs from its caller, as a type: [`Open`] or a
/// permission declared with [`permission!`](crate::permission).
pub trait Permission: Send + Sync + 'static {
    /// The permission name (`area:action`), `None` for open endpoints.
    const NAME: Option<&'static str>;
}

/// An endpoint anyone may call: health-like endpoints, and those that check
/// credentials against their own state (the security service's).
#[derive(Debug, Clone, Copy)]
pub struct Open;

impl Permission for Open {
    const NAME: Option<&'static str> = None;
}

/// Declares a permission type for [`Call`]:
///
/// ```
/// ymera_core::permission!(
///     /// Reading drafts.
///     pub Read = "drafting:read"
/// );
/// assert_eq!(Read::PERMISSION, "drafting:read");
/// ```
#[macro_export]
macro_rules! permission {
    ($(#[$meta:meta])* $vis:vis $name:ident = $permission:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;
        impl $name {
            /// The permission's name.
            pub const PERMISSION: &'static str = $permission;
        }
        impl $crate::runtime::Permission for $name {
            const NAME: Option<&'static str> = Some($permission);
        }
    };
}

/// The caller of an endpoint that needs `P`: the request's subject, headers
/// and verified principal (it derefs to the [`ServiceRequest`]).
#[derive(Debug, Clone)]
pub struct Call<P: Permission = Open> {
    request: ServiceRequest,
    _permission: PhantomData<fn() -> P>,
}

impl<P: Permission> Call<P> {
    /// The call of a request (the runtime has checked `P` already).
    pub fn new(request: ServiceRequest) -> Self {
        Call {
            request,
            _permission: PhantomData,
        }
    }

    /// The verified caller's owner name, when auth is on.
    pub fn owner(&self) -> Option<&str> {
        self.request.principal().map(|p| p.owner.as_str())
    }
}

impl<P: Permission> Deref for Call<P> {
    type Target = ServiceRequest;

    fn deref(&self) -> &ServiceRequest {
        &self.request
    }
}

/// A request body the runtime can parse.
pub trait RequestBody: Sized + Send + 'static {
    /// Parses the request's body.
    fn parse(request: &ServiceRequest) -> Result<Self, Error>;
    /// The name of its schema (for routes and API documents).
    fn schema_name() -> String;
}

impl<T: DeserializeOwned + Send + 'static> RequestBody for T {
    fn parse(request: &ServiceRequest) -> Result<Self, Error> {
        request.json()
    }
    fn schema_name() -> String {
        short_type_name(std::any::type_name::<T>())
    }
}

/// A JSON request where an empty body means `{}` (endpoints whose every
/// field is optional).
#[derive(Debug, Clone, Default)]
pub struct OrEmpty<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> RequestBody for OrEmpty<T> {
    fn parse(request: &ServiceRequest) -> Result<Self, Error> {
        request.json_or_default().map(OrEmpty)
    }
    fn schema_name() -> String {
        short_type_name(std::any::type_name::<T>())
    }
}

/// A body the runtime does not interpret (request or reply).
#[derive(Debug, Clone, Default)]
pub struct Raw(pub Bytes);

impl RequestBody for Raw {
    fn parse(request: &ServiceRequest) -> Result<Self, Error> {
        Ok(Raw(request.payload.clone()))
    }
    fn schema_name() -> String {
        "bytes".to_owned()
    }
}

/// A reply the runtime can serialise.
pub trait ReplyBody: Send + 'static {
    /// The reply as sent.
    fn into_reply(self) -> Result<Reply, Error>;
    /// The name of its schema (for routes and API documents).
    fn schema_name() -> String;
}

impl<T: Serialize + Send + 'static> ReplyBody for T {
    fn into_reply(self) -> Result<Reply, Error> {
        Reply::json(&self)
    }
    fn schema_name() -> String {
        short_type_name(std::any::type_name::<T>())
    }
}

impl ReplyBody for Raw {
    fn into_reply(self) -> Result<Reply, Error> {
        Ok(Reply::bytes(self.0))
    }
    fn schema_name() -> String {
        "bytes".to_owned()
    }
}

/// A JSON reply serialised once and sent to many callers (the health
/// report a probe shares), listed under `T`'s name.
#[derive(Debug, Clone)]
pub struct Serialized<T> {
    body: Bytes,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize> Serialized<T> {
    /// Serialises `value`.
    pub fn new(value: &T) -> Result<Self, Error> {
        Ok(Serialized {
            body: Bytes::from(serde_json::to_vec(value).map_err(Error::internal)?),
            _type: PhantomData,
        })
    }
}

impl<T: 'static> ReplyBody for Serialized<T> {
    fn into_reply(self) -> Result<Reply, Error> {
        Ok(Reply::bytes(self.body))
    }
    fn schema_name() -> String {
        short_type_name(std::any::type_name::<T>())
    }
}

/// One registered endpoint, as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointInfo {
    /// The NATS subject.
    pub subject: String,
    /// The permission it needs (`None`: open).
    pub permission: Option<&'static str>,
    /// The request type's name (`bytes` for a raw body).
    pub request: String,
    /// The reply type's name (`bytes` for a raw body).
    pub reply: String,
}

impl EndpointInfo {
    /// The request's JSON Schema under `proto/schemas/`
    /// (`config.schema.set` → `config/schema.set.request.schema.json`).
    pub fn request_schema(&self) -> Option<String> {
        self.schema_file("request")
    }

    /// The reply's JSON Schema under `proto/schemas/`.
    pub fn reply_schema(&self) -> Option<String> {
        self.schema_file("reply")
    }

    fn schema_file(&self, side: &str) -> Option<String> {
        let (service, rest) = self.subject.split_once('.')?;
        // Every service's health endpoints share one reply schema.
        if rest == "health" || rest.starts_with("health.") {
            return (side == "reply").then(|| "health.schema.json".to_owned());
        }
        Some(format!("{service}/{rest}.{side}.schema.json"))
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send + 'static>>;

/// A handler with its types erased: what the dispatcher calls.
pub(crate) type ErasedHandler = Arc<dyn Fn(ServiceRequest) -> BoxFuture + Send + Sync>;

/// Erases a typed handler: parse, call, serialise, bound the reply.
pub(crate) fn erase<S, P, Req, Resp, F, Fut>(state: S, handler: F) -> ErasedHandler
where
    S: Clone + Send + Sync + 'static,
    P: Permission,
    Req: RequestBody,
    Resp: ReplyBody,
    F: Fn(S, Call<P>, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |request: ServiceRequest| {
        let (state, handler) = (state.clone(), handler.clone());
        Box::pin(async move {
            let body = Req::parse(&request)?;
            let limit = request.max_size();
            let reply = handler(state, Call::new(request), body)
                .await?
                .into_reply()?;
            if reply.body.len() > limit {
                // NATS would refuse to deliver it; say so instead of timing out.
                return Err(Error::payload_too_large(
                    "the reply (ask for less, e.g. a smaller page or limit)",
                    reply.body.len(),
                    limit,
                ));
            }
            Ok(reply)
        }) as BoxFuture
    })
}

/// `a::b::Thing<c::D>` → `Thing<D>`; a pointer (`Arc<T>`, `Box<T>`) is
/// named by what it points to.
fn short_type_name(full: &str) -> String {
    let short = path_free(full);
    for pointer in ["Arc<", "Box<"] {
        if let Some(inner) = short
            .strip_prefix(pointer)
            .and_then(|s| s.strip_suffix('>'))
        {
            return inner.to_owned();
        }
    }
    short
}

fn path_free(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_type_name("a::b::Thing"), "Thing");
        assert_eq!(short_type_name("alloc::vec::Vec<x::y::Item>"), "Vec<Item>");
        assert_eq!(short_type_name("u32"), "u32");
        assert_eq!(
            short_type_name("alloc::sync::Arc<ymera_core::health::HealthReport>"),
            "HealthReport"
        );
    }

    #[test]
    fn schema_files_follow_the_subject() {
        let info = EndpointInfo {
            subject: "config.schema.set".into(),
            permission: Some("config:write"),
            request: "X".into(),
            reply: "Y".into(),
        };
        assert_eq!(
            info.request_schema().as_deref(),
            Some("config/schema.set.request.schema.json")
        );
        assert_eq!(
            info.reply_schema().as_deref(),
            Some("config/schema.set.reply.schema.json")
        );
    }
}
