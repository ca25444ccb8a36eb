//! The generated English document every run analyses (deterministic), and
//! the small PRNG the document and the simulated editors draw from.

/// Words in the generated document (at least).
pub(super) const DOCUMENT_WORDS: usize = 2_000;

/// A small deterministic PRNG (xorshift64*), so every run analyses and
/// types the same things.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.get(self.below(items.len())).copied().unwrap_or("")
    }

    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const ADJECTIVES: &[&str] = &[
    "new",
    "old",
    "small",
    "large",
    "careful",
    "important",
    "significant",
    "reliable",
    "complicated",
    "simple",
    "quarterly",
    "international",
    "well-known",
    "experimental",
    "quiet",
    "independent",
    "comprehensive",
    "unexpected",
    "local",
    "remarkable",
];
const NOUNS: &[&str] = &[
    "team",
    "report",
    "budget",
    "customer",
    "meeting",
    "schedule",
    "proposal",
    "database",
    "manager",
    "engineer",
    "question",
    "decision",
    "committee",
    "product",
    "analysis",
    "deadline",
    "document",
    "community",
    "infrastructure",
    "measurement",
    "microservice",
    "river",
    "garden",
    "city",
];
const VERBS_PAST: &[&str] = &[
    "reviewed",
    "changed",
    "finished",
    "explained",
    "questioned",
    "improved",
    "delayed",
    "approved",
    "rejected",
    "summarized",
    "celebrated",
    "investigated",
];
const VERBS: &[&str] = &[
    "review",
    "change",
    "finish",
    "explain",
    "improve",
    "support",
    "measure",
    "understand",
    "publish",
    "organize",
];
const ADVERBS: &[&str] = &[
    "quickly",
    "carefully",
    "really",
    "extremely",
    "quietly",
    "obviously",
    "clearly",
    "completely",
];
const PREPOSITIONS: &[&str] = &[
    "for", "with", "after", "before", "during", "about", "under", "beside",
];
const OPENERS: &[&str] = &[
    "However,",
    "In addition,",
    "Obviously,",
    "As a matter of fact,",
    "Meanwhile,",
    "Later that week,",
    "At the end of the day,",
];
const SHORT: &[&str] = &[
    "It worked.",
    "Nobody objected.",
    "Why not?",
    "That's fine!",
    "We'll see.",
    "Costs rose by 3.5 percent.",
];

fn cap(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn sentence(rng: &mut Rng) -> String {
    let (a, n, v, p) = (
        rng.pick(ADJECTIVES),
        rng.pick(NOUNS),
        rng.pick(VERBS_PAST),
        rng.pick(PREPOSITIONS),
    );
    let (a2, n2, n3) = (rng.pick(ADJECTIVES), rng.pick(NOUNS), rng.pick(NOUNS));
    match rng.below(10) {
        0 => format!("The {a} {n} {v} the {n2} {p} the {a2} {n3}."),
        1 => format!(
            "There are {} {n}s that we {} {} every year.",
            2 + rng.below(40),
            rng.pick(VERBS),
            rng.pick(ADVERBS)
        ),
        2 => format!(
            "The {n} was {v} by the {n2} in order to {} the {a} {n3}.",
            rng.pick(VERBS)
        ),
        3 => format!(
            "{} the {n2} {v} the {n} {}, but it's {a} to {} it again.",
            rng.pick(OPENERS),
            rng.pick(ADVERBS),
            rng.pick(VERBS)
        ),
        4 => rng.pick(SHORT).to_owned(),
        5 => format!(
            "When the {n} {v} the {a} {n2}, the {n3} {} the {} {} and the {} {}, which {} everyone {p} the {} {}.",
            rng.pick(VERBS_PAST),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS),
            rng.pick(VERBS_PAST),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS)
        ),
        6 => format!("Did the {n} really {} the {a} {n2}?", rng.pick(VERBS)),
        7 => format!(
            "Our {a} {n} has {} the {n2} since {}.",
            rng.pick(VERBS_PAST),
            1990 + rng.below(36)
        ),
        8 => format!(
            "{} {n}s {} {p} the {a2} {n2}.",
            cap(a),
            rng.pick(VERBS_PAST)
        ),
        _ => format!(
            "Each {n} should {} the {n2} {} before the {a} {n3} is {v}.",
            rng.pick(VERBS),
            rng.pick(ADVERBS)
        ),
    }
}

/// A deterministic English document of at least `words` words: paragraphs
/// of 3-8 sentences of varied shape (short, long, passive, questions,
/// "there are" openings, contractions, numbers, hyphenated words).
pub(super) fn document(words: usize) -> String {
    let mut rng = Rng::new(2_000);
    let mut out = String::new();
    let mut count = 0;
    while count < words {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        let sentences = 3 + rng.below(6);
        for i in 0..sentences {
            let s = cap(&sentence(&mut rng));
            count += s.split_whitespace().count();
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&s);
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_document_is_deterministic_and_about_2000_words() {
        let a = document(DOCUMENT_WORDS);
        assert_eq!(a, document(DOCUMENT_WORDS));
        let words = a.split_whitespace().count();
        assert!((2000..2100).contains(&words), "{words}");
        assert!(a.contains("\n\n"));
        assert!(a.contains("There are"));
        assert!(a.contains('?'));
    }
}
