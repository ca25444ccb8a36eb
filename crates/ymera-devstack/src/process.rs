//! Supervised processes (servers and services): spawning under a parent-death signal,
//! readiness waits, signals, logs and `/proc` inspection.
//!
//! # Why a spawner thread
//!
//! Every server and service runs as `setpriv --pdeathsig KILL -- <program> …`, so the
//! kernel kills it when its parent goes away, even when the parent is SIGKILLed (nextest
//! timeout, OOM, `kill -9` of a test or of `ymera up`). Linux delivers the parent-death signal when the *thread* that
//! spawned the child exits, not the process. Tests spawn from short-lived threads
//! (libtest's per-test threads, tokio workers and blocking-pool threads), so a server
//! started from one of them would die as soon as that thread ends, for example a server
//! kept in a `static` and shared between tests. All servers are therefore spawned from
//! one dedicated thread that lives as long as the process.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::binaries::setpriv_bin;
use crate::error::io_context;
use crate::{DevstackError, Result};

/// How long a server may take to become ready.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after a stop signal before it is killed.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long killed processes may take to disappear.
pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a start is tried on fresh ports after an "address in use".
const PORT_ATTEMPTS: u32 = 5;
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const LOG_TAIL_LINES: usize = 25;

/// Which user a server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// The user running the tests.
    CurrentUser,
    /// The `postgres` system user (PostgreSQL when the tests run as root).
    Postgres,
    /// The user running the tests with this group as its only group (real and effective
    /// gid, supplementary groups cleared): a firewall rule can then match the process's
    /// own sockets (`meta skgid`). Needs root.
    Group(u32),
}

/// A command that runs `program` under `setpriv --pdeathsig KILL` (and as `postgres` if asked).
///
/// `setpriv` execs `program`, so the child's PID is the server's PID.
pub(crate) fn supervised_command(program: &Path, run_as: RunAs) -> Result<Command> {
    let mut command = Command::new(setpriv_bin()?);
    command.args(["--pdeathsig", "KILL"]);
    match run_as {
        RunAs::CurrentUser => {}
        RunAs::Postgres => {
            command.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
        }
        RunAs::Group(gid) => {
            command.arg(format!("--regid={gid}")).arg("--clear-groups");
        }
    }
    command.arg("--").arg(program).stdin(Stdio::null());
    Ok(command)
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

/// Spawns `command` from the process-lifetime spawner thread (see the module docs).
fn spawn_from_spawner_thread(command: Command) -> io::Result<Child> {
    let spawner = SPAWNER
        .get_or_init(start_spawner_thread)
        .as_ref()
        .ok_or_else(|| io::Error::other("could not start the ymera-devstack spawner thread"))?;
    let (reply, answer) = mpsc::channel();
    spawner
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("the ymera-devstack spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the ymera-devstack spawner thread is gone"))?
}

fn start_spawner_thread() -> Option<mpsc::Sender<SpawnRequest>> {
    let (requests, incoming) = mpsc::channel::<SpawnRequest>();
    thread::Builder::new()
        .name("ymera-devstack-spawner".into())
        .spawn(move || {
            // Ends only when every sender is gone; the one in SPAWNER never is.
            for mut request in incoming {
                let _ = request.reply.send(request.command.spawn());
            }
        })
        .ok()?;
    Some(requests)
}

/// Why a launch failed, and whether starting again on fresh ports might help.
pub(crate) struct LaunchFailure {
    pub(crate) error: DevstackError,
    pub(crate) address_in_use: bool,
}

impl From<DevstackError> for LaunchFailure {
    fn from(error: DevstackError) -> Self {
        Self {
            error,
            address_in_use: false,
        }
    }
}

/// Spawns a server and waits until `ready` says it serves.
pub(crate) fn launch(
    name: &str,
    command: Command,
    log_path: &Path,
    ready: impl FnMut() -> bool,
) -> std::result::Result<ServerProcess, LaunchFailure> {
    let mut process = ServerProcess::spawn(name, command, log_path)?;
    match process.wait_ready(ready) {
        Ok(()) => Ok(process),
        Err(error) => Err(LaunchFailure {
            address_in_use: process.failed_on_address_in_use(),
            error,
        }),
    }
}

/// Calls `start` (which picks fresh ports each time) until it succeeds, retrying only when
/// a port turned out to be taken, at most `PORT_ATTEMPTS` times.
pub(crate) fn retry_on_address_in_use<T>(
    mut start: impl FnMut() -> std::result::Result<T, LaunchFailure>,
) -> Result<T> {
    let mut attempt = 1;
    loop {
        match start() {
            Ok(started) => return Ok(started),
            Err(failure) if failure.address_in_use && attempt < PORT_ATTEMPTS => attempt += 1,
            Err(failure) => return Err(failure.error),
        }
    }
}

/// One running (or exited) server process whose stdout and stderr go to a log file.
///
/// Dropping it kills the process (SIGKILL) and reaps it.
pub(crate) struct ServerProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// Where this run's output starts in the (appended) log file.
    log_start: u64,
}

impl ServerProcess {
    /// Spawns `command` with its output appended to `log_path`.
    pub(crate) fn spawn(name: &str, mut command: Command, log_path: &Path) -> Result<Self> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(io_context(format!("opening the {name} log {log_path:?}")))?;
        let log_start = log
            .metadata()
            .map_err(io_context(format!("reading the {name} log {log_path:?}")))?
            .len();
        let stderr = log
            .try_clone()
            .map_err(io_context(format!("duplicating the {name} log handle")))?;
        command.stdout(log).stderr(stderr);
        let command_line = describe(&command);
        let child = spawn_from_spawner_thread(command)
            .map_err(io_context(format!("spawning {name}: `{command_line}`")))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path: log_path.to_path_buf(),
            log_start,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls `ready` until it returns true. Fails if the process exits first or if
    /// `START_TIMEOUT` passes (the process is then killed).
    pub(crate) fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(DevstackError::ExitedDuringStart {
                    server: self.name.clone(),
                    status: status.to_string(),
                    log: self.log_path.clone(),
                    log_tail: self.log_tail(),
                });
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                return Err(DevstackError::StartTimeout {
                    server: self.name.clone(),
                    timeout: START_TIMEOUT,
                    log: self.log_path.clone(),
                    log_tail: self.log_tail(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// True if this run's log says the listen address was taken (a free-port race).
    fn failed_on_address_in_use(&self) -> bool {
        self.log_since_start()
            .to_ascii_lowercase()
            .contains("address already in use")
    }

    /// Sends `signal` (e.g. "TERM", "INT") and waits up to `STOP_TIMEOUT` for the process
    /// to exit; kills it if it does not.
    pub(crate) fn stop_with(&mut self, signal: &str) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        send_signal(signal, &[self.pid()])?;
        if self.wait_exit(STOP_TIMEOUT).is_some() {
            return Ok(());
        }
        self.kill()
    }

    /// SIGKILLs the process and reaps it.
    pub(crate) fn kill(&mut self) -> Result<()> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        match self.child.kill() {
            Ok(()) => {}
            // Already exited between the check and the kill.
            Err(err) if err.kind() == io::ErrorKind::InvalidInput => {}
            Err(err) => {
                return Err(io_context(format!(
                    "killing {} (pid {})",
                    self.name,
                    self.pid()
                ))(err));
            }
        }
        self.child.wait().map_err(io_context(format!(
            "waiting for {} (pid {})",
            self.name,
            self.pid()
        )))?;
        Ok(())
    }

    /// The exit status once the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        // An error here means the child was already reaped elsewhere: treat it as exited.
        self.child
            .try_wait()
            .unwrap_or_else(|_| Some(ExitStatus::default()))
    }

    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    pub(crate) fn log_since_start(&self) -> String {
        read_log_from(&self.log_path, self.log_start)
    }

    /// The last lines this run wrote to its log.
    pub(crate) fn log_tail(&self) -> String {
        tail_lines(&self.log_since_start(), LOG_TAIL_LINES)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn read_log_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(offset))?;
        file.read_to_end(&mut text)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&text).into_owned(),
        Err(err) => format!("(could not read {path:?}: {err})"),
    }
}

pub(crate) fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    let tail = lines[start..].join("\n");
    if tail.trim().is_empty() {
        "(empty)".to_owned()
    } else {
        tail
    }
}

/// Sends a signal to processes with the `kill` builtin of `sh` (no `unsafe`, no extra crate).
/// Processes that are already gone are ignored.
pub(crate) fn send_signal(signal: &str, pids: &[u32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    Command::new("sh")
        .args(["-c", r#"kill -s "$0" "$@" 2>/dev/null; exit 0"#, signal])
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .status()
        .map_err(io_context(format!("sending SIG{signal} to {pids:?}")))?;
    Ok(())
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The live direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            proc_stat(candidate).is_some_and(|(state, ppid)| ppid == pid && state != 'Z')
        })
        .collect()
}

/// Waits until none of `pids` is alive; false if some still are after `timeout`.
pub(crate) fn wait_all_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&pid| pid_alive(pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// State and parent PID from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …"; comm may contain spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Runs a short helper command to completion within `timeout`, capturing its output.
/// Fails with the command line and the end of its output if it exits non-zero.
pub(crate) fn run_helper(mut command: Command, timeout: Duration) -> Result<String> {
    let command_line = describe(&command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_context(format!("running `{command_line}`")))?;
    // Helpers print little, so the pipes never fill while we poll.
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(err) => return Err(io_context(format!("waiting for `{command_line}`"))(err)),
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut output);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut output);
    }
    match status {
        Some(status) if status.success() => Ok(output),
        Some(status) => Err(DevstackError::CommandFailed {
            command: command_line,
            status: status.to_string(),
            output: tail_lines(&output, LOG_TAIL_LINES),
        }),
        None => Err(DevstackError::CommandFailed {
            command: command_line,
            status: format!("timed out after {}s, killed", timeout.as_secs()),
            output: tail_lines(&output, LOG_TAIL_LINES),
        }),
    }
}

pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
