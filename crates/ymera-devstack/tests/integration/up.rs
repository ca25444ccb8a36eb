//! Acceptance: a `kill -9` of a running `ymera up` leaves no service, nats-server,
//! postgres or redis process behind after 5 s.
//!
//! Runs the built `ymera` binary (beside this test in `target/<profile>/`; the workspace
//! build makes it, as it makes the service binaries the e2e suite runs).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ymera_devstack::{
    HEALTH_TIMEOUT, StackInfo, beside_current_exe, children_of, pid_alive, wait_healthy,
};

/// Every live process below `pid`, depth first.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut pending = children_of(pid);
    while let Some(child) = pending.pop() {
        found.push(child);
        pending.extend(children_of(child));
    }
    found
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// A base port with the next `count - 1` ports free too (services listen on base + i),
/// below the ephemeral range ([`ymera_devstack::free_port_block`]).
pub fn free_port_range(count: u16) -> u16 {
    ymera_devstack::free_port_block(count).unwrap()
}

/// Kills whatever the test leaves behind if it fails half-way.
struct Cleanup {
    up: Child,
    pids: Vec<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.up.kill();
        let _ = self.up.wait();
        for pid in &self.pids {
            if pid_alive(*pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_ymera_up_leaves_no_process_behind() {
    let ymera = beside_current_exe("ymera").unwrap_or_else(|err| {
        panic!(
            "{err}: this test runs the `ymera` binary that `cargo build --workspace --bins` makes"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL runs as the `postgres` user when the tests run as root: it must reach its dir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("stack");
    let output = dir.path().join("up.out");
    let port = || free_port_range(1).to_string();
    let up = Command::new(&ymera)
        .arg("up")
        .arg("--dir")
        .arg(&state)
        .args(["--nats-port", &port()])
        .args(["--nats-monitor-port", &port()])
        .args(["--postgres-port", &port()])
        .args(["--redis-port", &port()])
        .args(["--http-base-port", &free_port_range(5).to_string()])
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(std::fs::File::create(dir.path().join("up.err")).unwrap())
        .spawn()
        .unwrap();
    let up_pid = up.id();
    let mut cleanup = Cleanup {
        up,
        pids: Vec::new(),
    };
    let report = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            read(&output),
            read(&dir.path().join("up.err"))
        )
    };

    // Up: stack.json written, then every service it started answers its health endpoint.
    let deadline = Instant::now() + Duration::from_secs(180);
    let info = loop {
        if let Some(info) = StackInfo::read(&state) {
            break info;
        }
        assert!(
            cleanup.up.try_wait().unwrap().is_none(),
            "ymera up exited before it was up\n{}",
            report()
        );
        assert!(
            Instant::now() < deadline,
            "ymera up never wrote stack.json\n{}",
            report()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(info.pid, up_pid);
    assert!(
        !info.services.is_empty(),
        "no service binary was found\n{}",
        report()
    );
    let client = async_nats::connect(&info.nats_url).await.unwrap();
    for (service, _) in &info.services {
        wait_healthy(&client, service, HEALTH_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("{err}\n{}", report()));
    }
    drop(client);

    // Everything below `ymera up`: setpriv-exec'd servers and services, PostgreSQL's backends.
    let pids = descendants(up_pid);
    cleanup.pids.clone_from(&pids);
    for (name, pid) in &info.pids {
        assert!(
            pids.contains(pid),
            "{name} (pid {pid}) is not a child of ymera up: {pids:?}"
        );
    }
    for server in ["nats-server", "postgres", "redis-server"] {
        assert!(
            info.pids.iter().any(|(name, _)| name == server),
            "{server} missing from {:?}",
            info.pids
        );
    }

    assert!(
        Command::new("kill")
            .args(["-KILL", &up_pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    cleanup.up.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let survivors = loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|&pid| pid_alive(pid)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            break alive;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let described: Vec<String> = survivors
        .iter()
        .map(|&pid| format!("{pid}: {}", command_line(pid)))
        .collect();
    assert!(
        survivors.is_empty(),
        "still running 5 s after kill -9 of ymera up:\n{}",
        described.join("\n")
    );
}
