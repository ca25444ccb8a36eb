use ymera_code_analysis::{FileReport, Language, analyze_source};

pub fn analyze(language: Language, source: &str) -> FileReport {
    let path = match language {
        Language::Python => "snippet.py",
        Language::JavaScript => "snippet.js",
        Language::Java => "Snippet.java",
        Language::Go => "snippet.go",
        Language::Rust => "snippet.rs",
    };
    analyze_source(path, Some(language), source).expect("snippet analyses")
}

pub fn rule_ids(report: &FileReport) -> Vec<String> {
    report.findings.iter().map(|f| f.rule_id.clone()).collect()
}

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
