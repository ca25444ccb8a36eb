//! The one entry of every service binary: [`main`] reads the process
//! configuration, builds the async runtime, runs the service and turns the
//! outcome into the process exit code (ARCHITECTURE.md): 0 after a clean
//! shutdown, 64 for configuration, 69 when a dependency is unreachable, 70
//! otherwise. It never calls `std::process::exit`, so destructors run.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     ymera_core::service::main("ymera-example", |config, _env| async move {
//!         let runtime = ymera_core::runtime::Runtime::start("example", config).await?;
//!         ymera_core::example::service().serve(runtime).await
//!     })
//! }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use crate::config::{ConfigError, EXIT_CONFIG, ServiceConfig};
use crate::env::Env;
use crate::runtime::RuntimeError;

/// Exit code when a dependency (NATS, PostgreSQL, Redis) is unreachable (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for every other failure (EX_SOFTWARE).
pub const EXIT_SOFTWARE: u8 = 70;

/// An error a service ends with: printed on one line, mapped to an exit code.
pub trait Failure: Display {
    /// The process exit code: 64 configuration, 69 unavailable dependency,
    /// 70 otherwise.
    fn exit_code(&self) -> i32;
}

impl Failure for RuntimeError {
    fn exit_code(&self) -> i32 {
        RuntimeError::exit_code(self)
    }
}

impl Failure for ConfigError {
    fn exit_code(&self) -> i32 {
        EXIT_CONFIG
    }
}

/// Runs a service process: reads [`ServiceConfig`] from the environment
/// (a missing or malformed setting prints `<program>: configuration error:
/// VAR: reason` and exits 64), builds the multi-thread tokio runtime, and
/// runs `run(config, env)` on it; `env` is the process environment for the
/// service's own settings (refuse a bad one with a [`ConfigError`], which
/// converts into `RuntimeError::Config`, exit 64). A failure prints
/// `<program>: <error>` (with `configuration error:` for exit code 64)
/// and exits with its [`Failure::exit_code`].
pub fn main<F, Fut, E>(program: &'static str, run: F) -> ExitCode
where
    F: FnOnce(ServiceConfig, Env<'static>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Failure,
{
    if std::env::args().nth(1).as_deref() == Some("health") {
        return health(program);
    }
    let env = Env::from_process();
    let config = match ServiceConfig::read(&env) {
        Ok(config) => config,
        Err(err) => return fail(program, &err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{program}: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    let result = runtime.block_on(run(config, env));
    // Tasks still running (background loops) are dropped here, not awaited.
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(program, &err),
    }
}

/// `<binary> health`, the container healthcheck of an image without a shell
/// or HTTP client: GET `/ready` on the process's own side port
/// (`YMERA_HTTP_ADDR`; an unspecified address means loopback) within 3 s.
/// Exit 0 when it answers 200, 1 otherwise (with one line saying why), 64
/// when `YMERA_HTTP_ADDR` is malformed or has no fixed port.
pub fn health(program: &str) -> ExitCode {
    let env = Env::from_process();
    let addr = match env.parse(
        "YMERA_HTTP_ADDR",
        ServiceConfig::default().http_addr,
        "a socket address like 0.0.0.0:8080",
    ) {
        Ok(addr) => addr,
        Err(err) => return fail(program, &err),
    };
    if addr.port() == 0 {
        let err = ConfigError::new("YMERA_HTTP_ADDR", "health needs a fixed port, not 0");
        return fail(program, &err);
    }
    let target = if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        std::net::SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    match ready_status(target) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{program}: health: GET http://{target}/ready answered {status}");
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("{program}: health: GET http://{target}/ready: {err}");
            ExitCode::from(1)
        }
    }
}

/// The HTTP status of `GET /ready` on `addr` (reply read up to 64 KiB).
fn ready_status(addr: std::net::SocketAddr) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a server that answers after the first read sees the whole request.
    let request = format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut reply)?;
    let head = String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP reply: {head:?}")))
}

/// Prints the one line for `err` and returns its exit code.
fn fail(program: &str, err: &impl Failure) -> ExitCode {
    let code = err.exit_code();
    if code == EXIT_CONFIG {
        eprintln!("{program}: configuration error: {err}");
    } else {
        eprintln!("{program}: {err}");
    }
    exit_code(code)
}

/// `code` as an exit code; anything outside 1..=255 is 70.
fn exit_code(code: i32) -> ExitCode {
    match u8::try_from(code) {
        Ok(code) if code != 0 => ExitCode::from(code),
        _ => ExitCode::from(EXIT_SOFTWARE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one canned reply on a loopback port; returns the port.
    fn one_reply(reply: &'static str) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut chunk).unwrap();
                assert!(n > 0, "request ended early");
                request.extend_from_slice(&chunk[..n]);
            }
            assert!(String::from_utf8_lossy(&request).starts_with("GET /ready HTTP/1.1"));
            conn.write_all(reply.as_bytes()).unwrap();
        });
        port
    }

    #[test]
    fn health_reads_the_ready_status() {
        let ok = one_reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ok));
        assert_eq!(ready_status(addr).unwrap(), 200);
        let down = one_reply("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], down));
        assert_eq!(ready_status(addr).unwrap(), 503);
        let garbage = one_reply("nonsense");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], garbage));
        assert!(ready_status(addr).is_err());
    }

    #[test]
    fn exit_codes_stay_in_range() {
        assert_eq!(exit_code(64), ExitCode::from(64));
        assert_eq!(exit_code(69), ExitCode::from(69));
        assert_eq!(exit_code(0), ExitCode::from(70));
        assert_eq!(exit_code(-1), ExitCode::from(70));
        assert_eq!(exit_code(300), ExitCode::from(70));
    }

    #[test]
    fn a_service_setting_is_a_configuration_failure() {
        let err: RuntimeError = ConfigError::new("CONFIG_MAX_VERSIONS", "too many").into();
        assert_eq!(Failure::exit_code(&err), 64);
        assert_eq!(err.to_string(), "CONFIG_MAX_VERSIONS: too many");
    }
}
