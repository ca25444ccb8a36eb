//! Servers end with the test process, even when it is SIGKILLed, and not before.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ymera_devstack::{NatsServer, Postgres, Redis, free_port};

use crate::common::{TIMEOUT, children_of, eventually, nats_info_line, pid_alive, redis_command};

const HELPER_ENV: &str = "YMERA_DEVSTACK_LIFECYCLE_HELPER";
const HELPER_TEST: &str = "lifecycle::helper_starts_servers_then_waits_to_be_killed";

#[test]
fn servers_outlive_the_thread_that_started_them() {
    let (nats, redis) = thread::spawn(|| (NatsServer::start().unwrap(), Redis::start().unwrap()))
        .join()
        .unwrap();
    // The parent-death signal fires when the spawning *thread* exits; give it time to.
    thread::sleep(Duration::from_millis(300));

    assert!(nats_info_line(nats.port()).starts_with("INFO {"));
    assert_eq!(redis_command(redis.port(), "PING"), "+PONG");
}

#[test]
fn handles_can_be_shared_between_threads_and_kept_in_statics() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<NatsServer>();
    shareable::<Postgres>();
    shareable::<Redis>();
}

#[test]
fn free_ports_are_distinct() {
    let ports: Vec<u16> = (0..20).map(|_| free_port().unwrap()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
}

/// Kills the helper process if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn servers_die_when_the_test_process_is_killed() {
    let helper = Command::new(std::env::current_exe().unwrap())
        .args([
            HELPER_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut helper = KillOnDrop(helper);
    let stdout = helper.0.stdout.take().unwrap();
    let (lines, pids_line) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test <name> ... " without a newline before the test's output.
            if let Some(pids) = line.split("PIDS ").nth(1) {
                let _ = lines.send(pids.to_owned());
            }
        }
    });
    let line = pids_line
        .recv_timeout(Duration::from_secs(120))
        .expect("the helper process reports its servers");
    let mut pids: Vec<u32> = line
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    let postmaster = pids[2];
    pids.extend(children_of(postmaster));
    assert!(
        pids.len() > 3,
        "PostgreSQL runs background processes: {pids:?}"
    );
    assert!(
        pids.iter().all(|&pid| pid_alive(pid)),
        "all alive before the kill: {pids:?}"
    );

    helper.0.kill().unwrap(); // SIGKILL: no destructor runs in the helper
    helper.0.wait().unwrap();

    assert!(
        eventually(TIMEOUT, || pids.iter().all(|&pid| !pid_alive(pid))),
        "server processes outlived their SIGKILLed test process: {:?}",
        pids.iter()
            .filter(|&&pid| pid_alive(pid))
            .collect::<Vec<_>>()
    );
}

/// Run by `servers_die_when_the_test_process_is_killed` in a child process.
#[test]
#[ignore = "helper process of servers_die_when_the_test_process_is_killed"]
fn helper_starts_servers_then_waits_to_be_killed() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    // Started from a thread that then exits, like a tokio worker or libtest thread.
    let (nats, redis, postgres) = thread::spawn(|| {
        (
            NatsServer::start().unwrap(),
            Redis::start().unwrap(),
            Postgres::start().unwrap(),
        )
    })
    .join()
    .unwrap();
    println!("\nPIDS {} {} {}", nats.pid(), redis.pid(), postgres.pid());
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
