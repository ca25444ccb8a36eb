//! `ymera bench security`: in one run, beside a raw NATS request/reply echo,
//!
//! - `security.authorize` with an API key (and with a Bearer JWT): sequential
//!   latency and closed-loop throughput, then an open-loop phase offering a
//!   fixed rate (default 5,000 requests/s) with latency measured from each
//!   request's scheduled send time (so a service that falls behind shows it);
//! - local JWT verification: a token from `security.tokens.issue` verified
//!   against the `security.jwks` keys in a tight loop on one and two threads,
//!   by `ymera-security-jwt-bench` (built beside `ymera`; it runs
//!   `ymera_security::token::JwksVerifier`, the security service's own checks);
//! - timing equality of refused API keys: wrong secret on a real key id,
//!   unknown key id, bad checksum and truncated key, interleaved;
//! - a secured endpoint of another service (`config.get`, `config:read`,
//!   `YMERA_AUTH=required`) called with the Bearer JWT (verified by the
//!   config process against its cached JWKS) and with the API key (asked of
//!   `security.authorize`, grant cached 10 s), when a config manager runs
//!   (always on `--private`).
//!
//! Targets (issue #5): authorize P99 ≤ 5 ms at ≥ 5,000 requests/s; local JWT
//! verification ≥ 20,000/s per core.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use ymera_core::client::{Credential, ServiceClient};
use ymera_security::apikey::{KEY_ID_LEN, PREFIX, SECRET_LEN, with_checksum};

use crate::bench::{
    BenchOptions, BenchResult, finish_ratios, measure, measure_raw_echo, new_histogram, report,
};
use crate::context::Context;
use crate::private_stack::PrivateStack;

/// The authorize target: P99 at most this (µs) …
const AUTHORIZE_P99_TARGET_US: u64 = 5_000;
/// … while this many requests per second are offered.
const AUTHORIZE_RATE_TARGET: u64 = 5_000;
/// Local verifications per second on one core.
const VERIFY_TARGET_PER_S: f64 = 20_000.0;
/// Largest max/min ratio of the refused-key medians called "equal" here.
const TIMING_RATIO_LIMIT: f64 = 1.10;
/// Requests in flight at most in the paced phase (beyond: counted as errors).
const MAX_IN_FLIGHT: usize = 20_000;
const PERMISSION: &str = "config:read";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Options of `ymera bench security`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: BenchOptions,
    /// Requests per second offered in the paced (open-loop) authorize phase.
    #[arg(long, default_value_t = AUTHORIZE_RATE_TARGET)]
    pub rate: u64,
    /// Length of the paced phase, in seconds.
    #[arg(long, default_value_t = 5)]
    pub paced_seconds: u64,
    /// Length of each local JWT verification run, in seconds.
    #[arg(long, default_value_t = 3)]
    pub verify_seconds: u64,
    /// Samples per refused-key case in the timing-equality phase.
    #[arg(long, default_value_t = 2_000)]
    pub timing_samples: u64,
}

/// The open-loop phase.
#[derive(Debug, Serialize)]
struct Paced {
    offered_per_s: u64,
    seconds: u64,
    sent: u64,
    ok: u64,
    errors: u64,
    achieved_per_s: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

/// One refused-key case of the timing phase.
#[derive(Debug, Serialize)]
struct TimingCase {
    case: &'static str,
    samples: u64,
    p50_us: u64,
    p99_us: u64,
    unexpected_answers: u64,
}

/// Runs the benchmark.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=100_000).contains(&args.rate) && (1..=60).contains(&args.paced_seconds),
        "--rate must be 1-100000 and --paced-seconds 1-60"
    );
    anyhow::ensure!(
        (1..=60).contains(&args.verify_seconds) && (1..=100_000).contains(&args.timing_samples),
        "--verify-seconds must be 1-60 and --timing-samples 1-100000"
    );
    let options = args.options.clone();
    let key_file = std::env::temp_dir().join(format!(
        "ymera-bench-security-{}/admin.key",
        uuid::Uuid::now_v7().simple()
    ));
    let key_file_text = key_file.display().to_string();
    let stack = if options.private {
        Some(
            PrivateStack::start(
                &["security", "config"],
                &[
                    ("YMERA_BOOTSTRAP_ADMIN_KEY", key_file_text.as_str()),
                    ("YMERA_AUTH", "required"),
                ],
            )
            .await?,
        )
    } else {
        None
    };
    let result = bench(&args, ctx, stack.as_ref(), &key_file).await;
    drop(stack);
    if let Some(dir) = key_file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn bench(
    args: &Args,
    ctx: &Context,
    stack: Option<&PrivateStack>,
    key_file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let options = &args.options;
    let nats = crate::bench::connect(&crate::bench::stack_url(stack, ctx)).await?;
    let admin = match stack {
        Some(_) => Some(Credential::ApiKey(
            std::fs::read_to_string(key_file)
                .context("reading the bootstrapped admin key")?
                .trim()
                .to_owned(),
        )),
        None => ctx.credential(),
    };
    let plain = ServiceClient::new(nats.clone()).with_timeout(Duration::from_secs(10));
    let admin_client = plain.clone().with_credential(admin);
    let created: Value = admin_client
        .request(
            "security.keys.create",
            &json!({"owner": "bench", "permissions": [PERMISSION], "expires_in_days": 1,
                    "description": "ymera bench security"}),
        )
        .await
        .context("creating the benchmark key (needs security:admin)")?;
    let key = created["key"]
        .as_str()
        .context("keys.create answered without a key")?
        .to_owned();
    let key_id = created["key_id"].as_str().unwrap_or_default().to_owned();
    let issued: Value = plain
        .clone()
        .with_credential(Some(Credential::ApiKey(key.clone())))
        .request("security.tokens.issue", &json!({"ttl_seconds": 3600}))
        .await
        .context("security.tokens.issue")?;
    let token = issued["token"]
        .as_str()
        .context("tokens.issue answered without a token")?
        .to_owned();
    let jwks: Value = plain.request("security.jwks", &json!({})).await?;

    // a. Baseline and b. closed-loop authorize.
    let mut results = vec![measure_raw_echo(&nats, options).await?];
    let by_key = authorize_body(&key);
    results.push(
        measure(
            "security.authorize (API key)",
            options,
            authorize_call(plain.clone(), by_key.clone()),
        )
        .await,
    );
    results.push(
        measure(
            "security.authorize (Bearer JWT)",
            options,
            authorize_call(plain.clone(), authorize_body(&format!("Bearer {token}"))),
        )
        .await,
    );
    // e. A secured endpoint of another service, both credentials.
    if secured_endpoint_ready(&admin_client).await {
        for (label, credential) in [
            (
                "config.get secured (Bearer, verified locally)",
                Credential::Bearer(token.clone()),
            ),
            (
                "config.get secured (API key, grant cached)",
                Credential::ApiKey(key.clone()),
            ),
        ] {
            let client = plain.clone().with_credential(Some(credential));
            results.push(
                measure(label, options, move || {
                    let client = client.clone();
                    async move {
                        let _: Value = client
                            .request("config.get", &json!({"agent": SECURED_AGENT}))
                            .await?;
                        Ok(())
                    }
                })
                .await,
            );
        }
    }
    finish_ratios(&mut results);

    // b. Open loop at the target rate.
    let paced = paced(&plain, by_key, args.rate, args.paced_seconds).await;

    // c. Local JWT verification.
    let local = local_verification(&jwks, &token, args.verify_seconds).await;

    // d. Timing equality of refused keys.
    let timing = timing_equality(&plain, &key, args.timing_samples).await?;

    // Leave no usable key behind on a shared stack.
    if !key_id.is_empty() {
        let _: Result<Value, _> = admin_client
            .request("security.keys.revoke", &json!({ "key_id": key_id }))
            .await;
    }
    print(ctx, args, &results, &paced, &local, &timing)?;
    Ok(ExitCode::SUCCESS)
}

/// The config document the secured-endpoint rows read.
const SECURED_AGENT: &str = "bench-secured";

/// Writes the document the secured-endpoint rows read; false (rows skipped)
/// when no config manager answers. Waits long enough for the config
/// process to have loaded the JWKS and the deny-list (it retries every
/// second until the security service answers).
async fn secured_endpoint_ready(admin: &ServiceClient) -> bool {
    let written: Result<Value, _> = admin
        .request(
            "config.set",
            &json!({"agent": SECURED_AGENT, "environment": "base", "config": {"probe": true}}),
        )
        .await;
    if let Err(err) = written {
        eprintln!("secured endpoint rows skipped: config.set: {err}");
        return false;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    true
}

fn authorize_body(credential: &str) -> Bytes {
    Bytes::from(
        json!({"credential": credential, "permission": PERMISSION})
            .to_string()
            .into_bytes(),
    )
}

/// One authorize call that must be granted.
fn authorize_call(
    client: ServiceClient,
    body: Bytes,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
+ Send
+ Sync
+ 'static {
    move || {
        let (client, body) = (client.clone(), body.clone());
        Box::pin(async move {
            let reply = client
                .request_bytes("security.authorize", body)
                .await
                .map_err(anyhow::Error::from)?;
            granted(&reply)
        })
    }
}

fn granted(reply: &[u8]) -> anyhow::Result<()> {
    let answer: Value = serde_json::from_slice(reply)?;
    anyhow::ensure!(
        answer["allowed"] == Value::Bool(true),
        "refused: {}",
        answer["reason"]
    );
    Ok(())
}

/// Offers `rate` requests/s for `seconds`, open loop: request i is due at
/// start + i/rate whatever happened to the others; its latency runs from
/// that due time to its reply.
async fn paced(client: &ServiceClient, body: Bytes, rate: u64, seconds: u64) -> Paced {
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, bool)>();
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_message(format!("security.authorize paced at {rate}/s"));
    let mut sent = 0u64;
    let mut overload = 0u64;
    while sent < total {
        let now = tokio::time::Instant::now();
        // Everything due by now goes out (timer ticks are ~1 ms).
        while sent < total {
            let due = started + interval.mul_f64(sent as f64);
            if due > now {
                break;
            }
            sent += 1;
            if in_flight.load(std::sync::atomic::Ordering::Relaxed) >= MAX_IN_FLIGHT {
                overload += 1;
                continue;
            }
            in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (client, body, tx, in_flight) =
                (client.clone(), body.clone(), tx.clone(), in_flight.clone());
            tokio::spawn(async move {
                let ok = match client.request_bytes("security.authorize", body).await {
                    Ok(reply) => granted(&reply).is_ok(),
                    Err(_) => false,
                };
                let latency = due.elapsed().as_micros().max(1) as u64;
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let _ = tx.send((latency, ok));
            });
        }
        bar.set_position(sent);
        if sent < total {
            tokio::time::sleep_until(started + interval.mul_f64(sent as f64)).await;
        }
    }
    drop(tx);
    let mut histogram = new_histogram();
    let (mut ok, mut errors) = (0u64, overload);
    let mut last = started;
    while let Some((latency, success)) = rx.recv().await {
        let _ = histogram.record(latency);
        if success {
            ok += 1;
        } else {
            errors += 1;
        }
        last = tokio::time::Instant::now();
    }
    bar.finish_and_clear();
    let span = last
        .duration_since(started)
        .as_secs_f64()
        .max(seconds as f64);
    Paced {
        offered_per_s: rate,
        seconds,
        sent: total,
        ok,
        errors,
        achieved_per_s: ok as f64 / span,
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
    }
}

/// Runs `ymera-security-jwt-bench` (beside this binary) on one and two
/// threads; Err text when it cannot.
async fn local_verification(jwks: &Value, token: &str, seconds: u64) -> Result<Value, String> {
    let path = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("ymera-security-jwt-bench");
    if !path.is_file() {
        return Err(format!(
            "{} is not built (cargo build --release -p ymera-security)",
            path.display()
        ));
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("local JWT verification (1 and 2 threads)");
    spinner.enable_steady_tick(Duration::from_millis(200));
    let mut child = tokio::process::Command::new(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", path.display()))?;
    let input = json!({"jwks": jwks, "token": token, "seconds": seconds, "threads": [1, 2]});
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.to_string().as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let output = tokio::time::timeout(
        Duration::from_secs(2 * seconds + 30),
        child.wait_with_output(),
    )
    .await
    .map_err(|_| "the verification run did not finish".to_owned())?
    .map_err(|e| e.to_string())?;
    spinner.finish_and_clear();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("unreadable result: {e}"))
}

/// Refused keys of four kinds, interleaved (the order rotates every round
/// so drift and ordering effects spread evenly).
async fn timing_equality(
    client: &ServiceClient,
    key: &str,
    samples: u64,
) -> anyhow::Result<Vec<TimingCase>> {
    let real_id = key
        .get(4..16)
        .context("the benchmark key is not ymk_<12>_…")?;
    let cases: [(&'static str, String); 4] = [
        (
            "wrong secret, real key id",
            with_checksum(&format!("{PREFIX}{real_id}_{}", random_base62(SECRET_LEN))),
        ),
        (
            "unknown key id",
            with_checksum(&format!(
                "{PREFIX}{}_{}",
                random_base62(KEY_ID_LEN),
                random_base62(SECRET_LEN)
            )),
        ),
        ("bad checksum", {
            let mut k = key[..key.len() - 1].to_owned();
            k.push(if key.ends_with('0') { '1' } else { '0' });
            k
        }),
        ("truncated key", key[..key.len() - 10].to_owned()),
    ];
    let bodies: Vec<Bytes> = cases.iter().map(|(_, k)| authorize_body(k)).collect();
    let mut histograms: Vec<_> = cases.iter().map(|_| new_histogram()).collect();
    let mut unexpected = [0u64; 4];
    let bar = indicatif::ProgressBar::new(samples);
    bar.set_message("timing equality of refused keys");
    // Warm-up, unrecorded.
    for body in bodies.iter().cycle().take(200) {
        let _ = client
            .request_bytes("security.authorize", body.clone())
            .await;
    }
    for round in 0..samples {
        for offset in 0..4 {
            let i = (offset + round as usize) % 4;
            let started = Instant::now();
            let reply = client
                .request_bytes("security.authorize", bodies[i].clone())
                .await;
            let _ = histograms[i].record(started.elapsed().as_micros().max(1) as u64);
            let refused_alike = reply
                .ok()
                .and_then(|r| serde_json::from_slice::<Value>(&r).ok())
                .is_some_and(|v| {
                    v["allowed"] == Value::Bool(false) && v["reason"] == "invalid_api_key"
                });
            if !refused_alike {
                unexpected[i] += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(cases
        .iter()
        .zip(histograms)
        .zip(unexpected)
        .map(|(((case, _), h), unexpected_answers)| TimingCase {
            case,
            samples: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            unexpected_answers,
        })
        .collect())
}

fn random_base62(len: usize) -> String {
    let alphabet = BASE62.len();
    (0..len)
        .map(|_| char::from(BASE62[rand_index(alphabet)]))
        .collect()
}

fn rand_index(n: usize) -> usize {
    use std::hash::{BuildHasher as _, Hasher as _};
    // Not for secrets: only to make keys that cannot exist. Each RandomState
    // has fresh SipHash keys (randomly seeded per thread, then stepped).
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(n);
    (hasher.finish() % n as u64) as usize
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn print(
    ctx: &Context,
    args: &Args,
    results: &[BenchResult],
    paced: &Paced,
    local: &Result<Value, String>,
    timing: &[TimingCase],
) -> anyhow::Result<()> {
    // Per core: verifications per second of the thread's own CPU time (the
    // machine may be shared), else per second of wall time.
    let one_thread = local.as_ref().ok().and_then(|v| {
        let first = v["results"].as_array()?.first()?;
        first["per_cpu_second"]
            .as_f64()
            .or_else(|| first["per_second"].as_f64())
    });
    let medians: Vec<u64> = timing.iter().map(|t| t.p50_us).collect();
    let ratio = match (medians.iter().max(), medians.iter().min()) {
        (Some(&max), Some(&min)) if min > 0 => max as f64 / min as f64,
        _ => f64::NAN,
    };
    let unexpected: u64 = timing.iter().map(|t| t.unexpected_answers).sum();
    let paced_ok = paced.errors == 0
        && paced.p99_us <= AUTHORIZE_P99_TARGET_US
        && paced.offered_per_s >= AUTHORIZE_RATE_TARGET
        && paced.achieved_per_s >= 0.99 * paced.offered_per_s as f64;
    let verify_ok = one_thread.is_some_and(|v| v >= VERIFY_TARGET_PER_S);
    let timing_ok = unexpected == 0 && ratio <= TIMING_RATIO_LIMIT;
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "bench": "security",
                "results": results,
                "authorize_paced": paced,
                "local_jwt_verification": match local { Ok(v) => v.clone(), Err(e) => json!({"error": e}) },
                "timing_equality": {"cases": timing, "median_ratio_max_min": ratio},
                "verdicts": {
                    "authorize_p99_at_rate": verdict(paced_ok),
                    "local_jwt_per_core": verdict(verify_ok),
                    "refused_key_timing": verdict(timing_ok),
                },
            }))?
        );
        return Ok(());
    }
    report(ctx, "security", results)?;
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "security.authorize paced (open loop, latency from the scheduled send): offered {}/s for {} s, \
         {} sent, {} ok, {} errors, achieved {:.0}/s; p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        paced.offered_per_s,
        paced.seconds,
        paced.sent,
        paced.ok,
        paced.errors,
        paced.achieved_per_s,
        ms(paced.p50_us),
        ms(paced.p90_us),
        ms(paced.p99_us),
        ms(paced.p999_us),
        ms(paced.max_us)
    );
    match local {
        Ok(value) => {
            for run in value["results"].as_array().into_iter().flatten() {
                println!(
                    "local JWT verification (JwksVerifier, EdDSA, {} s), {} thread(s): {:.0}/s total, {:.0}/s per thread, \
                     {:.0}/s per CPU-second ({:.2} CPU-s used), {} errors",
                    args.verify_seconds,
                    run["threads"],
                    run["per_second"].as_f64().unwrap_or_default(),
                    run["per_thread_per_second"].as_f64().unwrap_or_default(),
                    run["per_cpu_second"].as_f64().unwrap_or_default(),
                    run["cpu_seconds"].as_f64().unwrap_or_default(),
                    run["errors"]
                );
            }
        }
        Err(err) => println!("local JWT verification: not measured: {err}"),
    }
    println!(
        "refused-key timing ({} interleaved rounds; every case must answer invalid_api_key):",
        args.timing_samples
    );
    for case in timing {
        println!(
            "  {:<28} p50 {:>7.3} ms  p99 {:>7.3} ms  unexpected answers {}",
            case.case,
            ms(case.p50_us),
            ms(case.p99_us),
            case.unexpected_answers
        );
    }
    println!(
        "  max/min median ratio {ratio:.3} (one code path: SecurityState::check_api_key; see crates/ymera-security/README.md)"
    );
    println!(
        "targets: authorize P99 ≤ 5 ms at ≥ {AUTHORIZE_RATE_TARGET}/s: {}; local JWT verification ≥ 20,000/s per core (per CPU-second): {}; \
         refused-key medians within {:.0} %: {}",
        verdict(paced_ok),
        verdict(verify_ok),
        (TIMING_RATIO_LIMIT - 1.0) * 100.0,
        verdict(timing_ok)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed() {
        let body = format!(
            "{PREFIX}{}_{}",
            random_base62(KEY_ID_LEN),
            random_base62(SECRET_LEN)
        );
        let key = with_checksum(&body);
        assert_eq!(key.len(), 55);
        assert!(key.starts_with("ymk_"));
        assert!(ymera_security::apikey::looks_like_key(&key));
    }
}
