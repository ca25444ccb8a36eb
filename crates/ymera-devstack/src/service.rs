//! Service processes: a platform binary (`ymera-config`, …) started with its environment,
//! its stdout and stderr appended to a log file, under the same parent-death signal as the
//! servers, optionally restarted with backoff when it exits, and waited for until it answers
//! `<service>.health`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::io_context;
use crate::host::{ServerDir, server_dir};
use crate::process::{
    RunAs, STOP_TIMEOUT, ServerProcess, send_signal, supervised_command, tail_lines,
};
use crate::{DevstackError, Result};

/// How often the watcher thread looks at its process.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// How long one `<service>.health` request may take.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often [`wait_serving`] asks again (a request nobody answers fails at once).
const SERVING_POLL_INTERVAL: Duration = Duration::from_millis(25);
const LOG_TAIL_LINES: usize = 40;

/// The default wait for [`Service::wait_healthy`] and [`wait_healthy`].
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// When a service that exited is started again: after `initial`, doubling up to `max`;
/// back to `initial` once a run lasted `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 30 s, reset after a minute of uptime (what `ymera up` uses).
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// What to start: a name, a program, its environment, where its output goes and whether
/// it is restarted.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log_path: Option<PathBuf>,
    restart: Option<Backoff>,
}

impl ServiceOptions {
    /// `program` as service `name` (the name of its NATS service, e.g. `config`), with the
    /// environment of this process, output to a log file in a temporary directory, no
    /// restart.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log_path: None,
            restart: None,
        }
    }

    /// The platform binary `ymera-<name>` built beside the running one (see
    /// [`service_binary`]).
    pub fn binary(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let program = service_binary(&name)?;
        Ok(Self::new(name, program))
    }

    /// One more command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// One environment variable (later settings of the same variable win).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Several environment variables.
    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Append stdout and stderr to this file (its directory is created) instead of a file
    /// in a temporary directory that goes away with the [`Service`].
    pub fn log_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    /// Start the service again, after `backoff`, whenever it exits on its own.
    pub fn restart(mut self, backoff: Backoff) -> Self {
        self.restart = Some(backoff);
        self
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the log file unless one was set.
    pub(crate) fn default_log_path(mut self, path: PathBuf) -> Self {
        self.log_path.get_or_insert(path);
        self
    }

    fn command(&self) -> Result<Command> {
        let mut command = supervised_command(&self.program, RunAs::CurrentUser)?;
        command.args(&self.args).envs(self.env.iter().cloned());
        Ok(command)
    }

    fn spawn(&self, log_path: &Path) -> Result<ServerProcess> {
        ServerProcess::spawn(&self.name, self.command()?, log_path)
    }
}

/// A running service process, watched by a thread of its own.
///
/// Like the servers, it runs under `setpriv --pdeathsig KILL`, spawned from the
/// process-lifetime spawner thread, so it dies with this process even on `kill -9`.
/// Dropping the handle kills it (SIGKILL; while the thread panics, as in a failing test,
/// it also prints the end of the log to stderr); [`Service::stop`] asks it to exit first.
pub struct Service {
    name: String,
    log_path: PathBuf,
    restarting: bool,
    shared: Arc<Shared>,
    watcher: Option<JoinHandle<()>>,
    // Dropped last: the temporary directory of the log, if the caller named none.
    _log_dir: Option<ServerDir>,
}

struct Shared {
    stopping: AtomicBool,
    state: Mutex<State>,
}

struct State {
    /// The current run; `None` after a failed restart.
    process: Option<ServerProcess>,
    restarts: u32,
    /// How the last run ended, once the service stays down (no restart).
    exit: Option<String>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleeps `delay` in small steps; false if a stop was asked for meanwhile.
    fn sleep_unless_stopping(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            if self.stopping() {
                return false;
            }
            thread::sleep(WATCH_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
        }
        !self.stopping()
    }
}

impl Service {
    /// Starts the service (it is not waited for: see [`Service::wait_healthy`]). Fails if
    /// the program cannot be spawned.
    pub fn start(options: ServiceOptions) -> Result<Self> {
        let (log_path, log_dir) = match &options.log_path {
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(io_context(format!("creating {parent:?}")))?;
                }
                (path.clone(), None)
            }
            None => {
                // The kind must not contain '-': stale-directory clean-up parses the PID after it.
                let dir = server_dir("service", None)?;
                (dir.path().join(format!("{}.log", options.name)), Some(dir))
            }
        };
        let process = options.spawn(&log_path)?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            state: Mutex::new(State {
                process: Some(process),
                restarts: 0,
                exit: None,
            }),
        });
        let watcher = {
            let shared = Arc::clone(&shared);
            let options = options.clone();
            let log_path = log_path.clone();
            let context = format!("starting the watcher thread of {}", options.name);
            thread::Builder::new()
                .name(format!("ymera-devstack-{}", options.name))
                .spawn(move || watch(&shared, &options, &log_path))
                .map_err(io_context(context))?
        };
        Ok(Self {
            name: options.name,
            log_path,
            restarting: options.restart.is_some(),
            shared,
            watcher: Some(watcher),
            _log_dir: log_dir,
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file that receives its stdout and stderr (all runs, appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The PID of the current run, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut state = self.shared.state();
        let process = state.process.as_mut()?;
        process.is_running().then(|| process.pid())
    }

    /// True while the current run has not exited.
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// How many times it was started again after exiting.
    pub fn restarts(&self) -> u32 {
        self.shared.state().restarts
    }

    /// How the process ended, once it has exited and will not be restarted.
    pub fn exit_status(&self) -> Option<String> {
        let mut state = self.shared.state();
        if let Some(exit) = &state.exit {
            return Some(exit.clone());
        }
        if self.restarting {
            return None;
        }
        state
            .process
            .as_mut()?
            .exit_status()
            .map(|status| status.to_string())
    }

    /// The last lines the service wrote to its log (all runs).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        tail_lines(&text, LOG_TAIL_LINES)
    }

    /// Waits until `<name>.health` answers without error headers, at most `timeout`.
    /// Fails at once, with the end of the log, if the process exits and is not restarted.
    pub async fn wait_healthy(&self, client: &async_nats::Client, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(DevstackError::ExitedDuringStart {
                    server: self.name.clone(),
                    status,
                    log: self.log_path.clone(),
                    log_tail: self.log_tail(),
                });
            }
            if health_answers(client, &self.name).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DevstackError::NotHealthy {
                    service: self.name.clone(),
                    timeout,
                    log: self.log_path.clone(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }

    /// Graceful stop: SIGTERM, up to 15 s for the exit, then SIGKILL. No restart follows.
    pub fn stop(&mut self) -> Result<()> {
        stop_all(std::slice::from_mut(self))
    }

    /// Crash: SIGKILL, then reap. No restart follows.
    pub fn kill(&mut self) -> Result<()> {
        self.end_watch();
        match self.shared.state().process.as_mut() {
            Some(process) => process.kill(),
            None => Ok(()),
        }
    }

    /// Stops the watcher thread: nothing is restarted after this.
    fn end_watch(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

/// Stops `services` together: SIGTERM to all, then up to 15 s for each to exit, then
/// SIGKILL for those still running. Returns the first error after trying every service.
pub fn stop_all(services: &mut [Service]) -> Result<()> {
    for service in services.iter_mut() {
        service.end_watch();
    }
    let pids: Vec<u32> = services.iter().filter_map(Service::pid).collect();
    send_signal("TERM", &pids)?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut first_error = None;
    for service in services.iter_mut() {
        let mut state = service.shared.state();
        let Some(process) = state.process.as_mut() else {
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if process.wait_exit(left).is_none()
            && let Err(err) = process.kill()
        {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.kill();
        // A test that panics while holding the service shows what the service said (its
        // log may be in a temporary directory that goes away with it).
        if thread::panicking() {
            eprintln!(
                "--- last lines of {} ({}) ---\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail()
            );
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("log_path", &self.log_path)
            .finish()
    }
}

/// The watcher thread: notices an exit and, if asked to, starts the service again after
/// the backoff delay.
fn watch(shared: &Shared, options: &ServiceOptions, log_path: &Path) {
    let name = &options.name;
    let mut delay = options.restart.map(|backoff| backoff.initial);
    let mut started = Instant::now();
    loop {
        thread::sleep(WATCH_INTERVAL);
        if shared.stopping() {
            return;
        }
        let exited = {
            let mut state = shared.state();
            match state.process.as_mut() {
                Some(process) => process.exit_status().map(|status| status.to_string()),
                None => Some("not started".to_owned()),
            }
        };
        let Some(status) = exited else {
            continue;
        };
        let (Some(backoff), Some(current)) = (options.restart, delay) else {
            shared.state().exit = Some(status);
            return;
        };
        let wait = if started.elapsed() >= backoff.reset_after {
            backoff.initial
        } else {
            current
        };
        eprintln!(
            "{name}: exited ({status}); restarting in {wait:?} (log: {})",
            log_path.display()
        );
        if !shared.sleep_unless_stopping(wait) {
            return;
        }
        delay = Some(wait.saturating_mul(2).min(backoff.max));
        let mut state = shared.state();
        // Checked under the lock: a stop sets the flag before it takes the lock.
        if shared.stopping() {
            return;
        }
        match options.spawn(log_path) {
            Ok(process) => state.process = Some(process),
            Err(err) => {
                eprintln!("{name}: cannot start: {err}");
                state.process = None;
            }
        }
        state.restarts += 1;
        started = Instant::now();
    }
}

/// True if `<service>.health` answers within 2 s without error headers.
async fn health_answers(client: &async_nats::Client, service: &str) -> bool {
    answers(client, &format!("{service}.health")).await
}

/// True if a request on `subject` (empty body) is answered within 2 s without error headers
/// (`Nats-Service-Error`, `Nats-Service-Error-Code`).
async fn answers(client: &async_nats::Client, subject: &str) -> bool {
    let request = client.request(subject.to_owned(), Bytes::new());
    match tokio::time::timeout(HEALTH_REQUEST_TIMEOUT, request).await {
        Ok(Ok(reply)) => reply.headers.as_ref().is_none_or(|headers| {
            headers.get("Nats-Service-Error").is_none()
                && headers.get("Nats-Service-Error-Code").is_none()
        }),
        _ => false,
    }
}

/// Waits until `<service>.health` answers without error headers, at most `timeout`, for a
/// service this process did not start (or whose [`Service`] handle is elsewhere).
pub async fn wait_healthy(
    client: &async_nats::Client,
    service: &str,
    timeout: Duration,
) -> Result<()> {
    wait_serving(client, &format!("{service}.health"), timeout)
        .await
        .map_err(|_| DevstackError::NotHealthy {
            service: service.to_owned(),
            timeout,
            log: PathBuf::new(),
            log_tail: "(not started by this process)".to_owned(),
        })
}

/// Waits until a request on `subject` (empty body) is answered without error headers, at
/// most `timeout`, polling every 25 ms: the one wait for "the service answers now", also for
/// endpoints other than health and for services running in the calling process.
pub async fn wait_serving(
    client: &async_nats::Client,
    subject: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if answers(client, subject).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DevstackError::NotServing {
                subject: subject.to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(SERVING_POLL_INTERVAL).await;
    }
}

/// `file_name` beside the running executable, or one directory up when the executable is
/// a test binary in `target/<profile>/deps` (where cargo puts the workspace's binaries).
pub fn beside_current_exe(file_name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io_context("locating the running executable"))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut candidates = vec![dir.join(file_name)];
    if dir.file_name().is_some_and(|name| name == "deps")
        && let Some(profile_dir) = dir.parent()
    {
        candidates.insert(0, profile_dir.join(file_name));
    }
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| DevstackError::NotBuilt {
            path: candidates.swap_remove(0),
        })
}

/// The platform's service binary `ymera-<name>` beside the running executable (see
/// [`beside_current_exe`]).
pub fn service_binary(name: &str) -> Result<PathBuf> {
    beside_current_exe(&format!("ymera-{name}"))
}
