//! lizard 1.24.3 (`python -m lizard`, one process) timed on the same files,
//! and the Python it runs with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::ProgressBar;

use super::{CorpusFile, CorpusSummary, LIZARD_VERSION, Measured, cpu_seconds, measured};

/// Times `python -m lizard -f LIST` (single process, its default; the
/// report goes to /dev/null).
pub(super) fn time_lizard(
    python: &Path,
    files: &[CorpusFile],
    summary: &CorpusSummary,
    rounds: usize,
) -> anyhow::Result<Measured> {
    let list = tempfile_path("lizard-files.txt");
    let mut text = String::new();
    for f in files {
        text.push_str(&f.path.to_string_lossy());
        text.push('\n');
    }
    std::fs::write(&list, text).with_context(|| format!("writing {}", list.display()))?;
    let rounds = rounds.clamp(1, 20);
    let bar = ProgressBar::new_spinner();
    bar.set_message(format!(
        "lizard {LIZARD_VERSION} (python -m lizard, 1 process) on {} files",
        files.len()
    ));
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut outcome = Ok(());
    for _ in 0..rounds {
        let cpu_before = cpu_seconds(true);
        let started = Instant::now();
        let out = Command::new(python)
            .args(["-m", "lizard", "-f"])
            .arg(&list)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let elapsed = started.elapsed();
        match out {
            // lizard exits 1 when it printed warnings (CCN over 15, …).
            Ok(o) if o.status.code().is_some_and(|c| c == 0 || c == 1) => {
                times.push(elapsed);
                cpu.push(cpu_before.zip(cpu_seconds(true)).map(|(a, b)| b - a));
            }
            Ok(o) => {
                outcome = Err(anyhow::anyhow!(
                    "lizard failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                break;
            }
            Err(e) => {
                outcome = Err(anyhow::anyhow!("cannot run {}: {e}", python.display()));
                break;
            }
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&list);
    outcome?;
    Ok(measured(
        format!("lizard {LIZARD_VERSION} (python -m lizard)"),
        1,
        &times,
        &cpu,
        summary,
        0,
        0,
    ))
}

fn tempfile_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ymera-bench-{}-{name}", std::process::id()))
}

/// The workspace root (the directory holding scripts/compare-lizard), from
/// the current directory or the binary's location.
fn workspace_root() -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        starts.push(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    starts.into_iter().find_map(|start| {
        start
            .ancestors()
            .find(|d| d.join("scripts/compare-lizard").is_file())
            .map(Path::to_path_buf)
    })
}

/// The Python with lizard 1.24.3: the workspace .venv (as scripts/compare-lizard
/// makes it), created and provisioned from PyPI when missing.
pub(super) fn lizard_python(quiet: bool) -> anyhow::Result<PathBuf> {
    let venv = match workspace_root() {
        Some(root) => root.join(".venv"),
        None => {
            let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
            home.join(".cache/ymera/venv")
        }
    };
    let python = venv.join("bin/python");
    let check = format!("import lizard, sys; sys.exit(lizard.version != '{LIZARD_VERSION}')");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", &check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && ready(&python) {
        return Ok(python);
    }
    if !quiet {
        eprintln!(
            "installing lizard=={LIZARD_VERSION} into {}",
            venv.display()
        );
    }
    if !python.is_file() {
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .context("running python3 -m venv (is python3 installed?)")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", &format!("lizard=={LIZARD_VERSION}")])
        .status()
        .context("running pip")?;
    if !status.success() || !ready(&python) {
        bail!("could not install lizard=={LIZARD_VERSION}; pass --python or --no-lizard");
    }
    Ok(python)
}
