//! `drafting.analyze`: readability, style findings and suggestions of a
//! text or a stored draft.

use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ymera_core::Error;
use ymera_core::runtime::{Call, Open, Reply, ReplyBody, RequestBody, ServiceRequest};

use super::{Read, Shared, check_size};
use crate::readability::{Readability, TextCounts, counts_and_readability};
use crate::style::{Finding, Level, check, guides_for};

/// Most style findings in one analysis.
pub const MAX_FINDINGS: usize = 1_000;

/// Reply header of `drafting.analyze`: microseconds the service spent on the
/// request (decoding, analysis, encoding), for benchmarks and clients that
/// want to separate service time from transport.
pub const PROCESSING_TIME_HEADER: &str = "Ymera-Processing-Us";

/// `drafting.analyze` request: a stored draft or a text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    #[serde(default)]
    draft_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tone: Option<String>,
    #[serde(default)]
    target_audience: Option<String>,
}

/// The analysis of a text (DESIGN §4).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    /// Words.
    pub words: usize,
    /// Sentences.
    pub sentences: usize,
    /// Paragraphs.
    pub paragraphs: usize,
    /// Characters.
    pub characters: usize,
    /// Characters without whitespace.
    pub characters_no_spaces: usize,
    /// Syllables.
    pub syllables: usize,
    /// Reading time (seconds).
    pub reading_time_seconds: f64,
    /// Average words per sentence.
    pub average_sentence_length: f64,
    /// Readability scores (textstat names).
    pub readability: Readability,
    /// Style findings.
    pub findings: Vec<Finding>,
    /// Overall content-optimisation suggestions.
    pub suggestions: Vec<String>,
    /// Style guides applied.
    pub style_guides: Vec<String>,
}

/// A request or reply with the time its request started being decoded: the
/// reply carries [`PROCESSING_TIME_HEADER`], the microseconds from decoding
/// the request to encoding the reply.
#[derive(Debug)]
pub struct Timed<T> {
    started: Instant,
    value: T,
}

impl<T: DeserializeOwned + Send + 'static> RequestBody for Timed<T> {
    fn parse(request: &ServiceRequest) -> Result<Self, Error> {
        let started = Instant::now();
        Ok(Timed {
            started,
            value: request.json()?,
        })
    }

    fn schema_name() -> String {
        <T as RequestBody>::schema_name()
    }
}

impl<T: Serialize + Send + 'static> ReplyBody for Timed<T> {
    fn into_reply(self) -> Result<Reply, Error> {
        let mut reply = Reply::json(&self.value)?;
        reply.headers.insert(
            PROCESSING_TIME_HEADER,
            self.started.elapsed().as_micros().to_string().as_str(),
        );
        Ok(reply)
    }

    fn schema_name() -> String {
        <T as ReplyBody>::schema_name()
    }
}

/// Analysing a text needs no permission; analysing a stored draft needs
/// `drafting:read`, checked here since it depends on the request.
pub(super) async fn analyze(
    state: Shared,
    call: Call<Open>,
    req: Timed<AnalyzeRequest>,
) -> Result<Timed<Analysis>, Error> {
    let Timed {
        started,
        value: body,
    } = req;
    let (text, tone, audience) = match (&body.draft_id, body.text) {
        (Some(id), None) => {
            state.authorize(&call, Read::PERMISSION).await?;
            let d = state.store.get(id).await?;
            (
                d.content,
                body.tone.or(d.tone),
                body.target_audience.or(d.target_audience),
            )
        }
        (None, Some(text)) => (text, body.tone, body.target_audience),
        _ => {
            return Err(Error::invalid_request(
                "give exactly one of draft_id and text",
            ));
        }
    };
    check_size(&text)?;
    let analysis = tokio::task::spawn_blocking(move || {
        analyze_text(&text, tone.as_deref(), audience.as_deref())
    })
    .await
    .map_err(Error::internal)?;
    state.stats.analysis(started.elapsed());
    Ok(Timed {
        started,
        value: analysis,
    })
}

/// Analyses `text` for a tone and audience.
pub fn analyze_text(text: &str, tone: Option<&str>, audience: Option<&str>) -> Analysis {
    let (c, r) = counts_and_readability(text);
    let guides = guides_for(tone, audience);
    let findings = check(text, &guides, MAX_FINDINGS);
    let avg = if c.sentences == 0 {
        0.0
    } else {
        c.words as f64 / c.sentences as f64
    };
    let suggestions = suggestions(&c, &r, &findings, avg, audience);
    Analysis {
        words: c.words,
        sentences: c.sentences,
        paragraphs: c.paragraphs,
        characters: c.characters,
        characters_no_spaces: c.characters_no_spaces,
        syllables: c.syllables,
        reading_time_seconds: c.reading_time_seconds,
        average_sentence_length: avg,
        readability: r,
        findings,
        suggestions,
        style_guides: guides.into_iter().map(|g| g.name).collect(),
    }
}

fn suggestions(
    c: &TextCounts,
    r: &Readability,
    findings: &[Finding],
    avg: f64,
    audience: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    if c.words == 0 {
        out.push("The text is empty.".to_owned());
        return out;
    }
    let general = !matches!(
        audience,
        Some("technical" | "experts" | "developers" | "engineers")
    );
    if general && r.flesch_reading_ease < 50.0 {
        out.push(format!(
            "Flesch reading ease is {:.0} (hard to read): use shorter sentences and simpler words.",
            r.flesch_reading_ease
        ));
    }
    if avg > 25.0 {
        out.push(format!("Sentences average {avg:.0} words; aim for 15-20."));
    }
    let count = |id: &str| findings.iter().filter(|f| f.rule_id == id).count();
    let passive = count("passive-voice");
    if passive * 10 > c.sentences.max(1) * 2 {
        out.push(format!(
            "{passive} passive constructions: prefer the active voice."
        ));
    }
    let weasel = count("weasel-words") + count("adverbs");
    if weasel > 0 && weasel * 50 > c.words {
        out.push("Many weasel words and adverbs: be specific.".to_owned());
    }
    if c.paragraphs == 1 && c.words > 150 {
        out.push("One long paragraph: break it up.".to_owned());
    }
    if findings.iter().any(|f| f.severity == Level::Error) {
        out.push("Fix the errors (e.g. repeated words) first.".to_owned());
    }
    out
}
