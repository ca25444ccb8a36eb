//! `ymera up --detach` brings up nats-server, PostgreSQL, Redis and every
//! service binary built beside `ymera`; `ymera health` sees them healthy; a
//! service killed with SIGKILL is restarted by the supervisor; `ymera down`
//! stops everything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ymera_testkit::free_port;

const YMERA: &str = env!("CARGO_BIN_EXE_ymera");
const SERVICES: [&str; 6] = [
    "communication",
    "config",
    "drafting",
    "code-analysis",
    "security",
    "gateway",
];

fn built_services() -> Vec<&'static str> {
    let dir = Path::new(YMERA).parent().unwrap();
    SERVICES
        .into_iter()
        .filter(|s| dir.join(format!("ymera-{s}")).is_file())
        .collect()
}

pub fn ymera(args: &[&str]) -> Output {
    Command::new(YMERA)
        .args(args)
        .env_remove("NATS_URL")
        .env_remove("YMERA_API_KEY")
        .env_remove("YMERA_TOKEN")
        .output()
        .unwrap()
}

fn health(nats_url: &str, expect: usize) -> (bool, serde_json::Value) {
    let out = ymera(&[
        "--nats-url",
        nats_url,
        "--json",
        "health",
        "--expect",
        &expect.to_string(),
    ]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json)
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A stack started as a user starts one — `ymera up --detach` on free ports, state in a
/// temporary directory — and stopped with `ymera down` when dropped (or by [`LiveStack::down`]).
pub struct LiveStack {
    pub dir: tempfile::TempDir,
    pub nats_url: String,
    pub nats_port: u16,
    /// The services started (the wanted ones that are built).
    pub services: Vec<&'static str>,
    stopped: bool,
}

impl LiveStack {
    /// `ymera up --detach [--services …] [extra …]` (`only` empty: every built service);
    /// returns once `ymera up` has; [`LiveStack::wait_healthy`] waits for the services.
    pub fn up(only: &[&'static str], extra: &[&str]) -> LiveStack {
        let built = built_services();
        let services: Vec<&'static str> = if only.is_empty() {
            built
        } else {
            for wanted in only {
                assert!(
                    built.contains(wanted),
                    "ymera-{wanted} is not built beside {YMERA} (cargo build --workspace --bins)"
                );
            }
            only.to_vec()
        };
        assert!(
            !services.is_empty(),
            "no service binary built beside {YMERA}"
        );
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<String> = (0..5).map(|_| free_port().unwrap().to_string()).collect();
        let nats_url = format!("nats://127.0.0.1:{}", ports[0]);
        let list = services.join(",");
        let mut args = vec![
            "up",
            "--detach",
            "--dir",
            dir.path().to_str().unwrap(),
            "--nats-port",
            &ports[0],
            "--nats-monitor-port",
            &ports[1],
            "--postgres-port",
            &ports[2],
            "--redis-port",
            &ports[3],
            "--http-base-port",
            &ports[4],
        ];
        if !only.is_empty() {
            args.extend(["--services", &list]);
        }
        args.extend(extra);
        let up = ymera(&args);
        let stack = LiveStack {
            nats_port: ports[0].parse().unwrap(),
            dir,
            nats_url,
            services,
            stopped: false,
        };
        assert!(
            up.status.success(),
            "up failed: {}\n{}",
            String::from_utf8_lossy(&up.stderr),
            stack.log()
        );
        stack
    }

    /// Waits until `ymera health` sees every started service healthy; its report.
    pub fn wait_healthy(&self) -> serde_json::Value {
        wait_for("every service healthy", Duration::from_secs(90), || {
            let (ok, json) = health(&self.nats_url, self.services.len());
            ok.then_some(json)
        })
    }

    /// Whether `ymera health` sees every started service healthy now.
    pub fn healthy(&self) -> bool {
        health(&self.nats_url, self.services.len()).0
    }

    /// The `ymera` binary against this stack: `--nats-url`, and the stack's development
    /// admin key found the way a user's CLI finds it (`YMERA_HOME`).
    pub fn ymera(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The `ymera` command of [`LiveStack::ymera`], not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(YMERA);
        command
            .arg("--nats-url")
            .arg(&self.nats_url)
            .args(args)
            .env_remove("NATS_URL")
            .env_remove("YMERA_API_KEY")
            .env_remove("YMERA_TOKEN")
            .env("YMERA_HOME", self.dir.path());
        command
    }

    /// `<dir>/logs/stack.log`.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("logs/stack.log"))
    }

    /// `<dir>/logs/<name>.log` and the like: every log file, for a failing assertion.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = read(&entry.path());
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            all.push_str(&format!("== {}\n", entry.path().display()));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }

    /// `ymera down`.
    pub fn down(&mut self) -> Output {
        self.stopped = true;
        ymera(&["down", "--dir", self.dir.path().to_str().unwrap()])
    }
}

impl Drop for LiveStack {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.down();
        }
    }
}

/// PIDs of processes running `binary` whose environment has `NATS_URL=url`.
fn pids_of(binary: &Path, nats_url: &str) -> Vec<u32> {
    let needle = format!("NATS_URL={nats_url}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

#[test]
fn up_health_restart_down() {
    let mut stack = LiveStack::up(&[], &[]);
    let services = stack.services.clone();
    let nats_url = stack.nats_url.clone();
    let report = stack.wait_healthy();
    let mut names: Vec<&str> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["service"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected = services.clone();
    expected.sort();
    assert_eq!(names, expected, "{report}");

    // `ymera health | head -0`: the reader is gone before the table is printed; the
    // command ends quietly instead of panicking on the closed stdout.
    {
        use std::process::Stdio;
        let mut child = stack
            .command(&["health"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    }

    if services.contains(&"security") {
        use std::os::unix::fs::PermissionsExt;
        let key = stack.dir.path().join("admin.key");
        let mode = std::fs::metadata(&key)
            .expect("the development admin key is written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "admin.key must be private");
        assert!(read(&key).starts_with("ymk_"));

        // Keys and tokens from the CLI: create, issue, verify, revoke.
        let admin = read(&key).trim().to_owned();
        let run = |args: &[&str]| {
            let out = ymera(&[&["--nats-url", &nats_url, "--json"], args].concat());
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let created = run(&[
            "keys",
            "create",
            "--api-key",
            &admin,
            "--owner",
            "ci",
            "-p",
            "config:read",
        ]);
        let ci_key = created["key"].as_str().unwrap().to_owned();
        let issued = run(&["token", "issue", "--api-key", &ci_key, "--ttl", "300"]);
        let token = issued["token"].as_str().unwrap().to_owned();
        assert_eq!(run(&["token", "verify", &token])["claims"]["sub"], "ci");
        assert_eq!(run(&["token", "revoke", &token])["revoked"], true);
        let refused = ymera(&["--nats-url", &nats_url, "token", "verify", &token]);
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("revoked_token"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }

    // Crash one service: the supervisor restarts it and it is healthy again.
    let victim = services[0];
    let binary = PathBuf::from(YMERA).with_file_name(format!("ymera-{victim}"));
    let before = pids_of(&binary, &nats_url);
    assert_eq!(before.len(), 1, "one {victim} process");
    assert!(
        Command::new("kill")
            .args(["-KILL", &before[0].to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for(
        "the crashed service to come back",
        Duration::from_secs(60),
        || {
            let now = pids_of(&binary, &nats_url);
            (stack.healthy() && now.len() == 1 && now[0] != before[0]).then_some(())
        },
    );
    assert!(
        stack.log().contains(&format!("{victim}: exited")),
        "{}",
        stack.log()
    );

    let down = stack.down();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for service in &services {
        let binary = PathBuf::from(YMERA).with_file_name(format!("ymera-{service}"));
        assert!(
            pids_of(&binary, &nats_url).is_empty(),
            "{service} still running after down"
        );
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", stack.nats_port)).is_err(),
        "nats-server still listening"
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
