//! Any chat message: block extraction, detection and analysis must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ymera_code_analysis::{AnalysisRequest, analyze, can_handle, extract_code_blocks};

fuzz_target!(|data: &[u8]| {
    let message = String::from_utf8_lossy(data).into_owned();
    let _ = can_handle(&message);
    let _ = extract_code_blocks(&message);
    let request = AnalysisRequest { message: Some(message), language: Some("python".to_owned()), ..Default::default() };
    if let Ok(report) = analyze(&request) {
        let _ = report.to_markdown();
    }
});
