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
