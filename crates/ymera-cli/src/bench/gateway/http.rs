//! The benchmark's HTTP client: plain HTTP/1.1 keep-alive connections on
//! hyper's connection API (`hyper::client::conn::http1`), one request in
//! flight per connection, connections reused from a pool (at most as many as
//! requests in flight, so `--concurrency 64` means 64 connections, as the
//! NATS baseline has 64 requests in flight on its one connection). No
//! redirects, proxies, decompression or cookie store: the least a client can
//! do per request, so what is measured is the gateway.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// A pool of keep-alive connections to one server.
#[derive(Clone)]
pub struct HttpPool {
    addr: SocketAddr,
    authority: String,
    idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
}

/// A response: status and body.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl HttpPool {
    /// A pool for `base` (`http://host:port`).
    pub fn new(base: &str) -> anyhow::Result<HttpPool> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("{base}: only http:// URLs"))?
            .trim_end_matches('/')
            .to_owned();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&authority)?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{authority} resolves to nothing"))?;
        Ok(HttpPool {
            addr,
            authority,
            idle: Arc::new(Mutex::new(Vec::new())),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// `POST path` with `body` and `headers`; the whole reply body is read.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let pooled = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let mut sender = match pooled {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender.ready().await?;
        let mut request = Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        Ok(Reply { status, body })
    }
}
