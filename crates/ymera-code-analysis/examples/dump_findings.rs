//! Prints the rule findings of the given files as JSON lines, for
//! `scripts/compare-bandit`: `{"file","rule_id","severity","line","end_line"}`.
//! With `--rules`, prints the catalogue's rule ids instead, one a line.

use ymera_code_analysis::{Language, Limits, analyze_file};

fn main() {
    let limits = Limits {
        max_file_bytes: usize::MAX,
        ..Limits::default()
    };
    if std::env::args().nth(1).as_deref() == Some("--rules") {
        for rule in ymera_code_analysis::rules() {
            println!("{}", rule.id);
        }
        return;
    }
    for path in std::env::args().skip(1) {
        let Some(language) = Language::from_path(&path) else {
            continue;
        };
        let Ok(source) = std::fs::read(&path) else {
            eprintln!("cannot read {path}");
            continue;
        };
        let source = String::from_utf8_lossy(&source);
        match analyze_file(&path, language, &source, &limits) {
            Ok(report) => {
                for f in report.findings {
                    let line = serde_json::json!({
                        "file": path, "rule_id": f.rule_id, "severity": f.severity,
                        "line": f.line, "end_line": f.end_line,
                    });
                    println!("{line}");
                }
            }
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
