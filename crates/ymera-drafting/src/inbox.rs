//! The agent inbox of `drafting` (DESIGN §3): routed chat messages arrive as
//! NATS requests on `agent.drafting.inbox` (queue group `drafting`). Each is
//! acknowledged at once with `{}`; a `request`/`command` envelope with payload
//! `{"message": "<text>"}` is answered through `communication.send` with a
//! `response` envelope whose payload is `{"success", "agent", "response"
//! (Markdown analysis of the text: the fenced blocks when there are any,
//! else the whole message), "processing_time"}` or `{"success": false, "error"}`.
//! The inbox plumbing (subscription, acknowledgement, bounds, sending with
//! the service credential) is `ymera_core::agent::AgentInbox`; this module
//! only builds the answer.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use ymera_core::envelope::Envelope;

use crate::service::{Analysis, NAME, analyze_text};

/// The text to analyse: the fenced blocks of the message, else all of it.
fn text_of(message: &str) -> String {
    let mut blocks = Vec::new();
    let mut inside: Option<Vec<&str>> = None;
    for line in message.lines() {
        if line.trim_start().starts_with("```") {
            match inside.take() {
                Some(lines) => blocks.push(lines.join("\n")),
                None => inside = Some(Vec::new()),
            }
        } else if let Some(lines) = inside.as_mut() {
            lines.push(line);
        }
    }
    if blocks.is_empty() {
        message.to_owned()
    } else {
        blocks.join("\n\n")
    }
}

/// The payload of a `response` envelope.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Answer {
    /// The analysis, as Markdown.
    Analysed {
        /// Always true.
        success: bool,
        agent: &'static str,
        response: String,
        /// Seconds.
        processing_time: f64,
    },
    /// Why there is none.
    Failed {
        /// Always false.
        success: bool,
        agent: &'static str,
        error: &'static str,
    },
}

impl Answer {
    fn failed(error: &'static str) -> Answer {
        Answer::Failed {
            success: false,
            agent: NAME,
            error,
        }
    }
}

pub(crate) async fn answer(envelope: &Envelope, max: usize) -> Value {
    let answer = analyse(envelope, max).await;
    serde_json::to_value(&answer).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "inbox answer not serialisable");
        Value::Null
    })
}

async fn analyse(envelope: &Envelope, max: usize) -> Answer {
    let started = Instant::now();
    let Some(message) = envelope.payload.get("message").and_then(Value::as_str) else {
        return Answer::failed("expected a payload {\"message\": \"<text>\"}");
    };
    if message.len() > max {
        return Answer::failed("message too large");
    }
    let text = text_of(message);
    let tone = envelope
        .payload
        .get("tone")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let audience = envelope
        .payload
        .get("target_audience")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let analysis = tokio::task::spawn_blocking(move || {
        analyze_text(&text, tone.as_deref(), audience.as_deref())
    })
    .await;
    match analysis {
        Ok(a) => Answer::Analysed {
            success: true,
            agent: NAME,
            response: to_markdown(&a),
            processing_time: started.elapsed().as_secs_f64(),
        },
        Err(_) => Answer::failed("analysis failed"),
    }
}

/// A Markdown report of an analysis (findings capped at 50).
pub fn to_markdown(a: &Analysis) -> String {
    let r = &a.readability;
    let mut out = format!(
        "## Writing analysis\n\n{} words, {} sentences, {} paragraphs, about {:.0} s to read.\n\n\
         | score | value |\n|---|---|\n| Flesch reading ease | {:.1} |\n| Flesch–Kincaid grade | {:.1} |\n\
         | Gunning fog | {:.1} |\n| SMOG | {:.1} |\n| Coleman–Liau | {:.1} |\n| ARI | {:.1} |\n| Dale–Chall | {:.1} |\n",
        a.words,
        a.sentences,
        a.paragraphs,
        a.reading_time_seconds,
        r.flesch_reading_ease,
        r.flesch_kincaid_grade,
        r.gunning_fog,
        r.smog_index,
        r.coleman_liau_index,
        r.automated_readability_index,
        r.dale_chall_readability_score
    );
    if !a.findings.is_empty() {
        out.push_str("\n### Style\n\n");
        for f in a.findings.iter().take(50) {
            out.push_str(&format!(
                "- line {}, column {}: {} — {} (`{}`)\n",
                f.line, f.column, f.message, f.suggestion, f.rule_id
            ));
        }
    }
    if !a.suggestions.is_empty() {
        out.push_str("\n### Suggestions\n\n");
        for s in &a.suggestions {
            out.push_str(&format!("- {s}\n"));
        }
    }
    out
}

/// The agent card registered with `communication.agents.register` (DESIGN §9),
/// reachable by name or as `skill:writing_analysis`.
pub(crate) fn card() -> Value {
    serde_json::json!({
        "name": NAME,
        "description": "Analyses prose in chat messages: readability scores and style findings; keeps drafts with revisions and live collaboration.",
        "version": env!("CARGO_PKG_VERSION"),
        "skills": [
            {"id": "writing_analysis", "name": "Writing analysis",
             "description": "Send {\"message\": \"<text>\"}; answers readability (textstat's scores) and style findings in Markdown.",
             "tags": ["readability", "style", "writing", "drafts"],
             "examples": ["How readable is this paragraph? ..."]},
            {"id": "drafting", "name": "Drafting",
             "description": "Drafts with revisions, comments, exports and collaboration (drafting.* endpoints).",
             "tags": ["drafts", "collaboration"], "examples": []}
        ],
        "input_modes": ["application/json", "text/plain"],
        "output_modes": ["text/markdown", "application/json"],
        "ttl_s": 30
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_blocks_are_what_is_analysed() {
        assert_eq!(
            text_of("check this:\n```\nHello there.\n```\n"),
            "Hello there."
        );
        assert_eq!(text_of("Plain words."), "Plain words.");
    }
}
