//! A private nats-server.

use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::Result;
use crate::binaries::nats_server_bin;
use crate::error::io_context;
use crate::host::{ServerDir, chosen_port, server_dir};
use crate::probe::{http_ok, nats_info};
use crate::process::{
    LaunchFailure, RunAs, ServerProcess, launch, retry_on_address_in_use, send_signal,
    supervised_command,
};

/// How to start a [`NatsServer`]. `NatsOptions::default()` is JetStream on, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// A nats-server configuration file (accounts, limits, …). ymera-devstack still chooses
    /// the listen address, ports and JetStream store directory: its command-line flags
    /// override those settings of the file.
    pub config_file: Option<PathBuf>,
    /// The server's `max_payload` in bytes (nats-server's default is 1 MiB).
    pub max_payload: Option<u32>,
    /// Enable JetStream with a file store in the server's temporary directory.
    pub jetstream: bool,
    /// More nats-server command-line arguments, appended last (e.g. `["-DV"]` for protocol
    /// traces in the log).
    pub extra_args: Vec<String>,
    /// Keep the server's files (JetStream store, log) in this directory instead of a
    /// temporary one; it is not removed on drop. For the local stack.
    pub dir: Option<PathBuf>,
    /// A fixed client port instead of a free one.
    pub port: Option<u16>,
    /// A fixed monitoring port instead of a free one.
    pub monitor_port: Option<u16>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            config_file: None,
            max_payload: None,
            jetstream: true,
            extra_args: Vec::new(),
            dir: None,
            port: None,
            monitor_port: None,
        }
    }
}

/// A nats-server on 127.0.0.1 with a free client port, a free monitoring port and (by
/// default) JetStream storing into a temporary directory. Killed and cleaned up on drop.
pub struct NatsServer {
    // Field order matters: the process goes before its directory is removed.
    process: ServerProcess,
    command: NatsCommand,
    _dir: ServerDir,
}

/// Everything needed to start the same server again.
struct NatsCommand {
    bin: PathBuf,
    config_file: Option<PathBuf>,
    options: NatsOptions,
    port: u16,
    monitor_port: u16,
    store_dir: PathBuf,
    log_path: PathBuf,
    run_as: RunAs,
}

impl NatsServer {
    /// Starts a server with JetStream on and waits until it is ready.
    pub fn start() -> Result<Self> {
        Self::start_with(NatsOptions::default())
    }

    /// Starts a server with `options` and waits until it is ready: its monitoring port
    /// answers `/healthz` (which includes JetStream's health) with 200 and its client port
    /// sends `INFO`. Retries on fresh ports if a port was taken meanwhile.
    pub fn start_with(options: NatsOptions) -> Result<Self> {
        let bin = nats_server_bin()?;
        let dir = server_dir("nats", options.dir.as_deref())?;
        let store_dir = dir.path().join("store");
        fs::create_dir_all(&store_dir).map_err(io_context(format!("creating {store_dir:?}")))?;
        let config_file = effective_config(dir.path(), &options)?;
        let log_path = dir.path().join("nats-server.log");

        let (process, command) = retry_on_address_in_use(|| {
            let command = NatsCommand {
                bin: bin.clone(),
                config_file: config_file.clone(),
                options: options.clone(),
                port: chosen_port(options.port)?,
                monitor_port: chosen_port(options.monitor_port)?,
                store_dir: store_dir.clone(),
                log_path: log_path.clone(),
                run_as: RunAs::CurrentUser,
            };
            Ok((command.launch()?, command))
        })?;
        Ok(Self {
            process,
            command,
            _dir: dir,
        })
    }

    /// Spawns a server on the fixed ports of `options` without waiting for it to be ready
    /// (a JetStream cluster node is not healthy before a quorum of its peers runs):
    /// [`NatsServer::wait_ready`] waits.
    pub(crate) fn spawn_unready(options: NatsOptions, run_as: RunAs) -> Result<Self> {
        let bin = nats_server_bin()?;
        let dir = server_dir("nats", options.dir.as_deref())?;
        let store_dir = dir.path().join("store");
        fs::create_dir_all(&store_dir).map_err(io_context(format!("creating {store_dir:?}")))?;
        let config_file = effective_config(dir.path(), &options)?;
        let log_path = dir.path().join("nats-server.log");
        let command = NatsCommand {
            bin,
            config_file,
            port: chosen_port(options.port)?,
            monitor_port: chosen_port(options.monitor_port)?,
            options,
            store_dir,
            log_path,
            run_as,
        };
        let process = ServerProcess::spawn("nats-server", command.command()?, &command.log_path)?;
        Ok(Self {
            process,
            command,
            _dir: dir,
        })
    }

    /// Waits until the server is ready (see [`NatsServer::start_with`]).
    pub(crate) fn wait_ready(&mut self) -> Result<()> {
        let (port, monitor_port) = (self.command.port, self.command.monitor_port);
        self.process
            .wait_ready(|| http_ok(monitor_port, "/healthz") && nats_info(port))
    }

    /// Starts the server again like [`NatsServer::restart`] after it was killed, without
    /// waiting for it to be ready.
    pub(crate) fn respawn_unready(&mut self) -> Result<()> {
        self.stop()?;
        self.process = ServerProcess::spawn(
            "nats-server",
            self.command.command()?,
            &self.command.log_path,
        )?;
        Ok(())
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, `"TERM"`, …) to the server process.
    pub fn signal(&self, signal: &str) -> Result<()> {
        send_signal(signal, &[self.process.pid()])
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.command.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.command.port
    }

    /// The HTTP monitoring port (`/varz`, `/jsz`, `/healthz`, …).
    pub fn monitor_port(&self) -> u16 {
        self.command.monitor_port
    }

    /// The JetStream store directory (`-sd`); nats-server keeps its data in a `jetstream`
    /// folder inside it. It survives `kill` and `restart`.
    pub fn store_dir(&self) -> &Path {
        &self.command.store_dir
    }

    /// The file that receives the server's stdout and stderr (all runs, appended).
    pub fn log_path(&self) -> &Path {
        &self.command.log_path
    }

    /// The PID of the current server process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Graceful stop: SIGTERM, then wait for the exit (SIGKILL after 15 s).
    pub fn stop(&mut self) -> Result<()> {
        self.process.stop_with("TERM")
    }

    /// Crash: SIGKILL, then reap the process.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Starts the server again on the same ports with the same store directory, so
    /// JetStream streams and their messages survive; waits until it is ready. A running
    /// server is stopped gracefully first.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.process = self.command.launch().map_err(|failure| failure.error)?;
        Ok(())
    }

    /// True while the server process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("monitor_port", &self.command.monitor_port)
            .field("store_dir", &self.command.store_dir)
            .field("pid", &self.process.pid())
            .finish()
    }
}

impl NatsCommand {
    /// Spawns the server and waits until it is ready.
    fn launch(&self) -> std::result::Result<ServerProcess, LaunchFailure> {
        let (port, monitor_port) = (self.port, self.monitor_port);
        launch("nats-server", self.command()?, &self.log_path, || {
            http_ok(monitor_port, "/healthz") && nats_info(port)
        })
    }

    fn command(&self) -> Result<Command> {
        let mut command = supervised_command(&self.bin, self.run_as)?;
        if let Some(config) = &self.config_file {
            command.arg("-c").arg(config);
        }
        command
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string());
        if self.options.jetstream {
            command.arg("-js").arg("-sd").arg(&self.store_dir);
        }
        command.args(&self.options.extra_args);
        Ok(command)
    }
}

/// The configuration file to pass with `-c`: the caller's own, or, when `max_payload` is
/// set (nats-server has no flag for it), a generated file that includes the caller's.
fn effective_config(dir: &Path, options: &NatsOptions) -> Result<Option<PathBuf>> {
    let user_config = match &options.config_file {
        Some(path) => Some(fs::canonicalize(path).map_err(io_context(format!(
            "reading the nats-server config file {path:?}"
        )))?),
        None => None,
    };
    let Some(max_payload) = options.max_payload else {
        return Ok(user_config);
    };
    let mut text = String::from("# Generated by ymera-devstack\n");
    if let Some(user_config) = &user_config {
        // nats-server resolves includes relative to the including file, even absolute ones.
        let _ = writeln!(text, "include {:?}", relative_to_dir(dir, user_config));
    }
    let _ = writeln!(text, "max_payload: {max_payload}");
    let path = dir.join("ymera-devstack.conf");
    fs::write(&path, text).map_err(io_context(format!("writing {path:?}")))?;
    Ok(Some(path))
}

/// `target` (absolute) written relative to `dir` (absolute): `../../<target without />`.
fn relative_to_dir(dir: &Path, target: &Path) -> String {
    let depth = dir
        .components()
        .filter(|component| matches!(component, Component::Normal(_)))
        .count();
    let up = "../".repeat(depth);
    let target = target.strip_prefix("/").unwrap_or(target);
    format!("{up}{}", target.display())
}
