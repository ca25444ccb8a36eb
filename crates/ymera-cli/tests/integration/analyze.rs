//! `ymera analyze`: in-process (`--local`) and through a real code-analysis
//! service, on a temporary tree with a planted `eval(` and a .gitignored file.

use std::path::Path;
use std::process::{Command, Output};

const YMERA: &str = env!("CARGO_BIN_EXE_ymera");

fn plant(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("build")).unwrap();
    std::fs::write(dir.join(".gitignore"), "build/\n").unwrap();
    std::fs::write(
        dir.join("src/app.py"),
        "def run(cmd):\n    return eval(cmd)\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/util.go"),
        "package util\n\nfunc Add(a, b int) int {\n\treturn a + b\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("build/generated.py"),
        "def gen(x):\n    return eval(x)\n",
    )
    .unwrap();
    std::fs::write(dir.join("README.txt"), "not code\n").unwrap();
}

fn ymera(args: &[&str]) -> Output {
    Command::new(YMERA)
        .args(args)
        .env_remove("NATS_URL")
        .output()
        .unwrap()
}

fn paths(report: &serde_json::Value) -> Vec<String> {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn local_json_fails_on_medium_and_skips_ignored_files() {
    let dir = tempfile::tempdir().unwrap();
    plant(dir.path());
    let root = dir.path().to_str().unwrap();

    let out = ymera(&[
        "analyze",
        "--local",
        "--format",
        "json",
        "--fail-on",
        "medium",
        root,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = paths(&report);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().any(|p| p.ends_with("src/app.py")));
    assert!(files.iter().any(|p| p.ends_with("src/util.go")));
    assert!(!files.iter().any(|p| p.contains("generated")));
    assert_eq!(report["summary"]["findings_by_severity"]["medium"], 1);

    // Below the threshold: success; the text summary names the finding.
    let out = ymera(&["analyze", "--local", "--fail-on", "high", root]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("app.py") && text.contains("B307"), "{text}");

    // A path that does not exist: 2, not the findings code 1.
    let missing = dir.path().join("nope");
    let out = ymera(&["analyze", "--local", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn service_batches_are_split_under_the_request_limit() {
    let dir = tempfile::tempdir().unwrap();
    plant(dir.path());
    // Two 40 KiB files: together over the service's 64 KiB MAX_MESSAGE_SIZE.
    for name in ["a.py", "b.py"] {
        std::fs::write(
            dir.path().join("src").join(name),
            "x = 1\n".repeat(40 * 1024 / 6),
        )
        .unwrap();
    }
    let nats = ymera_testkit::NatsServer::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = rt.block_on(async {
        let mut config = ymera_core::config::ServiceConfig::default();
        config.nats.url = nats.url();
        config.max_message_size = 64 * 1024;
        config.auth = ymera_core::config::AuthMode::Off;
        let runtime = ymera_core::runtime::Runtime::start("code-analysis", config)
            .await
            .unwrap();
        let shutdown = runtime.shutdown_token();
        rt_spawn(runtime);
        let client = async_nats::connect(nats.url()).await.unwrap();
        ymera_testkit::wait_until_serving(&client, "code-analysis.health").await;
        shutdown
    });
    let out = ymera(&[
        "--nats-url",
        &nats.url(),
        "analyze",
        "--format",
        "json",
        "--fail-on",
        "critical",
        dir.path().to_str().unwrap(),
    ]);
    shutdown.cancel();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paths(&report).len(), 4, "{report}");
    assert_eq!(report["summary"]["findings_by_severity"]["medium"], 1);
}

fn rt_spawn(runtime: ymera_core::runtime::Runtime) {
    tokio::spawn(ymera_code_analysis::service::serve(runtime));
}
