//! A private redis-server.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;
use crate::binaries::redis_server_bin;
use crate::host::{ServerDir, chosen_port, server_dir};
use crate::probe::redis_pong;
use crate::process::{
    LaunchFailure, RunAs, ServerProcess, launch, retry_on_address_in_use, supervised_command,
};

/// Where a [`Redis`] runs: by default a temporary directory and a free port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisOptions {
    /// Keep the server's files here instead of a temporary directory (not removed on drop).
    pub dir: Option<PathBuf>,
    /// A fixed port instead of a free one.
    pub port: Option<u16>,
}

/// A redis-server on 127.0.0.1 and a free port, without persistence (`--save ""
/// --appendonly no`): a restart starts empty. Killed and cleaned up on drop.
pub struct Redis {
    // Field order matters: the process goes before its directory is removed.
    process: ServerProcess,
    bin: PathBuf,
    port: u16,
    log_path: PathBuf,
    dir: ServerDir,
}

impl Redis {
    /// Starts a server and waits until it answers `PING` with `PONG`.
    pub fn start() -> Result<Self> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server placed as `options` say (directory, port).
    pub fn start_with(options: RedisOptions) -> Result<Self> {
        let bin = redis_server_bin()?;
        let dir = server_dir("redis", options.dir.as_deref())?;
        let log_path = dir.path().join("redis-server.log");
        let (process, port) = retry_on_address_in_use(|| {
            let port = chosen_port(options.port)?;
            Ok((launch_redis(&bin, port, dir.path(), &log_path)?, port))
        })?;
        Ok(Self {
            process,
            bin,
            port,
            log_path,
            dir,
        })
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file that receives the server's output (all runs, appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
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

    /// Starts the server again on the same port (empty: there is no persistence) and
    /// waits until it answers. A running server is stopped gracefully first.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.process = launch_redis(&self.bin, self.port, self.dir.path(), &self.log_path)
            .map_err(|failure| failure.error)?;
        Ok(())
    }

    /// True while the server process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url())
            .field("pid", &self.process.pid())
            .finish()
    }
}

fn launch_redis(
    bin: &Path,
    port: u16,
    dir: &Path,
    log_path: &Path,
) -> std::result::Result<ServerProcess, LaunchFailure> {
    let mut command: Command = supervised_command(bin, RunAs::CurrentUser)?;
    command
        .arg("--port")
        .arg(port.to_string())
        .args([
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no", "--logfile", ""])
        .arg("--dir")
        .arg(dir);
    launch("redis-server", command, log_path, || redis_pong(port))
}
