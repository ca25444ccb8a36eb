//! Part 2: collaborative editing. N sessions × M simulated editors type at
//! a fixed rate through `drafting.collab.update`; broadcast latency is edit
//! sent → update received by each other editor; afterwards every session
//! must have converged on the text the service committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use ymera_core::client::{Credential, ServiceClient};

use super::document::Rng;
use super::editor::{Broadcast, Editor, Pending, apply_b64, doc_text, key_of, local_edit, new_doc};
use super::{Args, Verdict, result_from};
use crate::bench::{BenchResult, new_histogram, progress, report};
use crate::context::Context;

/// Target: broadcast P99.
const BROADCAST_P99_TARGET_US: u64 = 50_000;

#[derive(Debug, Clone, Serialize)]
pub(super) struct CollabReport {
    sessions: usize,
    editors_per_session: usize,
    edit_rate_per_editor: f64,
    edit_seconds: u64,
    edits_sent: u64,
    edit_errors: u64,
    broadcasts_expected: u64,
    broadcasts_received: u64,
    broadcast: BenchResult,
    update_request: BenchResult,
    sessions_converged: usize,
    sessions_matching_committed: usize,
    divergent_examples: Vec<String>,
    pub(super) verdicts: Vec<Verdict>,
}

pub(super) async fn bench_collab(
    args: &Args,
    ctx: &Context,
    url: &str,
    credential: Option<Credential>,
) -> anyhow::Result<CollabReport> {
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut conns = Vec::new();
    for _ in 0..args.connections {
        let nats = async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 16)
            .connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        conns.push(nats);
    }
    let clients: Vec<ServiceClient> = conns
        .iter()
        .map(|n| {
            ServiceClient::new(n.clone())
                .with_credential(credential.clone())
                .with_timeout(Duration::from_secs(10))
        })
        .collect();
    let control = clients
        .first()
        .cloned()
        .context("no NATS connection for the editors")?;

    // Drafts.
    let drafts: Vec<String> = (0..args.sessions)
        .map(|i| format!("bench-collab-{}-{i}", &run_id[..12]))
        .collect();
    let bar = progress(args.sessions as u64, "creating drafts");
    let created: Vec<Result<Value, ymera_core::Error>> =
        futures::stream::iter(drafts.iter().enumerate().map(|(i, id)| {
            let (client, bar) = (control.clone(), bar.clone());
            async move {
                let r = client
                    .request(
                        "drafting.create",
                        &json!({"draft_id": id, "title": format!("Collaboration bench {i}"),
                                "author_id": "bench", "content": format!("Session {i} starts here.\n")}),
                    )
                    .await;
                bar.inc(1);
                r
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    bar.finish_and_clear();
    for r in created {
        r.context("drafting.create")?;
    }

    // Editors: subscribe, then join.
    let total = args.sessions * args.editors;
    let bar = progress(total as u64, "editors joining");
    let mut editors = Vec::with_capacity(total);
    let mut subs = Vec::with_capacity(total);
    for (i, draft_id) in drafts.iter().enumerate() {
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        for j in 0..args.editors {
            let slot = (i * args.editors + j) % conns.len().max(1);
            let sub = conns[slot]
                .subscribe(format!("drafting.collab.{draft_id}.updates"))
                .await?;
            subs.push(sub);
            editors.push(Editor {
                draft_id: draft_id.clone(),
                client_id: format!("s{i}e{j}"),
                doc: Arc::new(Mutex::new(new_doc())),
                pending: pending.clone(),
                client: clients[slot].clone(),
                rng: Rng::new(((i as u64) << 16) ^ j as u64 ^ 0xD0C),
            });
        }
    }
    for n in &conns {
        n.flush().await?;
    }
    let joined: Vec<anyhow::Result<()>> = futures::stream::iter(editors.iter().map(|e| {
        let bar = bar.clone();
        async move {
            let reply: Value = e
                .client
                .request(
                    "drafting.collab.join",
                    &json!({"draft_id": e.draft_id, "user_id": format!("user-{}", e.client_id), "client_id": e.client_id}),
                )
                .await?;
            let state = reply["state"].as_str().context("join without state")?;
            apply_b64(&e.doc, state)?;
            bar.inc(1);
            Ok(())
        }
    }))
    .buffer_unordered(32)
    .collect()
    .await;
    bar.finish_and_clear();
    for r in joined {
        r.context("drafting.collab.join")?;
    }

    // Typing.
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop_receiving = CancellationToken::new();
    let period = Duration::from_secs_f64(1.0 / args.edit_rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(args.edit_seconds);
    let others = (args.editors - 1) as u32;
    let mut receivers = Vec::with_capacity(total);
    let mut senders = Vec::with_capacity(total);
    for (e, mut sub) in editors.iter().zip(subs) {
        let (doc, pending, me) = (e.doc.clone(), e.pending.clone(), e.client_id.clone());
        let (received, stop) = (received.clone(), stop_receiving.clone());
        receivers.push(tokio::spawn(async move {
            let mut h = new_histogram();
            let mut bad = 0u64;
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = sub.next() => match m { Some(m) => m, None => break },
                };
                let now = Instant::now();
                let Ok(event) = serde_json::from_slice::<Broadcast<'_>>(&msg.payload) else {
                    bad += 1;
                    continue;
                };
                if event.client_id == me {
                    continue;
                }
                let sent_at = {
                    let mut map = pending.lock().unwrap_or_else(|p| p.into_inner());
                    let key = key_of(event.update);
                    match map.get_mut(&key) {
                        Some((at, left)) => {
                            let at = *at;
                            *left -= 1;
                            if *left == 0 {
                                map.remove(&key);
                            }
                            Some(at)
                        }
                        None => None,
                    }
                };
                if let Some(at) = sent_at {
                    let _ = h.record(now.duration_since(at).as_micros().max(1) as u64);
                }
                if apply_b64(&doc, event.update).is_err() {
                    bad += 1;
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
            (h, bad)
        }));
    }
    for e in &editors {
        let (doc, pending, client) = (e.doc.clone(), e.pending.clone(), e.client.clone());
        let (draft_id, client_id) = (e.draft_id.clone(), e.client_id.clone());
        let sent = sent.clone();
        let mut rng = e.rng.clone();
        // Spread the editors' ticks over one period.
        let offset = period.mul_f64(rng.unit());
        senders.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(start + offset, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut h = new_histogram();
            let (mut errors, mut k) = (0u64, 0u64);
            loop {
                let tick = ticker.tick().await;
                if tick >= end {
                    break;
                }
                k += 1;
                let label = if k % 7 == 0 {
                    format!("«{client_id}.{k}» ")
                } else {
                    format!("{client_id}.{k} ")
                };
                let update = local_edit(&doc, &mut rng, &label);
                let body = serde_json::to_vec(
                    &json!({"draft_id": draft_id, "client_id": client_id, "update": update}),
                )
                .unwrap_or_default();
                let t = Instant::now();
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key_of(&update), (t, others));
                sent.fetch_add(1, Ordering::Relaxed);
                match client
                    .request_bytes("drafting.collab.update", Bytes::from(body))
                    .await
                {
                    Ok(_) => {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    let bar = progress(args.edit_seconds, "editing");
    let ticker = {
        let (bar, sent, received) = (bar.clone(), sent.clone(), received.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
                bar.set_message(format!(
                    "editing: {} edits sent, {} broadcasts received",
                    sent.load(Ordering::Relaxed),
                    received.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let mut request_h = new_histogram();
    let mut edit_errors = 0;
    for s in senders {
        if let Ok((h, errors)) = s.await {
            let _ = request_h.add(&h);
            edit_errors += errors;
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let edits_sent = sent.load(Ordering::Relaxed);
    let expected = edits_sent * others as u64;
    // Let the last broadcasts arrive.
    let drain_started = Instant::now();
    while received.load(Ordering::Relaxed) < expected
        && drain_started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_receiving.cancel();
    let mut broadcast_h = new_histogram();
    let mut bad = 0;
    for r in receivers {
        if let Ok((h, b)) = r.await {
            let _ = broadcast_h.add(&h);
            bad += b;
        }
    }
    let broadcasts_received = received.load(Ordering::Relaxed);

    // Convergence: every editor's text equal within a session, and equal
    // to what the service commits when the last editor leaves.
    let bar = progress(args.sessions as u64, "leaving, checking convergence");
    let mut converged = 0;
    let mut matching = 0;
    let mut examples = Vec::new();
    for (i, group) in editors.chunks(args.editors).enumerate() {
        let texts: Vec<String> = group.iter().map(|e| doc_text(&e.doc)).collect();
        let same = texts.windows(2).all(|w| w[0] == w[1]);
        let mut committed_version = None;
        for e in group {
            let reply: Value = e
                .client
                .request(
                    "drafting.collab.update",
                    &json!({"draft_id": e.draft_id, "client_id": e.client_id, "leave": true}),
                )
                .await
                .context("leaving")?;
            if let Some(v) = reply.get("committed_version") {
                committed_version = Some(v.clone());
            }
        }
        let draft: Value = control
            .request("drafting.get", &json!({"draft_id": drafts[i]}))
            .await?;
        let committed = draft["content"].as_str().unwrap_or_default();
        if same {
            converged += 1;
        }
        if texts.iter().all(|t| t == committed) {
            matching += 1;
        } else if examples.len() < 3 {
            examples.push(format!(
                "{}: editors' texts {} ({} bytes), committed {} bytes (version {:?})",
                drafts[i],
                if same { "equal" } else { "differ" },
                texts.first().map(String::len).unwrap_or(0),
                committed.len(),
                committed_version
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let secs = args.edit_seconds as f64;
    let mut broadcast = result_from(
        &format!(
            "edit → each other editor (broadcast), {} sessions × {}",
            args.sessions, args.editors
        ),
        &broadcast_h,
        broadcasts_received as f64 / secs,
        expected.saturating_sub(broadcasts_received) + bad,
    );
    broadcast.ratio_to_baseline = 1.0;
    let update_request = result_from(
        "drafting.collab.update request → reply",
        &request_h,
        request_h.len() as f64 / secs,
        edit_errors,
    );
    if !ctx.json() {
        println!(
            "Collaboration: {} sessions × {} editors × {} edits/s for {} s: {} edits sent ({} failed), {} of {} broadcasts received",
            args.sessions,
            args.editors,
            args.edit_rate,
            args.edit_seconds,
            edits_sent,
            edit_errors,
            broadcasts_received,
            expected
        );
        report(
            ctx,
            "drafting-collab",
            &[broadcast.clone(), update_request.clone()],
        )?;
        println!(
            "req/s = broadcasts received per second / updates acknowledged per second; errors = broadcasts lost or undecodable / failed updates."
        );
        println!(
            "Convergence: {converged}/{} sessions' editors identical; {matching}/{} equal to the committed text",
            args.sessions, args.sessions
        );
        for e in &examples {
            println!("  {e}");
        }
    }
    let all_converged = converged == args.sessions && matching == args.sessions;
    let verdicts = vec![
        Verdict {
            target: "broadcast P99 ≤ 50 ms".to_owned(),
            measured: format!(
                "P99 {:.2} ms over {} deliveries, {} lost",
                broadcast.p99_us as f64 / 1000.0,
                broadcast_h.len(),
                expected.saturating_sub(broadcasts_received)
            ),
            met: !broadcast_h.is_empty() && broadcast.p99_us <= BROADCAST_P99_TARGET_US,
        },
        Verdict {
            target: "all sessions converge".to_owned(),
            measured: format!(
                "{converged}/{} identical, {matching}/{} equal to the committed text",
                args.sessions, args.sessions
            ),
            met: all_converged,
        },
    ];
    Ok(CollabReport {
        sessions: args.sessions,
        editors_per_session: args.editors,
        edit_rate_per_editor: args.edit_rate,
        edit_seconds: args.edit_seconds,
        edits_sent,
        edit_errors,
        broadcasts_expected: expected,
        broadcasts_received,
        broadcast,
        update_request,
        sessions_converged: converged,
        sessions_matching_committed: matching,
        divergent_examples: examples,
        verdicts,
    })
}
