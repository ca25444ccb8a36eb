//! `ymera bench gateway --phase fanout` against a real private stack (nats-server,
//! PostgreSQL, the config and gateway binaries): every event reaches every subscriber.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const YMERA: &str = env!("CARGO_BIN_EXE_ymera");

#[test]
fn gateway_fanout_delivers_every_event_to_every_subscriber() {
    let dir = Path::new(YMERA).parent().unwrap();
    if !["config", "gateway"]
        .iter()
        .all(|s| dir.join(format!("ymera-{s}")).is_file())
    {
        eprintln!("skipped: ymera-config and ymera-gateway not built beside {YMERA}");
        return;
    }
    let out = Command::new(YMERA)
        .args([
            "--json",
            "bench",
            "gateway",
            "--private",
            "--phase",
            "fanout",
            "--subscribers",
            "50",
            "--event-rate",
            "100",
            "--seconds",
            "2",
        ])
        .env_remove("NATS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["bench"], "gateway-fanout");
    assert_eq!(report["events"], 200, "{report:#}");
    assert_eq!(report["every_event_delivered"], true, "{report:#}");
    let results = report["results"].as_array().unwrap();
    let targets: Vec<&str> = results
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "NATS core subscriber (baseline)",
            "gateway WebSocket",
            "gateway SSE",
            "gateway, every subscriber"
        ]
    );
    let all = &results[3];
    assert_eq!(all["subscribers"], 50);
    assert_eq!(all["expected"], 50 * 200);
    assert_eq!(all["received"], 50 * 200, "{report:#}");
    for r in results {
        assert_eq!(r["missing"], 0, "{report:#}");
        assert_eq!(r["duplicates"], 0, "{report:#}");
        assert_eq!(r["dropped_slow_consumer"], 0, "{report:#}");
        assert_eq!(r["connect_failures"], 0, "{report:#}");
    }
    assert_eq!(results[1]["subscribers"], 25);
    assert_eq!(results[2]["subscribers"], 25);
    assert!(all["p99_us"].as_u64().unwrap() > 0, "{report:#}");
    assert!(
        report["memory"]["rss_idle_all_kib"].as_u64().is_some(),
        "{report:#}"
    );
}
