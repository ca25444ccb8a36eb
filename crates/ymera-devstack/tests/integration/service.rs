//! Service processes: output to a log file, restart with backoff, stop without restart,
//! an early failure with the log when a service exits before it is healthy.

use std::path::Path;
use std::time::{Duration, Instant};

use ymera_devstack::{Backoff, DevstackError, NatsServer, Service, ServiceOptions};

use crate::common::{TIMEOUT, eventually, pid_alive};

fn shell(name: &str, script: &str) -> ServiceOptions {
    ServiceOptions::new(name, "/bin/sh").arg("-c").arg(script)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn stdout_and_stderr_go_to_the_log_file_and_the_environment_is_passed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/echo.log");
    let mut service = Service::start(
        shell(
            "echo",
            r#"echo "out $GREETING"; echo "err $GREETING" >&2; exec sleep 30"#,
        )
        .env("GREETING", "hello")
        .log_path(&log),
    )
    .unwrap();
    assert_eq!(service.log_path(), log);
    assert!(
        eventually(TIMEOUT, || {
            let text = read(&log);
            text.contains("out hello") && text.contains("err hello")
        }),
        "log: {:?}",
        read(&log)
    );
    let pid = service.pid().expect("running");
    service.stop().unwrap();
    assert!(!pid_alive(pid));
    assert_eq!(service.pid(), None);
}

#[test]
fn without_a_log_path_the_log_is_in_a_temporary_directory_removed_on_drop() {
    let service = Service::start(shell("quiet", "echo here; exec sleep 30")).unwrap();
    let log = service.log_path().to_path_buf();
    assert!(eventually(TIMEOUT, || read(&log).contains("here")));
    drop(service);
    assert!(!log.exists());
}

#[test]
fn a_crashing_service_is_restarted_with_growing_delays() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("crash.log");
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        reset_after: Duration::from_secs(60),
    };
    // Each run writes when it started (seconds, nanoseconds) and crashes at once.
    let mut service = Service::start(
        shell("crasher", "echo start $(date +%s.%N); exit 3")
            .log_path(&log)
            .restart(backoff),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || service.restarts() >= 5),
        "restarts: {}",
        service.restarts()
    );
    service.stop().unwrap();
    let restarts = service.restarts();
    let starts: Vec<f64> = read(&log)
        .lines()
        .filter_map(|line| line.strip_prefix("start ")?.parse().ok())
        .collect();
    assert!(starts.len() >= 6, "{starts:?}");
    // Delays 100, 200, 400, 400 … ms: each gap is at least its delay (never a hot loop).
    for (i, gap) in starts.windows(2).map(|w| w[1] - w[0]).enumerate() {
        let delay = (0.1 * 2f64.powi(i32::try_from(i).unwrap())).min(0.4);
        assert!(
            gap >= delay - 0.01,
            "gap {i} was {gap:.3} s, delay {delay} s: {starts:?}"
        );
    }
    // Stopped: nothing is started again.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(service.restarts(), restarts);
    assert_eq!(service.pid(), None);
}

#[test]
fn a_stopped_service_is_not_restarted() {
    let mut service = Service::start(shell("sleeper", "exec sleep 30").restart(Backoff {
        initial: Duration::from_millis(50),
        ..Backoff::default()
    }))
    .unwrap();
    let pid = service.pid().unwrap();
    let started = Instant::now();
    service.stop().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM ends sleep"
    );
    assert!(!pid_alive(pid));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(service.restarts(), 0);
    assert_eq!(service.pid(), None);
}

#[test]
fn a_killed_service_comes_back_with_a_new_pid() {
    let service = Service::start(shell("victim", "exec sleep 30").restart(Backoff {
        initial: Duration::from_millis(50),
        ..Backoff::default()
    }))
    .unwrap();
    let first = service.pid().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &first.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(eventually(TIMEOUT, || service
        .pid()
        .is_some_and(|pid| pid != first)));
    assert_eq!(service.restarts(), 1);
}

#[tokio::test]
async fn waiting_for_health_fails_at_once_with_the_log_when_the_service_exits() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let service =
        Service::start(shell("broken", "echo 'NATS_URL is malformed' >&2; exit 64")).unwrap();
    let started = Instant::now();
    let err = service
        .wait_healthy(&client, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(err, DevstackError::ExitedDuringStart { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("exit status: 64"), "{message}");
    assert!(message.contains("NATS_URL is malformed"), "{message}");
}

#[tokio::test]
async fn waiting_for_health_times_out_naming_the_service() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let service = Service::start(shell("mute", "echo waiting; exec sleep 30")).unwrap();
    let err = service
        .wait_healthy(&client, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, DevstackError::NotHealthy { .. }), "{err}");
    assert!(err.to_string().contains("mute.health"), "{err}");
    assert!(service.is_running());
}
