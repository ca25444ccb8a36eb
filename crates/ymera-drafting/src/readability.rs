//! Text statistics and readability scores with textstat 0.7's definitions.
//!
//! Word, sentence, letter and character counts follow textstat 0.7.13
//! exactly (its punctuation removal, its sentence regex `\b[^.!?]+[.!?]*`
//! ignoring "sentences" of two words or fewer, its whitespace word split).
//! Syllables come from CMU Pronouncing Dictionary counts (first
//! pronunciation, vowel phones), and for words CMUdict does not know, from
//! Liang hyphenation patterns (`hyph_en_US.dic`, the rule set pyphen uses,
//! which is textstat's own fallback): points + 1.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Reading speed textstat uses for `reading_time` (ms per non-space character).
pub const MS_PER_CHAR: f64 = 14.69;

/// The seven scores, named as textstat names them (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Readability {
    /// Flesch reading ease.
    pub flesch_reading_ease: f64,
    /// Flesch–Kincaid grade.
    pub flesch_kincaid_grade: f64,
    /// Gunning fog index.
    pub gunning_fog: f64,
    /// SMOG index.
    pub smog_index: f64,
    /// Coleman–Liau index.
    pub coleman_liau_index: f64,
    /// Automated readability index.
    pub automated_readability_index: f64,
    /// Dale–Chall readability score.
    pub dale_chall_readability_score: f64,
}

/// Counts of a text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct TextCounts {
    /// Words (textstat's `lexicon_count`).
    pub words: usize,
    /// Sentences (textstat's `sentence_count`).
    pub sentences: usize,
    /// Paragraphs (blocks separated by blank lines).
    pub paragraphs: usize,
    /// All characters (Unicode scalar values).
    pub characters: usize,
    /// Characters that are not whitespace.
    pub characters_no_spaces: usize,
    /// Letters and digits.
    pub letters: usize,
    /// Syllables.
    pub syllables: usize,
    /// Words of three or more syllables.
    pub polysyllable_words: usize,
    /// Reading time in seconds (14.69 ms per non-space character).
    pub reading_time_seconds: f64,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether an apostrophe at `i` starts a contraction ending (`'t`, `'s`,
/// `'d`, `'ve`, `'ll`, `'re`).
fn contraction_follows(chars: &[char], i: usize) -> bool {
    let next = chars.get(i + 1).copied();
    let next2 = chars.get(i + 2).copied();
    matches!(next, Some('t' | 's' | 'd'))
        || matches!(
            (next, next2),
            (Some('v'), Some('e')) | (Some('l'), Some('l')) | (Some('r'), Some('e'))
        )
}

/// textstat's `remove_punctuation`.
pub fn remove_punctuation(text: &str, rm_apostrophe: bool) -> String {
    if rm_apostrophe {
        return text
            .chars()
            .filter(|c| is_word_char(*c) || c.is_whitespace())
            .collect();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut kept = Vec::with_capacity(chars.len());
    for (i, c) in chars.iter().enumerate() {
        if *c == '\'' && !contraction_follows(&chars, i) {
            continue;
        }
        kept.push(*c);
    }
    kept.into_iter()
        .filter(|c| is_word_char(*c) || c.is_whitespace() || *c == '\'')
        .collect()
}

/// textstat's `list_words` with its defaults (punctuation removed,
/// contraction apostrophes kept).
pub fn list_words(text: &str) -> Vec<String> {
    remove_punctuation(text, false)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// textstat's `count_sentences`.
pub fn count_sentences(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    let sentences = sentence_spans(text);
    let ignored = sentences
        .iter()
        .filter(|(s, e)| {
            remove_punctuation(&text[*s..*e], false)
                .split_whitespace()
                .count()
                <= 2
        })
        .count();
    sentences.len().saturating_sub(ignored).max(1)
}

/// Byte spans of the matches of `\b[^.!?]+[.!?]*` (Python `re.findall`).
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let is_term = |c: char| matches!(c, '.' | '!' | '?');
    let word_at = |i: usize| i < n && is_word_char(chars[i].1);
    let byte_at = |i: usize| if i < n { chars[i].0 } else { text.len() };
    let mut spans = Vec::new();
    let mut pos = 0;
    while pos < n {
        let boundary = word_at(pos) != (pos > 0 && word_at(pos - 1));
        if boundary && !is_term(chars[pos].1) {
            let mut j = pos;
            while j < n && !is_term(chars[j].1) {
                j += 1;
            }
            while j < n && is_term(chars[j].1) {
                j += 1;
            }
            spans.push((byte_at(pos), byte_at(j)));
            pos = j;
        } else {
            pos += 1;
        }
    }
    spans
}

/// FNV-1a: the tables below have fixed keys (no attacker can grow them),
/// and short words hash several times faster than with SipHash.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvBuild = BuildHasherDefault<Fnv>;

fn cmu_table() -> &'static HashMap<String, u8, FnvBuild> {
    static TABLE: OnceLock<HashMap<String, u8, FnvBuild>> = OnceLock::new();
    TABLE.get_or_init(|| {
        include_str!("../data/cmudict-syllables.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (word, count) = l.rsplit_once(' ')?;
                Some((word.to_owned(), count.parse().ok()?))
            })
            .collect()
    })
}

fn easy_words() -> &'static HashSet<&'static str, FnvBuild> {
    static WORDS: OnceLock<HashSet<&'static str, FnvBuild>> = OnceLock::new();
    WORDS.get_or_init(|| {
        include_str!("../data/easy_words.txt")
            .lines()
            .map(str::trim)
            .collect()
    })
}

/// Liang hyphenation patterns (the `hyph_*.dic` format pyphen reads).
struct Hyphenator {
    patterns: HashMap<String, (usize, Vec<u8>), FnvBuild>,
    max_len: usize,
}

impl Hyphenator {
    fn english() -> &'static Hyphenator {
        static H: OnceLock<Hyphenator> = OnceLock::new();
        H.get_or_init(|| Hyphenator::parse(include_str!("../data/hyph_en_US.dic")))
    }

    fn parse(dic: &str) -> Hyphenator {
        const IGNORED: [&str; 6] = [
            "%",
            "#",
            "LEFTHYPHENMIN",
            "RIGHTHYPHENMIN",
            "COMPOUNDLEFTHYPHENMIN",
            "COMPOUNDRIGHTHYPHENMIN",
        ];
        let mut patterns = HashMap::default();
        for line in dic.lines().skip(1) {
            let line = line.trim();
            if line.is_empty() || IGNORED.iter().any(|p| line.starts_with(p)) || line.contains('/')
            {
                continue;
            }
            let mut tags = String::new();
            let mut values = Vec::new();
            let mut pending = 0u8;
            for c in line.chars() {
                if let Some(d) = c.to_digit(10) {
                    pending = u8::try_from(d).unwrap_or(0);
                } else {
                    values.push(pending);
                    pending = 0;
                    tags.push(c);
                }
            }
            values.push(pending);
            let Some(start) = values.iter().position(|v| *v != 0) else {
                continue;
            };
            let end = values
                .iter()
                .rposition(|v| *v != 0)
                .map_or(start, |e| e + 1);
            patterns.insert(tags, (start, values[start..end].to_vec()));
        }
        let max_len = patterns
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(1);
        Hyphenator { patterns, max_len }
    }

    /// pyphen's `Pyphen(lang="en").positions(word)` count (left = right = 2).
    fn points(&self, word: &str) -> usize {
        let lower = word.to_lowercase();
        let pointed: Vec<char> = format!(".{lower}.").chars().collect();
        let mut refs = vec![0u8; pointed.len() + 1];
        let mut key = String::new();
        for i in 0..pointed.len().saturating_sub(1) {
            let stop = (i + self.max_len).min(pointed.len()) + 1;
            for j in (i + 1)..stop {
                key.clear();
                key.extend(&pointed[i..j]);
                let Some((offset, values)) = self.patterns.get(key.as_str()) else {
                    continue;
                };
                for (k, v) in values.iter().enumerate() {
                    if let Some(r) = refs.get_mut(i + offset + k) {
                        *r = (*r).max(*v);
                    }
                }
            }
        }
        let len = lower.chars().count();
        let right = len.saturating_sub(2);
        refs.iter()
            .enumerate()
            .filter(|(i, r)| *i >= 1 && *r % 2 == 1 && (2..=right).contains(&(i - 1)))
            .filter(|_| len >= 2)
            .count()
    }
}

/// Syllables of one (lowercased) word: CMUdict, else hyphenation points + 1.
pub fn word_syllables(word: &str) -> usize {
    match cmu_table().get(word) {
        Some(n) => usize::from(*n),
        None => Hyphenator::english().points(word) + 1,
    }
}

/// textstat's `count_syllables`.
pub fn count_syllables(text: &str) -> usize {
    list_words(&text.to_lowercase())
        .iter()
        .map(|w| word_syllables(w))
        .sum()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Paragraphs: non-empty blocks separated by blank lines.
pub fn count_paragraphs(text: &str) -> usize {
    let mut count = 0;
    let mut in_block = false;
    for line in text.lines() {
        let blank = line.trim().is_empty();
        if !blank && !in_block {
            count += 1;
        }
        in_block = !blank;
    }
    count
}

/// All counts of a text.
pub fn counts(text: &str) -> TextCounts {
    Measured::of(text).counts
}

/// The seven readability scores of a text, as textstat 0.7 computes them.
pub fn readability(text: &str) -> Readability {
    Measured::of(text).readability()
}

/// Counts and scores in one pass over the words (what an analysis needs).
pub fn counts_and_readability(text: &str) -> (TextCounts, Readability) {
    let m = Measured::of(text);
    (m.counts, m.readability())
}

/// Everything the scores are computed from: the counts, and per word its
/// syllables and whether it is on the Dale–Chall easy list.
struct Measured {
    counts: TextCounts,
    raw_words: usize,
    /// (syllables, easy) per word of `list_words`.
    words: Vec<(usize, bool)>,
}

impl Measured {
    fn of(text: &str) -> Measured {
        let words: Vec<(usize, bool)> = remove_punctuation(text, false)
            .split_whitespace()
            .map(|w| {
                let lower = w.to_lowercase();
                (
                    word_syllables(&lower),
                    easy_words().contains(lower.as_str()),
                )
            })
            .collect();
        let characters_no_spaces = text.chars().filter(|c| !c.is_whitespace()).count();
        let counts = TextCounts {
            words: words.len(),
            sentences: count_sentences(text),
            paragraphs: count_paragraphs(text),
            characters: text.chars().count(),
            characters_no_spaces,
            letters: text.chars().filter(|c| is_word_char(*c)).count(),
            syllables: words.iter().map(|(n, _)| n).sum(),
            polysyllable_words: words.iter().filter(|(n, _)| *n >= 3).count(),
            reading_time_seconds: MS_PER_CHAR * characters_no_spaces as f64 / 1000.0,
        };
        Measured {
            counts,
            raw_words: text.split_whitespace().count(),
            words,
        }
    }

    /// Words not on the easy list with at least `threshold` syllables
    /// (textstat's `difficult_words` count).
    fn difficult(&self, threshold: usize) -> usize {
        self.words
            .iter()
            .filter(|(n, easy)| !easy && *n >= threshold)
            .count()
    }

    fn readability(&self) -> Readability {
        let c = &self.counts;
        let words = c.words as f64;
        let sentences = c.sentences as f64;
        let wps = ratio(words, sentences);
        let spw = ratio(c.syllables as f64, words);
        let (fre, fkg) = if wps == 0.0 || spw == 0.0 {
            (0.0, 0.0)
        } else {
            (
                206.835 - 1.015 * wps - 84.6 * spw,
                0.39 * wps + 11.8 * spw - 15.59,
            )
        };
        let fog_hard = self.difficult(3) as f64;
        let gunning_fog = if words == 0.0 {
            0.0
        } else {
            0.4 * (wps + 100.0 * fog_hard / words)
        };
        let smog_index = if sentences == 0.0 {
            0.0
        } else {
            1.043 * (30.0 * (c.polysyllable_words as f64 / sentences)).sqrt() + 3.1291
        };
        let letters = ratio(c.letters as f64, words) * 100.0;
        let spw100 = ratio(sentences, words) * 100.0;
        let coleman_liau_index = if letters == 0.0 || spw100 == 0.0 {
            0.0
        } else {
            0.058 * letters - 0.296 * spw100 - 15.8
        };
        let cpw = ratio(c.characters_no_spaces as f64, self.raw_words as f64);
        let automated_readability_index = if cpw == 0.0 || wps == 0.0 {
            0.0
        } else {
            4.71 * cpw + 0.5 * wps - 21.43
        };
        let dale_hard = self.difficult(0) as f64;
        let dale_chall_readability_score = if words == 0.0 {
            0.0
        } else {
            let pct = 100.0 * dale_hard / words;
            let score = 0.1579 * pct + 0.0496 * wps;
            if pct > 5.0 { score + 3.6365 } else { score }
        };
        Readability {
            flesch_reading_ease: fre,
            flesch_kincaid_grade: fkg,
            gunning_fog,
            smog_index,
            coleman_liau_index,
            automated_readability_index,
            dale_chall_readability_score,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn words_and_sentences_follow_textstat() {
        assert_eq!(
            list_words("Don't 'quote' me-now!"),
            ["Don't", "quote", "menow"]
        );
        assert_eq!(count_sentences("Stop. Look around. Listen carefully."), 1);
        assert_eq!(count_sentences(""), 0);
        assert_eq!(count_sentences("The cat sat. The dog ran far away."), 2);
    }

    #[test]
    fn syllables_from_cmudict_and_patterns() {
        assert_eq!(word_syllables("readability"), 5);
        assert_eq!(word_syllables("the"), 1);
        // Not in CMUdict: pyphen (en_US, textstat's default) gives these.
        assert_eq!(word_syllables("linearizability"), 5);
        assert_eq!(word_syllables("appendonly"), 4);
        assert_eq!(word_syllables("thoughtprovoking"), 4);
        assert_eq!(word_syllables("wellknown"), 2);
        assert_eq!(word_syllables("2023"), 1);
        assert_eq!(word_syllables("café"), 1);
    }

    #[test]
    fn empty_text_scores_zero() {
        assert_eq!(readability(""), Readability::default());
        assert_eq!(counts("").words, 0);
    }

    #[derive(Deserialize)]
    struct Reference {
        paragraphs: Vec<Paragraph>,
    }
    #[derive(Deserialize)]
    struct Paragraph {
        name: String,
        text: String,
        lexicon_count: usize,
        sentence_count: usize,
        syllable_count: usize,
        readability: Readability,
    }

    /// Acceptance: every score within ±0.1 of textstat 0.7 with CMUdict on
    /// the reference paragraphs (regenerate with `scripts/compare-textstat`).
    #[test]
    fn parity_with_textstat() {
        let reference: Reference =
            serde_json::from_str(include_str!("../tests/fixtures/readability-textstat.json"))
                .unwrap();
        assert!(reference.paragraphs.len() >= 20);
        let mut failures = Vec::new();
        for p in &reference.paragraphs {
            let c = counts(&p.text);
            if (c.words, c.sentences, c.syllables)
                != (p.lexicon_count, p.sentence_count, p.syllable_count)
            {
                failures.push(format!(
                    "{}: counts (words, sentences, syllables) {:?} vs textstat {:?}",
                    p.name,
                    (c.words, c.sentences, c.syllables),
                    (p.lexicon_count, p.sentence_count, p.syllable_count)
                ));
            }
            let ours = serde_json::to_value(readability(&p.text)).unwrap();
            let theirs = serde_json::to_value(p.readability).unwrap();
            for (name, expected) in theirs.as_object().unwrap() {
                let got = ours[name].as_f64().unwrap();
                let expected = expected.as_f64().unwrap();
                if (got - expected).abs() > 0.1 {
                    failures.push(format!("{}: {name} {got} vs textstat {expected}", p.name));
                }
            }
        }
        println!(
            "{} paragraphs compared, {} mismatches",
            reference.paragraphs.len(),
            failures.len()
        );
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
