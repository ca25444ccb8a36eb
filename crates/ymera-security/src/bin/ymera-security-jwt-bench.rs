//! `ymera-security-jwt-bench`: local JWT verification speed, for
//! `ymera bench security` (which runs it as its own process, so its threads measure the verifier alone).
//!
//! Reads one JSON object on stdin:
//! `{"jwks": <security.jwks answer>, "token": "eyJ…", "seconds": 3, "threads": [1, 2]}`
//! and, for each thread count, verifies the token in a tight loop on that
//! many OS threads for `seconds` with [`ymera_security::token::JwksVerifier`]
//! (the same header checks, signature, claims and leeway as the service),
//! then prints one JSON line:
//! `{"results":[{"threads":1,"verifications":…,"seconds":…,"per_second":…,"per_thread_per_second":…,"errors":0,
//! "cpu_seconds":…,"per_cpu_second":…}]}` (`per_cpu_second`: verifications per
//! second of the worker threads' own CPU time, the per-core figure on a shared machine).
//! Exit 64 on bad input, 65 when the token does not verify at all.

use std::io::Read as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Deserialize;
use ymera_security::token::JwksVerifier;

const PROGRAM: &str = "ymera-security-jwt-bench";
const MAX_INPUT: u64 = 1024 * 1024;
const MAX_SECONDS: u64 = 60;
const MAX_THREADS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    jwks: serde_json::Value,
    token: String,
    #[serde(default = "default_seconds")]
    seconds: u64,
    #[serde(default = "default_threads")]
    threads: Vec<usize>,
}

fn default_seconds() -> u64 {
    3
}

fn default_threads() -> Vec<usize> {
    vec![1, 2]
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("{PROGRAM}: {message}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let mut text = String::new();
    if std::io::stdin()
        .take(MAX_INPUT)
        .read_to_string(&mut text)
        .is_err()
    {
        return fail(64, "cannot read stdin");
    }
    let input: Input = match serde_json::from_str(&text) {
        Ok(input) => input,
        Err(err) => return fail(64, &format!("bad input: {err}")),
    };
    if !(1..=MAX_SECONDS).contains(&input.seconds)
        || input.threads.is_empty()
        || input.threads.len() > 8
        || input.threads.iter().any(|t| !(1..=MAX_THREADS).contains(t))
    {
        return fail(64, "seconds must be 1-60, threads 1-8 counts of 1-64");
    }
    let Some(verifier) = JwksVerifier::from_jwks(&input.jwks) else {
        return fail(64, "the JWKS holds no Ed25519 key");
    };
    if let Err(rejection) = verifier.verify(&input.token) {
        return fail(
            65,
            &format!("the token does not verify: {}", rejection.as_str()),
        );
    }
    let mut results = Vec::new();
    for &threads in &input.threads {
        results.push(run(
            &verifier,
            &input.token,
            threads,
            Duration::from_secs(input.seconds),
        ));
    }
    println!("{}", serde_json::json!({ "results": results }));
    ExitCode::SUCCESS
}

fn run(
    verifier: &JwksVerifier,
    token: &str,
    threads: usize,
    length: Duration,
) -> serde_json::Value {
    let started = Instant::now();
    let deadline = started + length;
    let counts: Vec<(u64, u64, Option<u64>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let cpu_start = thread_cpu_ns();
                    let (mut ok, mut failed) = (0u64, 0u64);
                    loop {
                        for _ in 0..64 {
                            match std::hint::black_box(verifier.verify(std::hint::black_box(token)))
                            {
                                Ok(_) => ok += 1,
                                Err(_) => failed += 1,
                            }
                        }
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    let cpu = match (cpu_start, thread_cpu_ns()) {
                        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                        _ => None,
                    };
                    (ok, failed, cpu)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or((0, 0, None)))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
    let ok: u64 = counts.iter().map(|c| c.0).sum();
    let failed: u64 = counts.iter().map(|c| c.1).sum();
    let per_second = ok as f64 / elapsed;
    // On a shared machine a thread gets less than a core: verifications per
    // second of the threads' own CPU time is the per-core figure.
    let cpu_ns: Option<u64> = counts.iter().map(|c| c.2).sum();
    let per_cpu_second = cpu_ns
        .filter(|&ns| ns > 0)
        .map(|ns| ok as f64 / (ns as f64 / 1e9));
    serde_json::json!({
        "threads": threads,
        "verifications": ok,
        "seconds": elapsed,
        "per_second": per_second,
        "per_thread_per_second": per_second / threads as f64,
        "errors": failed,
        "cpu_seconds": cpu_ns.map(|ns| ns as f64 / 1e9),
        "per_cpu_second": per_cpu_second,
    })
}

/// CPU time of the calling thread in ns (`/proc/thread-self/schedstat`,
/// Linux); `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
