//! The agent inbox of `code-analysis` (DESIGN §3): routed chat messages arrive
//! as NATS requests on `agent.code-analysis.inbox` (queue group
//! `code-analysis`, so instances share the work). Each is acknowledged at
//! once with `{}`; then, for a `request`/`command` envelope whose payload is
//! `{"message": "<text>"}`, the agent answers through `communication.send`
//! with a `response` envelope to the sender: the Markdown report when
//! [`crate::can_handle`] accepts the message, else a polite
//! `{"success": false, "error", "capabilities"}` saying what it can do.
//! The inbox plumbing (subscription, acknowledgement, bounds, sending with
//! the service credential) is `ymera_core::agent::AgentInbox`; this module
//! only builds the answer.

use std::time::Instant;

use serde_json::{Value, json};
use ymera_core::envelope::Envelope;

use crate::AnalysisRequest;
use crate::service::{NAME, analyze_blocking, limits_for};

/// The response payload for a chat request.
pub(crate) async fn answer(envelope: &Envelope, max_message_size: usize) -> Value {
    let started = Instant::now();
    let Some(text) = envelope.payload.get("message").and_then(Value::as_str) else {
        return failure(
            "expected a payload {\"message\": \"<text>\"} with fenced code blocks to review",
            started,
        );
    };
    if !crate::can_handle(text) {
        return decline(text, started);
    }
    let request = AnalysisRequest {
        files: Vec::new(),
        message: Some(text.to_owned()),
        language: envelope
            .payload
            .get("language")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    match analyze_blocking(request, limits_for(max_message_size)).await {
        Ok(report) => json!({
            "success": true,
            "agent": NAME,
            "response": fit(report.to_markdown(), max_message_size / 2),
            "processing_time": started.elapsed().as_secs_f64(),
        }),
        Err(err) => failure(&err.message, started),
    }
}

/// What the agent can do, listed when it declines a message.
pub const CAPABILITIES: [&str; 5] = [
    "complexity: cyclomatic complexity, length and parameters of every function (lizard-compatible)",
    "security: eval/exec, shell injection and subprocess calls, hard-coded passwords and passwords read with input(), weak hashes, unsafe deserialisation, SQL built from strings (bandit's ids for Python)",
    "performance: inefficient loops, string building in loops, blocking calls",
    "code smells: empty functions, bare excepts, wildcard imports, long or deeply nested functions",
    "languages: Python, JavaScript, Java, Go and Rust; reports as Markdown here, or JSON and SARIF from code-analysis.analyze",
];

/// A polite refusal of a message the agent cannot handle (no code, or no
/// question about it), saying what it can do.
fn decline(text: &str, started: Instant) -> Value {
    let why = if crate::has_code(text) {
        "I can review this code: tell me what to look for, e.g. \"any security bugs here?\" or \"check the complexity\"."
    } else {
        "I didn't find any code in your message. Paste it in a fenced block (```python … ```) and ask, e.g. \"any security bugs here?\"."
    };
    let mut answer = failure(
        &format!(
            "Sorry, I'm the code-analysis agent and can only review code. {why} I can check: {}.",
            CAPABILITIES.join("; ")
        ),
        started,
    );
    answer["capabilities"] = json!(CAPABILITIES);
    answer
}

/// The seed's failure shape: `{"success": false, "error", "agent", "processing_time"}`.
fn failure(message: &str, started: Instant) -> Value {
    json!({
        "success": false,
        "agent": NAME,
        "error": message,
        "processing_time": started.elapsed().as_secs_f64(),
    })
}

/// Cuts a Markdown report to at most `limit` bytes (on a line boundary) so the
/// response envelope stays under the transport's message size.
fn fit(mut markdown: String, limit: usize) -> String {
    const NOTE: &str = "\n\n_(report truncated: too large for one message; use `code-analysis.analyze` for the full report)_\n";
    if markdown.len() <= limit {
        return markdown;
    }
    let mut cut = limit.saturating_sub(NOTE.len());
    while cut > 0 && !markdown.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = markdown[..cut].rfind('\n').unwrap_or(cut);
    markdown.truncate(cut);
    markdown.push_str(NOTE);
    markdown
}

/// The agent card registered with `communication.agents.register` (DESIGN §9): the
/// seed's code-review agent, reachable by name or as `skill:code_review`.
pub(crate) fn card() -> Value {
    json!({
        "name": NAME,
        "description": "Reviews code in chat messages: complexity, security, performance and style findings (Python, JavaScript/TypeScript, Rust, Go, Java, C/C++, …).",
        "version": env!("CARGO_PKG_VERSION"),
        "skills": [
            {"id": "code_review", "name": "Code review",
             "description": "Send {\"message\": \"<text with fenced code>\"}; answers a Markdown review.",
             "tags": ["review", "analyze", "check", "performance", "security", "bugs", "code quality"],
             "examples": ["any security bugs here?\n```python\nimport os\nos.system(input())\n```"]},
            {"id": "code_analysis", "name": "Code analysis",
             "description": "Complexity metrics and findings per function (code-analysis.analyze).",
             "tags": ["complexity", "lint"], "examples": []}
        ],
        "input_modes": ["application/json", "text/plain"],
        "output_modes": ["text/markdown", "application/json"],
        "ttl_s": 30
    })
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_keeps_small_reports_and_cuts_large_ones_on_a_line() {
        assert_eq!(fit("## a\nb\n".to_owned(), 100), "## a\nb\n");
        let long = "| `f` | é |\n".repeat(1000);
        let cut = fit(long, 2000);
        assert!(cut.len() <= 2000);
        assert!(cut.ends_with("full report)_\n"));
        assert!(cut.contains("| `f` | é |\n\n_(report truncated"));
    }
}
