//! Small raw-protocol clients and process checks shared by the tests.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .next()
        .unwrap();
    state != "Z" && state != "X"
}

/// The live direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| {
            fs::read_to_string(format!("/proc/{candidate}/stat")).is_ok_and(|stat| {
                let mut fields = stat[stat.rfind(')').unwrap() + 1..].split_whitespace();
                let state = fields.next().unwrap_or("Z");
                state != "Z" && fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid)
            })
        })
        .collect()
}

/// The real uid of `pid`.
pub fn uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// The `INFO {…}` line a NATS server sends to a new connection.
pub fn nats_info_line(port: u16) -> String {
    let mut line = String::new();
    BufReader::new(connect(port)).read_line(&mut line).unwrap();
    line
}

/// A NATS request over the raw protocol: publishes `payload` to `subject` with a reply
/// inbox and returns the body of the first reply.
pub fn nats_request(port: u16, subject: &str, payload: &str) -> String {
    let mut stream = connect(port);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO "), "greeting: {line}");
    write!(
        stream,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.testkit 1\r\nPUB {subject} _INBOX.testkit {}\r\n{payload}\r\nPING\r\n",
        payload.len()
    )
    .unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("MSG ") {
            let size: usize = line.split_whitespace().last().unwrap().parse().unwrap();
            let mut body = vec![0; size + 2];
            reader.read_exact(&mut body).unwrap();
            body.truncate(size);
            return String::from_utf8(body).unwrap();
        }
        if line.starts_with("PING") {
            stream.write_all(b"PONG\r\n").unwrap();
        }
        assert!(!line.starts_with("-ERR"), "server error: {line}");
        assert!(!line.is_empty(), "connection closed before the reply");
    }
}

/// `GET path` on the NATS monitoring port; returns the status line.
pub fn http_status(port: u16, path: &str) -> String {
    let mut stream = connect(port);
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// Sends one inline Redis command and returns the first reply line.
pub fn redis_command(port: u16, command: &str) -> String {
    let mut stream = connect(port);
    write!(stream, "{command}\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// Runs SQL with psql against `url`; returns trimmed unaligned output, panics on failure.
pub fn psql(bin_dir: &Path, url: &str, sql: &str) -> String {
    let output = Command::new(bin_dir.join("psql"))
        .args([
            "-X",
            "-q",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "psql {url} -c {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
