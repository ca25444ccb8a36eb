//! Style checks driven by style guides (data files in `data/styles/`, a
//! Vale-like JSON format with existence, substitution, occurrence,
//! repetition and passive-voice rules), selected per tone and audience.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::readability::sentence_spans;

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// A hint.
    #[default]
    Suggestion,
    /// Should be fixed.
    Warning,
    /// Almost certainly wrong.
    Error,
}

/// What a rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Any of `tokens` (phrases), `raw` (literal strings) or words with `suffix`.
    Existence,
    /// Phrases of `swap` with their replacements.
    Substitution,
    /// More than `max` words in one sentence.
    Occurrence,
    /// The same word twice in a row.
    Repetition,
    /// A form of "to be" followed by a past participle.
    Passive,
}

/// One rule of a style guide.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable identifier.
    pub id: String,
    /// The kind.
    pub kind: RuleKind,
    /// Category (clarity, style, tone, …).
    #[serde(default)]
    pub category: String,
    /// Severity.
    #[serde(default)]
    pub level: Level,
    /// Message; `%s` is replaced by the matched text.
    pub message: String,
    /// Suggestion; for substitutions `%s` is replaced by the replacement.
    #[serde(default)]
    pub suggestion: String,
    /// `"sentence_start"` to match only at the start of a sentence.
    #[serde(default)]
    pub scope: Option<String>,
    /// Phrases (case-insensitive, word-bounded).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Literal strings.
    #[serde(default)]
    pub raw: Vec<String>,
    /// Word suffix (existence).
    #[serde(default)]
    pub suffix: Option<String>,
    /// Minimum word length for `suffix`.
    #[serde(default)]
    pub min_length: usize,
    /// Words the suffix match ignores.
    #[serde(default)]
    pub exceptions: Vec<String>,
    /// Phrase → replacement.
    #[serde(default)]
    pub swap: BTreeMap<String, String>,
    /// Limit for occurrence rules.
    #[serde(default)]
    pub max: usize,
}

/// A style guide: a named set of rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StyleGuide {
    /// Name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Rules.
    pub rules: Vec<Rule>,
}

/// One style finding. Offsets count Unicode scalar values; line and
/// column are 1-based.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule.
    pub rule_id: String,
    /// The rule's category.
    pub category: String,
    /// Severity.
    pub severity: Level,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub suggestion: String,
    /// The matched text.
    pub text: String,
    /// Start offset (characters).
    pub start: usize,
    /// End offset (characters, exclusive).
    pub end: usize,
    /// Line (1-based).
    pub line: usize,
    /// Column (1-based, characters).
    pub column: usize,
}

const GUIDES: [(&str, &str); 5] = [
    ("default", include_str!("../data/styles/default.json")),
    (
        "tone-formal",
        include_str!("../data/styles/tone-formal.json"),
    ),
    (
        "tone-casual",
        include_str!("../data/styles/tone-casual.json"),
    ),
    (
        "audience-general",
        include_str!("../data/styles/audience-general.json"),
    ),
    (
        "audience-technical",
        include_str!("../data/styles/audience-technical.json"),
    ),
];

/// The built-in guide of that name.
pub fn builtin(name: &str) -> Option<StyleGuide> {
    GUIDES
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, json)| serde_json::from_str(json).ok())
}

/// Names of the built-in guides.
pub fn builtin_names() -> Vec<&'static str> {
    GUIDES.iter().map(|(n, _)| *n).collect()
}

/// The guides for a tone and audience: always `default`, plus
/// `tone-formal` (formal, professional, academic, legal), `tone-casual`
/// (casual, friendly, conversational), `audience-technical` (technical,
/// developers, engineers, experts) or `audience-general` (general, public,
/// customers, beginners).
pub fn guides_for(tone: Option<&str>, audience: Option<&str>) -> Vec<StyleGuide> {
    let mut names = vec!["default"];
    match tone.map(str::to_lowercase).as_deref() {
        Some("formal" | "professional" | "academic" | "legal") => names.push("tone-formal"),
        Some("casual" | "friendly" | "conversational" | "informal") => names.push("tone-casual"),
        _ => {}
    }
    match audience.map(str::to_lowercase).as_deref() {
        Some("technical" | "developers" | "engineers" | "experts") => {
            names.push("audience-technical");
        }
        Some("general" | "public" | "customers" | "beginners" | "general public") => {
            names.push("audience-general");
        }
        _ => {}
    }
    names.into_iter().filter_map(builtin).collect()
}

#[derive(Debug, Clone)]
struct Token {
    lower: String,
    start: usize,
    end: usize,
    sentence: usize,
    sentence_start: bool,
}

fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\'' || c == '’' || c == '-'
}

/// Words with character offsets and the sentence they belong to.
fn tokenize(text: &str) -> Vec<Token> {
    let spans = sentence_spans(text);
    let mut byte_to_sentence = Vec::new();
    for (i, (s, _)) in spans.iter().enumerate() {
        byte_to_sentence.push((*s, i));
    }
    let mut tokens: Vec<Token> = Vec::new();
    let mut current: Option<(usize, usize, String)> = None;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (ci, (bi, c)) in chars.iter().enumerate() {
        if is_token_char(*c) {
            match &mut current {
                Some((_, _, s)) => s.extend(c.to_lowercase()),
                None => current = Some((ci, *bi, c.to_lowercase().collect())),
            }
        } else if let Some((start, byte, s)) = current.take() {
            tokens.push(make_token(s, start, ci, byte, &byte_to_sentence));
        }
    }
    if let Some((start, byte, s)) = current.take() {
        tokens.push(make_token(s, start, chars.len(), byte, &byte_to_sentence));
    }
    let mut last_sentence = usize::MAX;
    for t in &mut tokens {
        t.sentence_start = t.sentence != last_sentence;
        last_sentence = t.sentence;
    }
    tokens
}

fn make_token(
    raw: String,
    start: usize,
    end: usize,
    byte: usize,
    sentences: &[(usize, usize)],
) -> Token {
    let trimmed = raw.trim_matches(|c| c == '\'' || c == '’' || c == '-');
    let lead = raw
        .chars()
        .take_while(|c| matches!(c, '\'' | '’' | '-'))
        .count();
    let len = trimmed.chars().count();
    // The last sentence starting at or before the token (starts ascend).
    let sentence = sentences
        .partition_point(|(s, _)| *s <= byte)
        .checked_sub(1)
        .map_or(0, |k| sentences[k].1);
    let _ = end;
    Token {
        lower: trimmed.replace('’', "'"),
        start: start + lead,
        end: start + lead + len,
        sentence,
        sentence_start: false,
    }
}

/// Checks `text` against `guides`. Findings are sorted by position.
pub fn check(text: &str, guides: &[StyleGuide], max_findings: usize) -> Vec<Finding> {
    let tokens: Vec<Token> = tokenize(text)
        .into_iter()
        .filter(|t| !t.lower.is_empty())
        .collect();
    let chars: Vec<char> = text.chars().collect();
    let lines = LineIndex::new(&chars);
    let mut findings = Vec::new();
    for rule in guides.iter().flat_map(|g| &g.rules) {
        let matches = match rule.kind {
            RuleKind::Existence => existence(rule, &tokens, &chars),
            RuleKind::Substitution => substitution(rule, &tokens),
            RuleKind::Occurrence => occurrence(rule, &tokens),
            RuleKind::Repetition => repetition(&tokens),
            RuleKind::Passive => passive(&tokens),
        };
        for (start, end, replacement) in matches {
            let matched: String = chars[start..end].iter().collect();
            let (line, column) = lines.position(start);
            let message = match rule.kind {
                RuleKind::Occurrence => rule.message.replace("%s", &replacement),
                _ => rule.message.replacen("%s", &matched, 1),
            };
            findings.push(Finding {
                rule_id: rule.id.clone(),
                category: rule.category.clone(),
                severity: rule.level,
                message,
                suggestion: rule.suggestion.replacen("%s", &replacement, 1),
                text: matched,
                start,
                end,
                line,
                column,
            });
            if findings.len() >= max_findings {
                break;
            }
        }
    }
    findings.sort_by(|a, b| (a.start, &a.rule_id).cmp(&(b.start, &b.rule_id)));
    findings.truncate(max_findings);
    findings
}

type Match = (usize, usize, String);

fn phrase_at(tokens: &[Token], i: usize, phrase: &[&str]) -> bool {
    phrase.len() <= tokens.len() - i
        && phrase
            .iter()
            .enumerate()
            .all(|(k, w)| tokens[i + k].lower == *w)
        && tokens[i..i + phrase.len()]
            .windows(2)
            .all(|w| w[0].sentence == w[1].sentence)
}

fn phrases<'a>(
    rule: &Rule,
    tokens: &[Token],
    list: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<Match> {
    // Phrases split once and indexed by their first word, so each token
    // only tries the phrases that can start there.
    let list: Vec<(Vec<String>, &str)> = list
        .map(|(p, r)| (p.split_whitespace().map(str::to_lowercase).collect(), r))
        .filter(|(words, _): &(Vec<String>, &str)| !words.is_empty())
        .collect();
    let mut by_first: HashMap<&str, Vec<(Vec<&str>, &str)>> = HashMap::new();
    for (words, replacement) in &list {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        by_first
            .entry(words[0])
            .or_default()
            .push((words, replacement));
    }
    let at_start = rule.scope.as_deref() == Some("sentence_start");
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let mut matched: Option<(usize, &str)> = None;
        if !at_start || tokens[i].sentence_start {
            for (words, replacement) in by_first
                .get(tokens[i].lower.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if phrase_at(tokens, i, words)
                    && matched.as_ref().is_none_or(|(n, _)| words.len() > *n)
                {
                    matched = Some((words.len(), *replacement));
                }
            }
        }
        if let Some((n, replacement)) = matched {
            out.push((
                tokens[i].start,
                tokens[i + n - 1].end,
                replacement.to_owned(),
            ));
            i += n;
        } else {
            i += 1;
        }
    }
    out
}

fn existence(rule: &Rule, tokens: &[Token], chars: &[char]) -> Vec<Match> {
    let mut out = phrases(rule, tokens, rule.tokens.iter().map(|t| (t.as_str(), "")));
    if let Some(suffix) = &rule.suffix {
        for t in tokens {
            if t.lower.ends_with(suffix.as_str())
                && t.lower.chars().count() >= rule.min_length
                && t.lower.chars().all(char::is_alphabetic)
                && !rule.exceptions.contains(&t.lower)
            {
                out.push((t.start, t.end, String::new()));
            }
        }
    }
    for raw in &rule.raw {
        let needle: Vec<char> = raw.chars().collect();
        if needle.is_empty() {
            continue;
        }
        let mut i = 0;
        while i + needle.len() <= chars.len() {
            if chars[i..i + needle.len()] == needle[..] {
                out.push((i, i + needle.len(), String::new()));
                i += needle.len();
            } else {
                i += 1;
            }
        }
    }
    out
}

fn substitution(rule: &Rule, tokens: &[Token]) -> Vec<Match> {
    phrases(
        rule,
        tokens,
        rule.swap.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

fn occurrence(rule: &Rule, tokens: &[Token]) -> Vec<Match> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let sentence = tokens[i].sentence;
        let j = tokens[i..]
            .iter()
            .position(|t| t.sentence != sentence)
            .map_or(tokens.len(), |p| i + p);
        let count = j - i;
        if rule.max > 0 && count > rule.max {
            out.push((tokens[i].start, tokens[j - 1].end, count.to_string()));
        }
        i = j;
    }
    out
}

fn repetition(tokens: &[Token]) -> Vec<Match> {
    tokens
        .windows(2)
        .filter(|w| {
            w[0].lower == w[1].lower
                && w[0].sentence == w[1].sentence
                && w[0].lower.chars().any(char::is_alphabetic)
        })
        .map(|w| (w[0].start, w[1].end, String::new()))
        .collect()
}

const TO_BE: [&str; 8] = ["am", "are", "were", "being", "is", "been", "was", "be"];
const IRREGULAR: [&str; 60] = [
    "awoken",
    "been",
    "born",
    "beat",
    "become",
    "begun",
    "bent",
    "bound",
    "bitten",
    "bled",
    "blown",
    "broken",
    "brought",
    "built",
    "bought",
    "caught",
    "chosen",
    "done",
    "drawn",
    "driven",
    "eaten",
    "fallen",
    "fed",
    "felt",
    "fought",
    "found",
    "forgotten",
    "forgiven",
    "frozen",
    "given",
    "gone",
    "grown",
    "heard",
    "hidden",
    "held",
    "hurt",
    "kept",
    "known",
    "laid",
    "led",
    "left",
    "lost",
    "made",
    "meant",
    "met",
    "paid",
    "put",
    "read",
    "said",
    "seen",
    "sold",
    "sent",
    "shown",
    "shut",
    "spoken",
    "spent",
    "stolen",
    "taken",
    "taught",
    "written",
];

fn passive(tokens: &[Token]) -> Vec<Match> {
    tokens
        .windows(2)
        .filter(|w| {
            w[0].sentence == w[1].sentence
                && TO_BE.contains(&w[0].lower.as_str())
                && ((w[1].lower.ends_with("ed") && w[1].lower.chars().count() > 3)
                    || IRREGULAR.contains(&w[1].lower.as_str()))
        })
        .map(|w| (w[0].start, w[1].end, String::new()))
        .collect()
}

/// Character offset → (line, column), both 1-based.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(chars: &[char]) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            chars
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == '\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self
            .starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        (line.max(1), offset - start + 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ids(text: &str, tone: Option<&str>) -> Vec<String> {
        check(text, &guides_for(tone, None), 100)
            .into_iter()
            .map(|f| f.rule_id)
            .collect()
    }

    #[test]
    fn every_builtin_guide_parses() {
        for name in builtin_names() {
            assert!(builtin(name).is_some(), "{name}");
        }
    }

    #[test]
    fn finds_the_classic_problems() {
        let text = "There are many reasons. The report was written by the the committee.\nWe did this in order to win, and it was extremely quickly done.";
        let found = check(text, &guides_for(None, None), 100);
        let ids: Vec<&str> = found.iter().map(|f| f.rule_id.as_str()).collect();
        for id in [
            "there-is",
            "weasel-words",
            "passive-voice",
            "repeated-word",
            "wordy",
            "adverbs",
        ] {
            assert!(ids.contains(&id), "{id} missing in {ids:?}");
        }
        let wordy = found.iter().find(|f| f.rule_id == "wordy").unwrap();
        assert_eq!(wordy.text, "in order to");
        assert_eq!(wordy.suggestion, "Use 'to'.");
        assert_eq!(wordy.line, 2);
        assert_eq!(
            &text
                .chars()
                .skip(wordy.start)
                .take(wordy.end - wordy.start)
                .collect::<String>(),
            "in order to"
        );
    }

    #[test]
    fn tone_selects_guides() {
        assert!(ids("We don't know.", Some("formal")).contains(&"formal-contractions".to_owned()));
        assert!(!ids("We don't know.", Some("casual")).contains(&"formal-contractions".to_owned()));
    }

    #[test]
    fn long_sentences_are_reported() {
        let long = format!("{}.", vec!["word"; 35].join(" "));
        assert!(ids(&long, None).contains(&"sentence-length".to_owned()));
    }
}
