//! Readiness probes over plain TCP: just enough HTTP, NATS and RESP to tell that a
//! server really answers.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    Some(stream)
}

fn first_line(stream: TcpStream) -> Option<String> {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}

/// True if `GET <path>` on 127.0.0.1:`port` answers with status 200.
pub(crate) fn http_ok(port: u16, path: &str) -> bool {
    let Some(mut stream) = connect(port) else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    first_line(stream).is_some_and(|status| status.split_whitespace().nth(1) == Some("200"))
}

/// True if a NATS server on `port` greets a new connection with its `INFO {…}` line.
pub(crate) fn nats_info(port: u16) -> bool {
    connect(port)
        .and_then(first_line)
        .is_some_and(|line| line.starts_with("INFO {"))
}

/// True if a Redis server on `port` answers `PING` with `+PONG` (not `-LOADING`).
pub(crate) fn redis_pong(port: u16) -> bool {
    let Some(mut stream) = connect(port) else {
        return false;
    };
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    first_line(stream).is_some_and(|line| line.trim_end() == "+PONG")
}
