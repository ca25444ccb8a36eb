//! Size and time limits are typed errors.

use std::time::Duration;

use ymera_code_analysis::{
    AnalysisError, AnalysisRequest, Language, Limits, MAX_FILE_BYTES, MAX_REQUEST_BYTES,
    SourceFile, analyze, analyze_file, analyze_source,
};

#[test]
fn file_over_one_mib_is_refused() {
    let big = "x = 1\n".repeat(MAX_FILE_BYTES / 6 + 1);
    let err = analyze_source("big.py", None, &big).expect_err("too large");
    assert!(
        matches!(
            err,
            AnalysisError::FileTooLarge {
                limit: MAX_FILE_BYTES,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.status(), 413);
    let fits = "x = 1\n".repeat(MAX_FILE_BYTES / 6 - 1);
    // A generous parse limit: this checks the size boundary, not the clock.
    let limits = Limits {
        parse_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let fitted = analyze_file("ok.py", Language::Python, &fits, &limits);
    assert!(fitted.is_ok(), "{:?}", fitted.err());
}

#[test]
fn request_over_ten_mib_is_refused() {
    let part = "x = 1\n".repeat(MAX_FILE_BYTES / 6 - 1);
    let files = (0..11)
        .map(|i| SourceFile {
            path: format!("f{i}.py"),
            language: None,
            content: part.clone(),
        })
        .collect();
    let err = analyze(&AnalysisRequest {
        files,
        ..Default::default()
    })
    .expect_err("too large");
    assert!(
        matches!(
            err,
            AnalysisError::RequestTooLarge {
                limit: MAX_REQUEST_BYTES,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "payload_too_large");
}

#[test]
fn parse_time_limit_is_enforced() {
    let source = "def f(x):\n    return [y for y in x if y]\n".repeat(20_000);
    let limits = Limits {
        parse_timeout: Duration::from_nanos(1),
        ..Limits::default()
    };
    let err = analyze_file("slow.py", Language::Python, &source, &limits).expect_err("times out");
    assert!(matches!(err, AnalysisError::ParseTimeout { .. }), "{err:?}");
}
