use std::fs;
use std::process::Stdio;

use ymera_devstack::Postgres;

use crate::common::{TIMEOUT, children_of, eventually, pid_alive, psql, running_as_root, uid_of};

#[test]
fn creates_databases_that_serve_queries() {
    let postgres = Postgres::start().unwrap();

    assert_eq!(
        postgres.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", postgres.port())
    );
    let first = postgres.create_database().unwrap();
    let second = postgres.create_database().unwrap();
    assert_ne!(first, second);
    assert_eq!(psql(postgres.bin_dir(), &first, "select 1"), "1");
    assert_eq!(
        psql(postgres.bin_dir(), &second, "select current_database()"),
        second.rsplit('/').next().unwrap()
    );
    assert_eq!(
        psql(postgres.bin_dir(), &postgres.url(), "show fsync"),
        "off"
    );
}

#[test]
fn runs_as_the_postgres_user_when_root() {
    let postgres = Postgres::start().unwrap();
    let uid = uid_of(postgres.pid());
    if running_as_root() {
        assert_ne!(uid, 0, "PostgreSQL must not run as root");
    } else {
        assert_eq!(uid, uid_of(std::process::id()));
    }
}

#[test]
fn kill_then_restart_recovers_committed_data_on_the_same_port() {
    let mut postgres = Postgres::start().unwrap();
    let port = postgres.port();
    let database = postgres.create_database().unwrap();
    psql(
        postgres.bin_dir(),
        &database,
        "create table answers (value int); insert into answers values (42)",
    );

    let postmaster = postgres.pid();
    let backends = children_of(postmaster);
    assert!(
        !backends.is_empty(),
        "a running cluster has background processes"
    );
    postgres.kill().unwrap();
    assert!(!postgres.is_running());
    assert!(!pid_alive(postmaster));
    assert!(
        backends.iter().all(|&pid| !pid_alive(pid)),
        "backends outlived the kill"
    );

    postgres.restart().unwrap();
    assert_eq!(postgres.port(), port);
    assert_eq!(
        psql(postgres.bin_dir(), &database, "select value from answers"),
        "42"
    );
    let log = fs::read_to_string(postgres.log_path()).unwrap();
    assert!(
        log.contains("database system was interrupted"),
        "crash recovery ran: {log}"
    );
}

#[test]
fn stop_is_a_fast_shutdown_even_with_a_busy_client() {
    let mut postgres = Postgres::start().unwrap();
    let mut busy = postgres.client_command("psql");
    busy.args(["-d", "postgres", "-c", "select pg_sleep(600)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut busy = busy.spawn().unwrap();
    let url = postgres.url();
    assert!(eventually(TIMEOUT, || {
        psql(
            postgres.bin_dir(),
            &url,
            "select count(*) from pg_stat_activity where query = 'select pg_sleep(600)'",
        ) == "1"
    }));

    postgres.stop().unwrap();

    assert!(!postgres.is_running());
    let log = fs::read_to_string(postgres.log_path()).unwrap();
    assert!(log.contains("received fast shutdown request"), "{log}");
    assert!(
        !busy.wait().unwrap().success(),
        "the client's connection was closed"
    );
    postgres.restart().unwrap();
    assert_eq!(psql(postgres.bin_dir(), &postgres.url(), "select 1"), "1");
}

#[test]
fn drop_ends_every_process_and_removes_the_data() {
    let postgres = Postgres::start().unwrap();
    let postmaster = postgres.pid();
    let mut processes = children_of(postmaster);
    processes.push(postmaster);
    let data_dir = postgres.data_dir().to_path_buf();

    drop(postgres);

    assert!(
        eventually(TIMEOUT, || processes.iter().all(|&pid| !pid_alive(pid))),
        "PostgreSQL processes outlived the handle"
    );
    assert!(!data_dir.exists());
}
