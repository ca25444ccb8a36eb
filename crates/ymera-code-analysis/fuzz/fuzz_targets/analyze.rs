//! Any bytes, in any language: analysis and every output form must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ymera_code_analysis::{Language, Limits, Report, analyze_file};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let language = Language::ALL[usize::from(selector) % Language::ALL.len()];
    let source = String::from_utf8_lossy(rest);
    if let Ok(file) = analyze_file("fuzz", language, &source, &Limits::default()) {
        let report = Report::new(vec![file]);
        let _ = report.to_json();
        let _ = report.to_sarif();
        let _ = report.to_markdown();
    }
});
