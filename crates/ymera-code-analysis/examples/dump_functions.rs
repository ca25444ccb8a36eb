//! Prints per-function metrics of the given files as JSON lines, for
//! `scripts/compare-lizard`: `{"file","name","start_line","end_line","nloc","ccn","token_count","parameter_count"}`.

use ymera_code_analysis::{Language, Limits, analyze_file};

fn main() {
    let limits = Limits {
        max_file_bytes: usize::MAX,
        ..Limits::default()
    };
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
                for f in report.functions {
                    let line = serde_json::json!({
                        "file": path, "name": f.name, "qualified_name": f.qualified_name,
                        "start_line": f.start_line, "end_line": f.end_line, "nloc": f.nloc, "ccn": f.ccn,
                        "token_count": f.token_count, "parameter_count": f.parameter_count,
                    });
                    println!("{line}");
                }
            }
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
