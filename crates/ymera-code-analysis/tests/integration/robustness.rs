//! No input panics or hangs. A seeded PRNG drives arbitrary bytes and
//! mutations of real sources through every language (a property test standing
//! in for the cargo-fuzz targets in `fuzz/`, which need nightly).

use ymera_code_analysis::{Language, Limits, analyze_file};

use crate::common::fixture;

/// xorshift64*: small, deterministic, good enough to explore inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALPHABET: &[u8] =
    b"(){}[]<>;:,.'\"`#/\\*+-=!?&|^%$@ \t\n\rabcdefifelsefordefclassfnfuncmatchcase0123456789_";

fn random_text(rng: &mut Rng, len: usize) -> String {
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            if rng.below(4) == 0 {
                rng.next() as u8
            } else {
                ALPHABET[rng.below(ALPHABET.len())]
            }
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutate(rng: &mut Rng, source: &str) -> String {
    let mut bytes = source.as_bytes().to_vec();
    for _ in 0..1 + rng.below(8) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        let len = rng.below(40).min(bytes.len() - at);
        match rng.below(4) {
            0 => {
                bytes.drain(at..at + len);
            }
            1 => {
                let chunk = bytes[at..at + len].to_vec();
                let to = rng.below(bytes.len());
                bytes.splice(to..to, chunk);
            }
            2 => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            _ => bytes[at] = rng.next() as u8,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn fixture_for(language: Language) -> String {
    fixture(match language {
        Language::Python => "metrics/sample.py",
        Language::JavaScript => "metrics/sample.js",
        Language::Java => "metrics/Sample.java",
        Language::Go => "metrics/sample.go",
        Language::Rust => "metrics/sample.rs",
    })
}

fn exercise(language: Language, source: &str) {
    // Generous clock: the machine may be loaded; a timeout would be an Err anyway.
    let limits = Limits {
        parse_timeout: std::time::Duration::from_secs(120),
        ..Limits::default()
    };
    let report = analyze_file("input", language, source, &limits);
    if let Ok(report) = report {
        for f in &report.functions {
            assert!(f.start_line <= f.end_line && f.ccn >= 1, "{f:?}");
        }
        let report = ymera_code_analysis::Report::new(vec![report]);
        let _ = report.to_markdown();
        let _ = report.to_sarif();
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for language in Language::ALL {
        for _ in 0..200 {
            let len = rng.below(1500);
            exercise(language, &random_text(&mut rng, len));
        }
    }
}

#[test]
fn mutated_real_sources_never_panic() {
    let mut rng = Rng(0x5EED_1234_ABCD_0002);
    for language in Language::ALL {
        let base = fixture_for(language);
        for _ in 0..200 {
            exercise(language, &mutate(&mut rng, &base));
        }
    }
}

#[test]
fn pathological_nesting_does_not_overflow() {
    for language in Language::ALL {
        for unit in ["(", "{", "[", "if (a) {", "def f():\n "] {
            exercise(language, &unit.repeat(20_000));
        }
    }
}

#[test]
fn empty_and_whitespace_inputs() {
    for language in Language::ALL {
        for src in ["", "\n", "   \t  ", "\u{feff}", "\0\0\0"] {
            exercise(language, src);
        }
    }
}
