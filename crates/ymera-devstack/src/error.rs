//! The one error type of ymera-devstack.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while finding, starting, stopping or using a server or a
/// service process.
///
/// Messages are written for the person reading a failed test or a failed `ymera up`: they
/// say what was attempted and, for start failures, include the last lines of the log.
#[derive(Debug, thiserror::Error)]
pub enum DevstackError {
    /// A server binary is not installed where ymera-devstack looks for it.
    #[error("{program} not found: run scripts/setup (or point {env_var} at it)")]
    NotFound {
        /// The program looked for, e.g. `nats-server`.
        program: &'static str,
        /// The environment variable that overrides the lookup.
        env_var: &'static str,
    },

    /// An override variable names a path that does not exist.
    #[error(
        "{env_var}={path:?} does not exist: fix it, or unset it to use what scripts/setup installed"
    )]
    BadOverride {
        /// The environment variable.
        env_var: &'static str,
        /// Its value.
        path: PathBuf,
    },

    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What ymera-devstack was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The server process exited before it became ready.
    #[error("{server} exited while starting ({status}); last lines of {log:?}:\n{log_tail}")]
    ExitedDuringStart {
        /// Which server or service.
        server: String,
        /// Its exit status.
        status: String,
        /// The log file that holds its stdout and stderr.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// The server did not become ready in time (it has been killed).
    #[error("{server} was not ready after {}s (killed it); last lines of {log:?}:\n{log_tail}", .timeout.as_secs())]
    StartTimeout {
        /// Which server or service.
        server: String,
        /// How long ymera-devstack waited.
        timeout: Duration,
        /// The log file that holds its stdout and stderr.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// A service did not answer `<service>.health` without error headers in time (it is
    /// left running).
    #[error("{service} did not answer {service}.health healthy within {}s; last lines of {log:?}:\n{log_tail}", .timeout.as_secs())]
    NotHealthy {
        /// The service.
        service: String,
        /// How long ymera-devstack waited.
        timeout: Duration,
        /// The log file that holds its stdout and stderr.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// Nobody answered a request on `subject` without error headers in time.
    #[error("{subject} was not answered without an error within {}s", .timeout.as_secs())]
    NotServing {
        /// The subject asked.
        subject: String,
        /// How long ymera-devstack waited.
        timeout: Duration,
    },

    /// A helper command (initdb, createdb, …) failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status, or "timed out after …".
        status: String,
        /// The end of its output.
        output: String,
    },

    /// PostgreSQL refuses to run as root and there is no `postgres` user to run it as.
    #[error(
        "running as root, but there is no `postgres` system user to run PostgreSQL as \
         (PostgreSQL refuses to run as root): run scripts/setup, which installs postgresql-15"
    )]
    NoPostgresUser,

    /// A directory must be traversable by the `postgres` user but is not.
    #[error(
        "{path:?} is not traversable by the `postgres` user, which runs PostgreSQL when the tests run as root: \
         set TMPDIR to a world-traversable directory such as /tmp"
    )]
    NotTraversable {
        /// The offending directory.
        path: PathBuf,
    },

    /// A program expected beside the running binary (a service, `ymera`) is not there.
    #[error("{path:?} is not built: run `cargo build --workspace --bins`")]
    NotBuilt {
        /// Where it was looked for.
        path: PathBuf,
    },

    /// A name that must be a plain identifier (a database name) is not one.
    #[error("{name:?} is not a plain name (lower-case letters, digits and `_` only)")]
    BadName {
        /// The offending name.
        name: String,
    },

    /// No free TCP port could be found.
    #[error("could not find a free TCP port on 127.0.0.1 after {attempts} attempts")]
    NoFreePort {
        /// How many ports were tried.
        attempts: u32,
    },
}

/// Builds a closure that wraps an [`io::Error`] with what was being done.
pub(crate) fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> DevstackError {
    let context = context.into();
    move |source| DevstackError::Io { context, source }
}
