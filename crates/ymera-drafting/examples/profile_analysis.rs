//! Where the time of one analysis goes (release build):
//! `cargo run --release -p ymera-drafting --example profile_analysis [FILE]`
//! (default: the 25 reference paragraphs, three times over, ≈ 2,200 words).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use ymera_drafting::readability::{counts, readability};
use ymera_drafting::service::{MAX_FINDINGS, analyze_text};
use ymera_drafting::style::{check, guides_for};

fn main() {
    let text = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(path).unwrap(),
        None => {
            let paras: serde_json::Value = serde_json::from_str(include_str!(
                "../tests/fixtures/readability-paragraphs.json"
            ))
            .unwrap();
            let one: Vec<&str> = paras
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["text"].as_str().unwrap())
                .collect();
            [one.join("\n\n"), one.join("\n\n"), one.join("\n\n")].join("\n\n")
        }
    };
    println!("{} words", text.split_whitespace().count());
    if let Ok(path) = std::env::var("DUMP") {
        // Every tone/audience combination, to compare outputs across changes.
        let mut all = Vec::new();
        for tone in [None, Some("formal"), Some("casual")] {
            for audience in [None, Some("technical"), Some("general")] {
                all.push(analyze_text(&text, tone, audience));
            }
        }
        std::fs::write(path, serde_json::to_string_pretty(&all).unwrap()).unwrap();
        return;
    }
    let _ = analyze_text(&text, None, None);
    let n = 200;
    let time = |name: &str, f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "{name:24} {:8.3} ms",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    };
    time("counts", &|| {
        std::hint::black_box(counts(&text));
    });
    time("readability", &|| {
        std::hint::black_box(readability(&text));
    });
    time("guides_for", &|| {
        std::hint::black_box(guides_for(None, None));
    });
    let guides = guides_for(None, None);
    time("style check", &|| {
        std::hint::black_box(check(&text, &guides, MAX_FINDINGS));
    });
    time("analyze_text", &|| {
        std::hint::black_box(analyze_text(&text, None, None));
    });
    let a = analyze_text(&text, None, None);
    time("serialize reply", &|| {
        std::hint::black_box(serde_json::to_vec(&a).unwrap());
    });
    println!(
        "{} findings, reply {} bytes",
        a.findings.len(),
        serde_json::to_vec(&a).unwrap().len()
    );
}
