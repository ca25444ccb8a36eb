//! Facts about the machine: the current user, the `postgres` user, temporary directories
//! and free ports.

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::TempDir;

use crate::error::io_context;
use crate::{DevstackError, Result};

const TEMP_PREFIX: &str = "ymera-devstack-";

/// True when the tests run as root (read from the owner of `/proc/self`, no `unsafe`).
pub(crate) fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// The uid and gid of the `postgres` system user, from `/etc/passwd`.
pub(crate) fn postgres_user_ids() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_context("reading /etc/passwd"))?;
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (name == "postgres").then_some((uid, gid))
        })
        .next()
        .ok_or(DevstackError::NoPostgresUser)
}

/// A fresh temporary directory for one server, named `ymera-devstack-<kind>-<pid>-XXXXXX`.
///
/// Also removes such directories left behind by test processes that no longer exist
/// (killed before their `Drop` could run; their servers died with them).
/// Where a server keeps its files: a temporary directory removed on drop, or a
/// directory the caller chose, which is kept (the local stack's `.ymera/`).
pub(crate) enum ServerDir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl ServerDir {
    pub(crate) fn path(&self) -> &Path {
        match self {
            ServerDir::Temp(dir) => dir.path(),
            ServerDir::Kept(path) => path,
        }
    }
}

/// The caller's directory (created if missing) or a fresh temporary one.
pub(crate) fn server_dir(kind: &str, kept: Option<&Path>) -> Result<ServerDir> {
    match kept {
        Some(path) => {
            fs::create_dir_all(path).map_err(io_context(format!("creating {path:?}")))?;
            let path = fs::canonicalize(path).map_err(io_context(format!("resolving {path:?}")))?;
            Ok(ServerDir::Kept(path))
        }
        None => server_temp_dir(kind).map(ServerDir::Temp),
    }
}

/// A fixed port if one was asked for, else a free one.
pub(crate) fn chosen_port(fixed: Option<u16>) -> Result<u16> {
    match fixed {
        Some(port) => Ok(port),
        None => free_port(),
    }
}

pub(crate) fn server_temp_dir(kind: &str) -> Result<TempDir> {
    remove_stale_temp_dirs();
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{kind}-{}-", std::process::id()))
        .tempdir()
        .map_err(io_context(format!(
            "creating a temporary directory for {kind} in {:?}",
            std::env::temp_dir()
        )))
}

fn remove_stale_temp_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|entry| entry.ok()) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        // rest = "<kind>-<pid>-<random>"
        let owner_pid = rest
            .split('-')
            .nth(1)
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner_pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            crate::postgres::remove_crash_leftovers(&entry.path().join("data"));
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Sets the permission bits of `path`.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_context(format!("chmod {mode:o} {path:?}")))
}

/// Fails unless every ancestor of `path` lets other users through (mode o+x), which the
/// `postgres` user needs to reach its data directory.
pub(crate) fn ensure_traversable_by_others(path: &Path) -> Result<()> {
    for dir in path.ancestors() {
        let meta = fs::metadata(dir).map_err(io_context(format!("reading {dir:?}")))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(DevstackError::NotTraversable {
                path: PathBuf::from(dir),
            });
        }
    }
    Ok(())
}

/// The lowest port [`free_port_block`] hands out (above the registered ports most
/// servers use by default).
pub const PORT_BLOCK_LOW: u16 = 10_000;

/// The first port of the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`; 32768 when it cannot be read).
pub fn ephemeral_low() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The first port of a block of `n` consecutive ports on 127.0.0.1 that are all free
/// now, below the kernel's ephemeral range ([`ephemeral_low`]), from
/// [`PORT_BLOCK_LOW`] up.
///
/// For a server given `base + i` (`ymera up`'s side ports, a cluster's node ports):
/// the ports after one from [`free_port`] are ephemeral ones, which `connect()` gives
/// every outgoing TCP connection on the machine, and a listener cannot bind a port an
/// established connection holds — the server there crash-loops for as long as that
/// connection lives. Below the ephemeral range neither a connection nor `bind(0)` takes
/// a port. Blocks are aligned and tried from a random one, so two processes picking at
/// once collide only on the same block; this process never hands a block out twice.
pub fn free_port_block(n: u16) -> Result<u16> {
    use std::hash::{BuildHasher as _, Hasher as _};
    static HANDED_OUT: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    const ATTEMPTS: u32 = 1_000;
    let n = n.max(1);
    let high = ephemeral_low().saturating_sub(n);
    if high <= PORT_BLOCK_LOW + n {
        return Err(DevstackError::NoFreePort { attempts: 0 });
    }
    let blocks = (high - PORT_BLOCK_LOW) / n;
    for attempt in 0..ATTEMPTS {
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u32(attempt);
        let start = PORT_BLOCK_LOW + (hasher.finish() % u64::from(blocks)) as u16 * n;
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out
            .iter()
            .any(|(s, len)| start < s + len && *s < start + n)
        {
            continue;
        }
        if (start..start + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            handed_out.push((start, n));
            return Ok(start);
        }
    }
    Err(DevstackError::NoFreePort { attempts: ATTEMPTS })
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
///
/// Ports are never handed out twice in one process, so servers started concurrently do not
/// collide with each other; a collision with another process is still possible, and the
/// server types retry on fresh ports when their listener finds the address in use.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    const ATTEMPTS: u32 = 64;
    for _ in 0..ATTEMPTS {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(io_context("binding 127.0.0.1:0 to find a free port"))?;
        let port = listener
            .local_addr()
            .map_err(io_context("reading the address of a bound socket"))?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(DevstackError::NoFreePort { attempts: ATTEMPTS })
}
