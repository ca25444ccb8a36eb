//! TRANSITIONAL: the untyped registration the services used before
//! [`ServiceBuilder::route`]; removed once every service is ported.
#![allow(missing_docs)]

use std::future::Future;
use std::sync::Arc;

use super::ServiceBuilder;
use super::builder::EndpointSpec;
use super::endpoint::{BoxFuture, EndpointInfo};
use super::request::{Reply, ServiceRequest};
use crate::error::Error;

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

impl ServiceBuilder {
    pub fn endpoint<F, Fut>(self, subject: &str, handler: F) -> Self
    where
        F: Fn(ServiceRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Error>> + Send + 'static,
    {
        self.legacy(subject, None, handler)
    }

    pub fn secured<F, Fut>(self, subject: &str, permission: &'static str, handler: F) -> Self
    where
        F: Fn(ServiceRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Error>> + Send + 'static,
    {
        self.legacy(subject, Some(permission), handler)
    }

    fn legacy<F, Fut>(self, subject: &str, permission: Option<&'static str>, handler: F) -> Self
    where
        F: Fn(ServiceRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Error>> + Send + 'static,
    {
        self.push(EndpointSpec {
            info: EndpointInfo {
                subject: subject.to_owned(),
                permission,
                request: "untyped".into(),
                reply: "untyped".into(),
            },
            handler: Arc::new(move |req| Box::pin(handler(req)) as BoxFuture),
        })
    }
}
