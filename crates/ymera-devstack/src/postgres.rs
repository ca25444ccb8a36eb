//! A private PostgreSQL cluster.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::binaries::postgres_bin_dir;
use crate::error::io_context;
use crate::host::{
    ServerDir, chosen_port, ensure_traversable_by_others, postgres_user_ids, running_as_root,
    server_dir, set_mode,
};
use crate::process::{
    KILL_TIMEOUT, LaunchFailure, RunAs, ServerProcess, children_of, launch, pid_alive,
    retry_on_address_in_use, run_helper, send_signal, supervised_command, wait_all_gone,
};
use crate::{DevstackError, Result};

const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a [`Postgres`] runs: by default a temporary directory and a free port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Keep the cluster here instead of a temporary directory (not removed on drop).
    pub dir: Option<PathBuf>,
    /// A fixed port instead of a free one.
    pub port: Option<u16>,
}

/// A PostgreSQL cluster of its own: `initdb` into a temporary directory (trust
/// authentication, `fsync=off`: committed data survives `kill`, just not a machine crash),
/// listening on 127.0.0.1 and a free port, with its unix
/// socket inside the temporary directory. Shut down and removed on drop.
///
/// When the tests run as root, `initdb` and `postgres` run as the `postgres` system user
/// (PostgreSQL refuses to run as root) and the data directory belongs to that user.
pub struct Postgres {
    // Field order matters: the process goes before its directory is removed.
    process: ServerProcess,
    bin_dir: PathBuf,
    run_as: RunAs,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    databases_created: AtomicU64,
    dir: ServerDir,
}

impl Postgres {
    /// Creates a cluster, starts it and waits until `pg_isready` says it accepts connections.
    pub fn start() -> Result<Self> {
        Self::start_with(PostgresOptions::default())
    }

    /// Like [`Postgres::start`], placed as `options` say. A kept directory that already
    /// holds a cluster (from an earlier run) is started without `initdb`.
    pub fn start_with(options: PostgresOptions) -> Result<Self> {
        let bin_dir = postgres_bin_dir()?;
        let run_as = if running_as_root() {
            RunAs::Postgres
        } else {
            RunAs::CurrentUser
        };
        let dir = server_dir("postgres", options.dir.as_deref())?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        let log_path = dir.path().join("postgres.log");
        if !data_dir.join("PG_VERSION").is_file() {
            prepare_directories(dir.path(), &data_dir, &socket_dir, run_as)?;
            initdb(&bin_dir, &data_dir, run_as, dir.path())?;
        }

        let launcher = Launcher {
            bin_dir: &bin_dir,
            run_as,
            data_dir: &data_dir,
            socket_dir: &socket_dir,
            log_path: &log_path,
            work_dir: dir.path(),
        };
        let (process, port) = retry_on_address_in_use(|| {
            let port = chosen_port(options.port)?;
            Ok((launcher.launch(port)?, port))
        })?;
        Ok(Self {
            process,
            bin_dir,
            run_as,
            port,
            data_dir,
            socket_dir,
            log_path,
            databases_created: AtomicU64::new(0),
            dir,
        })
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this cluster.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, uniquely named database (with `createdb`) and returns its URL.
    /// Cheap enough to give every test its own database on one shared cluster.
    pub fn create_database(&self) -> Result<String> {
        let number = self.databases_created.fetch_add(1, Ordering::Relaxed);
        let name = format!("ymera_test_{number}");
        let mut createdb = self.client_command("createdb");
        createdb.arg(&name);
        run_helper(createdb, CLIENT_TIMEOUT)?;
        Ok(self.database_url(&name))
    }

    /// Creates database `name` unless it exists (a kept cluster keeps it between runs) and
    /// returns its URL. `name` must be a plain identifier (`[a-z0-9_]+`).
    pub fn ensure_database(&self, name: &str) -> Result<String> {
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            return Err(DevstackError::BadName {
                name: name.to_owned(),
            });
        }
        let mut query = self.client_command("psql");
        query.args(["-X", "-d", "postgres", "-tAc"]).arg(format!(
            "SELECT 1 FROM pg_database WHERE datname = '{name}'"
        ));
        if run_helper(query, CLIENT_TIMEOUT)?.trim() != "1" {
            let mut createdb = self.client_command("createdb");
            createdb.arg(name);
            run_helper(createdb, CLIENT_TIMEOUT)?;
        }
        Ok(self.database_url(name))
    }

    /// A command for one of the cluster's client programs (`psql`, `createdb`, …), already
    /// pointed at this cluster as user `postgres` (`-h 127.0.0.1 -p <port> -U postgres`).
    pub fn client_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-w"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        command
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the PostgreSQL binaries used.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The data directory (survives `kill` and `restart`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The file that receives the server's log (all runs, appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The PID of the postmaster.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Graceful stop: a fast shutdown (SIGINT: open client connections are closed instead
    /// of waited for, so a test's connection pool cannot block it), then wait for the exit
    /// (SIGKILL after 15 s).
    pub fn stop(&mut self) -> Result<()> {
        let backends = self.backends();
        self.process.stop_with("INT")?;
        // A fast shutdown ends every backend first; these are only left after a forced kill.
        let leftovers: Vec<u32> = backends.into_iter().filter(|&pid| pid_alive(pid)).collect();
        send_signal("KILL", &leftovers)?;
        wait_all_gone(&leftovers, KILL_TIMEOUT);
        Ok(())
    }

    /// Crash: SIGKILL the postmaster and all its backends, wait until they are gone. The
    /// next `restart` runs crash recovery on the same data.
    pub fn kill(&mut self) -> Result<()> {
        let backends = self.backends();
        send_signal("KILL", &backends)?;
        self.process.kill()?;
        wait_all_gone(&backends, KILL_TIMEOUT);
        Ok(())
    }

    /// Starts the server again on the same port and data directory (committed data
    /// survives, crash recovery runs after a `kill`) and waits until it is ready. A running
    /// server is stopped (fast shutdown) first.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let launcher = Launcher {
            bin_dir: &self.bin_dir,
            run_as: self.run_as,
            data_dir: &self.data_dir,
            socket_dir: &self.socket_dir,
            log_path: &self.log_path,
            work_dir: self.dir.path(),
        };
        self.process = launcher
            .launch(self.port)
            .map_err(|failure| failure.error)?;
        Ok(())
    }

    /// True while the postmaster has not exited.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    fn backends(&mut self) -> Vec<u32> {
        if self.process.is_running() {
            children_of(self.process.pid())
        } else {
            Vec::new()
        }
    }
}

/// After a crash a postmaster leaves its small System V shared-memory segment behind (a
/// restart on the same data directory would reuse it); remove it so that killed test
/// clusters do not pile up. Call only when no postmaster runs on `data_dir`.
pub(crate) fn remove_crash_leftovers(data_dir: &Path) {
    let Ok(lock_file) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return; // clean shutdown
    };
    // Line 7 of postmaster.pid: "<shm key> <shm id>".
    let shm_id = lock_file
        .lines()
        .nth(6)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u64>().ok());
    if let Some(shm_id) = shm_id {
        let mut ipcrm = Command::new("ipcrm");
        ipcrm.arg("-m").arg(shm_id.to_string());
        let _ = run_helper(ipcrm, CLIENT_TIMEOUT);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown leaves nothing behind, unlike SIGKILL.
        if self.stop().is_err() {
            let _ = self.kill();
        }
        remove_crash_leftovers(&self.data_dir);
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.url())
            .field("data_dir", &self.data_dir)
            .field("pid", &self.process.pid())
            .finish()
    }
}

/// Creates the data and socket directories, owned by `postgres` when running as root.
fn prepare_directories(
    dir: &Path,
    data_dir: &Path,
    socket_dir: &Path,
    run_as: RunAs,
) -> Result<()> {
    for path in [data_dir, socket_dir] {
        fs::create_dir(path).map_err(io_context(format!("creating {path:?}")))?;
    }
    set_mode(data_dir, 0o700)?;
    if run_as == RunAs::Postgres {
        set_mode(dir, 0o755)?;
        ensure_traversable_by_others(dir)?;
        let (uid, gid) = postgres_user_ids()?;
        for path in [data_dir, socket_dir] {
            chown(path, Some(uid), Some(gid))
                .map_err(io_context(format!("chown postgres {path:?}")))?;
        }
    }
    Ok(())
}

fn initdb(bin_dir: &Path, data_dir: &Path, run_as: RunAs, work_dir: &Path) -> Result<()> {
    let mut initdb = supervised_command(&bin_dir.join("initdb"), run_as)?;
    initdb
        .arg("-D")
        .arg(data_dir)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions"])
        .current_dir(work_dir);
    run_helper(initdb, INITDB_TIMEOUT)?;
    Ok(())
}

/// Everything needed to start the postmaster on a given port.
struct Launcher<'a> {
    bin_dir: &'a Path,
    run_as: RunAs,
    data_dir: &'a Path,
    socket_dir: &'a Path,
    log_path: &'a Path,
    work_dir: &'a Path,
}

impl Launcher<'_> {
    fn launch(&self, port: u16) -> std::result::Result<ServerProcess, LaunchFailure> {
        let mut postgres = supervised_command(&self.bin_dir.join("postgres"), self.run_as)?;
        postgres
            .arg("-D")
            .arg(self.data_dir)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ))
            // Safe against a killed server (the OS keeps what was written), not against a
            // machine crash; synchronous_commit stays on so a reported commit survives `kill`.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            // Dynamic shared memory as files in the data directory, not /dev/shm, so that a
            // killed cluster leaves nothing outside its temporary directory.
            .args(["-c", "dynamic_shared_memory_type=mmap"])
            .current_dir(self.work_dir);
        let pg_isready = self.bin_dir.join("pg_isready");
        launch("postgres", postgres, self.log_path, || {
            is_ready(&pg_isready, port)
        })
    }
}

fn is_ready(pg_isready: &Path, port: u16) -> bool {
    let mut probe = Command::new(pg_isready);
    probe
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-t", "2"]);
    run_helper(probe, PROBE_TIMEOUT).is_ok()
}
