//! The corpus: the files scripts/compare-lizard fetches, `--corpus`
//! directories, or a generated multi-language corpus; taken per language,
//! balanced by bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ymera_code_analysis::Language;

use super::{CorpusFile, CorpusSummary};

/// Most files taken into the corpus.
const MAX_CORPUS_FILES: usize = 100_000;

/// The corpus scripts/compare-lizard fetches (same file selection), if present.
pub(super) fn default_corpus() -> Option<(String, Vec<PathBuf>)> {
    let base = PathBuf::from(std::env::var_os("CORPUS").unwrap_or_else(|| "/work/corpus".into()));
    let mut roots = Vec::new();
    let glob_dirs = |dir: &Path, sub: &str| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(sub))
            .filter(|p| p.is_dir())
            .collect();
        out.sort();
        out
    };
    // Python: sdists of requests and flask (src/ and tests/).
    roots.extend(glob_dirs(&base.join("py"), "src"));
    roots.extend(glob_dirs(&base.join("py"), "tests"));
    // JavaScript: lodash from npm.
    roots.push(base.join("js/package"));
    // Go: Debian's golang source, the packages compare-lizard uses.
    for src in glob_dirs(&base.join("x/go/usr/share"), "src") {
        for pkg in [
            "net/http",
            "strings",
            "encoding/json",
            "fmt",
            "bufio",
            "sort",
            "time",
            "os",
            "go/parser",
            "regexp",
        ] {
            roots.push(src.join(pkg));
        }
    }
    // Java: Debian's openjdk source.
    for pkg in ["util", "io", "lang"] {
        roots.push(base.join("x/javasrc/java.base/java").join(pkg));
    }
    roots.retain(|p| p.exists());
    // Rust: crate sources in the cargo registry.
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    {
        for registry in std::fs::read_dir(home.join("registry/src"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for krate in [
                "serde_json-1",
                "anyhow-1",
                "bytes-1",
                "chrono-0.4",
                "itoa-1",
                "uuid-1",
            ] {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir(registry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(krate))
                    .map(|e| e.path().join("src"))
                    .filter(|p| p.is_dir())
                    .collect();
                dirs.sort();
                roots.extend(dirs.pop());
            }
        }
    }
    let has_non_rust = roots.iter().any(|p| p.starts_with(&base));
    has_non_rust.then(|| {
        (
            format!("{} (scripts/compare-lizard corpus)", base.display()),
            roots,
        )
    })
}

/// Walks the roots; takes files per language (sorted paths, balanced by
/// bytes) up to `max_bytes`. Minified JavaScript and files over 1 MiB or not UTF-8 are
/// left out (the engine refuses the latter two).
pub(super) fn collect(
    source: &str,
    roots: &[PathBuf],
    max_bytes: u64,
) -> anyhow::Result<(Vec<CorpusFile>, CorpusSummary)> {
    let Some((first, rest)) = roots.split_first() else {
        bail!("no corpus");
    };
    let mut walk = ignore::WalkBuilder::new(first);
    for root in rest {
        walk.add(root);
    }
    walk.require_git(false).sort_by_file_path(Path::cmp);
    let mut per_language: BTreeMap<Language, Vec<CorpusFile>> = BTreeMap::new();
    let mut skipped = 0;
    let mut seen = 0usize;
    for entry in walk.build() {
        let entry = entry.context("walking the corpus")?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.path().to_string_lossy().into_owned();
        let Some(language) = Language::from_path(&name) else {
            continue;
        };
        seen += 1;
        if seen > MAX_CORPUS_FILES {
            bail!("more than {MAX_CORPUS_FILES} source files; pass a smaller --corpus");
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let utf8 = std::fs::read(entry.path()).is_ok_and(|b| std::str::from_utf8(&b).is_ok());
        if name.ends_with(".min.js") || bytes > ymera_code_analysis::MAX_FILE_BYTES as u64 || !utf8
        {
            skipped += 1;
            continue;
        }
        per_language.entry(language).or_default().push(CorpusFile {
            path: entry.path().to_path_buf(),
            language,
            bytes,
        });
    }
    // Balanced by bytes (next file from the language with the fewest bytes
    // taken so far) so a cap keeps every language in proportion.
    let mut queues: Vec<(u64, std::collections::VecDeque<CorpusFile>)> = per_language
        .into_values()
        .map(|files| (0, files.into()))
        .collect();
    let mut files = Vec::new();
    let mut total = 0u64;
    while total < max_bytes {
        let Some((taken, queue)) = queues
            .iter_mut()
            .filter(|(_, q)| !q.is_empty())
            .min_by_key(|(taken, _)| *taken)
        else {
            break;
        };
        let Some(file) = queue.pop_front() else {
            break;
        };
        *taken += file.bytes;
        total += file.bytes;
        files.push(file);
    }
    let mut by_language = BTreeMap::new();
    for f in &files {
        let e: &mut (usize, u64) = by_language.entry(f.language.name().to_owned()).or_default();
        e.0 += 1;
        e.1 += f.bytes;
    }
    let summary = CorpusSummary {
        source: source.to_owned(),
        files: files.len(),
        bytes: total,
        by_language,
        skipped,
    };
    Ok((files, summary))
}

/// A small generated multi-language corpus (used when no real corpus exists).
pub(super) fn generate_corpus() -> anyhow::Result<tempfile_dir::TempDir> {
    let dir = tempfile_dir::TempDir::new()?;
    for i in 0..40 {
        let mut py = String::from("import os\n\n\nclass Store:\n");
        let mut js = String::from("'use strict';\n\n");
        let mut java = format!("package gen;\n\npublic class Gen{i} {{\n");
        let mut go = String::from("package gen\n\nimport \"fmt\"\n\n");
        let mut rs = String::from("use std::collections::HashMap;\n\n");
        for j in 0..25 {
            py.push_str(&format!(
                "    def method_{j}(self, items, limit={j}):\n        total = 0\n        for item in items:\n            if item > limit and item % 2 == 0:\n                total += item\n            elif item < 0 or item == {j}:\n                total -= 1\n        return os.path.join(str(total), 'x')\n\n"
            ));
            js.push_str(&format!(
                "function f{j}(items, limit) {{\n  let total = 0;\n  for (const item of items) {{\n    if (item > limit && item % 2 === 0) {{\n      total += item;\n    }} else if (item < 0 || item === {j}) {{\n      total -= 1;\n    }}\n  }}\n  return items.map((x) => x * {j}).filter((x) => x > total);\n}}\n\n"
            ));
            java.push_str(&format!(
                "    public int m{j}(int[] items, int limit) {{\n        int total = 0;\n        for (int item : items) {{\n            if (item > limit && item % 2 == 0) {{\n                total += item;\n            }} else if (item < 0 || item == {j}) {{\n                total -= 1;\n            }}\n        }}\n        return total;\n    }}\n\n"
            ));
            go.push_str(&format!(
                "func F{j}(items []int, limit int) (int, error) {{\n\ttotal := 0\n\tfor _, item := range items {{\n\t\tif item > limit && item%2 == 0 {{\n\t\t\ttotal += item\n\t\t}} else if item < 0 || item == {j} {{\n\t\t\ttotal--\n\t\t}}\n\t}}\n\tif total < 0 {{\n\t\treturn 0, fmt.Errorf(\"negative %d\", total)\n\t}}\n\treturn total, nil\n}}\n\n"
            ));
            rs.push_str(&format!(
                "pub fn f{j}(items: &[i64], limit: i64, seen: &mut HashMap<i64, u32>) -> i64 {{\n    let mut total = 0;\n    for &item in items {{\n        if item > limit && item % 2 == 0 {{\n            total += item;\n        }} else if item < 0 || item == {j} {{\n            total -= 1;\n        }}\n        *seen.entry(item).or_insert(0) += 1;\n    }}\n    match total {{\n        0 => 1,\n        n if n < 0 => -n,\n        n => n,\n    }}\n}}\n\n"
            ));
        }
        java.push_str("}\n");
        for (ext, text) in [
            ("py", py),
            ("js", js),
            ("java", java),
            ("go", go),
            ("rs", rs),
        ] {
            std::fs::write(dir.path().join(format!("gen{i:02}.{ext}")), text)?;
        }
    }
    Ok(dir)
}

/// A temporary directory removed on drop (no extra dependency for the CLI).
pub(super) mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<TempDir> {
            let path = std::env::temp_dir().join(format!(
                "ymera-bench-analysis-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ));
            std::fs::create_dir_all(&path)?;
            Ok(TempDir(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
