//! The `drafting` service: endpoint handlers and background work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use ymera_core::auth::Authorizer;
use ymera_core::config::AuthMode;
use ymera_core::error::Violation;
use ymera_core::runtime::{Reply, Runtime, ServiceBuilder, ServiceRequest, with_state};
use ymera_core::{Error, ErrorKind};

use crate::autosave::{AutoSave, PendingSave};
use crate::collab::{Collab, PendingCommit};
use crate::diff::{DiffLevel, unified, words};
use crate::export::{ExportFormat, html_document, to_text};
use crate::readability::{Readability, counts_and_readability};
use crate::store::{Change, Comment, Draft, DraftStore, ListFilter, Template, word_count};
use crate::style::{Finding, Level, check, guides_for};

/// The service name.
pub const NAME: &str = "drafting";
/// Largest draft content (bytes).
pub const MAX_DRAFT_BYTES: usize = 10 * 1024 * 1024;
/// Most style findings in one analysis.
pub const MAX_FINDINGS: usize = 1_000;
/// Lifecycle statuses.
pub const STATUSES: [&str; 5] = ["draft", "in_review", "approved", "published", "archived"];

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct State {
    store: DraftStore,
    autosave: AutoSave,
    collab: Collab,
    /// Collaboration broadcasts (subject, payload), published in queue
    /// order by one task.
    broadcasts: mpsc::Sender<(String, bytes::Bytes)>,
    authorizer: Arc<Authorizer>,
}

type Shared = Arc<State>;

/// Allowed lifecycle moves.
pub fn transition_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("draft", "in_review")
            | ("in_review", "draft" | "approved")
            | ("approved", "published" | "in_review")
            | ("published", "draft")
            | ("draft" | "in_review" | "approved" | "published", "archived")
            | ("archived", "draft")
    )
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn check_id(path: &str, id: &str) -> Result<(), Error> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(Error::validation(vec![Violation::new(
            path,
            "1-128 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'",
        )]))
    }
}

fn check_size(content: &str) -> Result<(), Error> {
    if content.len() > MAX_DRAFT_BYTES {
        return Err(Error::payload_too_large(
            "draft content",
            content.len(),
            MAX_DRAFT_BYTES,
        ));
    }
    Ok(())
}

fn check_tags(tags: &[String]) -> Result<(), Error> {
    if tags.len() > 50 || tags.iter().any(|t| t.is_empty() || t.chars().count() > 64) {
        return Err(Error::validation(vec![Violation::new(
            "/tags",
            "at most 50 tags of 1-64 characters",
        )]));
    }
    Ok(())
}

fn check_title(title: &str) -> Result<(), Error> {
    if title.trim().is_empty() || title.chars().count() > 500 {
        return Err(Error::validation(vec![Violation::new(
            "/title",
            "1-500 characters",
        )]));
    }
    Ok(())
}

impl State {
    /// A check that depends on the request's content (hard delete needs
    /// `drafting:admin` on top of the declared `drafting:write`; analysing
    /// a stored draft needs `drafting:read`), with the process's
    /// [`ymera_core::auth::Authorizer`] when `YMERA_AUTH=required`; with
    /// auth off everything is allowed except admin actions, which need the
    /// `X-Ymera-Role: admin` header.
    async fn authorize(&self, req: &ServiceRequest, permission: &'static str) -> Result<(), Error> {
        if self.authorizer.mode() == AuthMode::Off {
            if permission == "drafting:admin" && req.header("X-Ymera-Role") != Some("admin") {
                return Err(Error::forbidden("hard delete needs an administrator"));
            }
            return Ok(());
        }
        self.authorizer.check(req, permission).await.map(|_| ())
    }
}

// ---- requests ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    #[serde(default)]
    draft_id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    document_type: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    template_id: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    author_id: String,
    #[serde(default)]
    tone: Option<String>,
    #[serde(default)]
    target_audience: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    collaborators: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdRequest {
    draft_id: String,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    draft_id: String,
    #[serde(default)]
    expected_version: Option<i32>,
    #[serde(default)]
    author_id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    tone: Option<String>,
    #[serde(default)]
    target_audience: Option<String>,
    #[serde(default)]
    document_type: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    autosave: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    #[serde(default)]
    author_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRequest {
    draft_id: String,
    #[serde(default)]
    hard: bool,
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyzeRequest {
    #[serde(default)]
    draft_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tone: Option<String>,
    #[serde(default)]
    target_audience: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRequest {
    draft_id: String,
    #[serde(default)]
    format: ExportFormat,
    #[serde(default)]
    revision: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevisionsRequest {
    draft_id: String,
    #[serde(default)]
    before: Option<i32>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    include_diff: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffRequest {
    draft_id: String,
    from: i32,
    #[serde(default)]
    to: Option<i32>,
    #[serde(default)]
    level: DiffLevel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreRequest {
    draft_id: String,
    revision: i32,
    #[serde(default)]
    author_id: Option<String>,
    #[serde(default)]
    expected_version: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentRequest {
    draft_id: String,
    #[serde(default = "default_action")]
    action: String,
    #[serde(default)]
    comment_id: Option<String>,
    #[serde(default)]
    author_id: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    start: Option<usize>,
    #[serde(default)]
    end: Option<usize>,
}

fn default_action() -> String {
    "add".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    draft_id: String,
    to: String,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateSetRequest {
    #[serde(default)]
    template_id: Option<String>,
    name: String,
    #[serde(default)]
    document_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    content: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TemplateListRequest {
    #[serde(default)]
    document_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    draft_id: String,
    user_id: String,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollabUpdateRequest {
    draft_id: String,
    client_id: String,
    #[serde(default)]
    update: Option<String>,
    #[serde(default)]
    state_vector: Option<String>,
    #[serde(default)]
    leave: bool,
    /// Include the merged text in the reply; by default only replies to
    /// requests without an update or with a state vector (a resync) carry
    /// it, so keystroke replies stay small and cheap.
    #[serde(default)]
    text: Option<bool>,
}

// ---- analysis ----

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
    c: &crate::readability::TextCounts,
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

// ---- handlers ----

fn placeholders(content: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && !out.iter().any(|n| n == name)
        {
            out.push(name.to_owned());
        }
        rest = &after[end + 2..];
    }
    out
}

fn fill_template(content: &str, vars: &BTreeMap<String, String>) -> Result<String, Error> {
    let names = placeholders(content);
    let missing: Vec<Violation> = names
        .iter()
        .filter(|n| !vars.contains_key(*n))
        .map(|n| Violation::new(format!("/variables/{n}"), "the template needs this value"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::validation(missing));
    }
    let mut out = content.to_owned();
    for name in names {
        let value = vars.get(&name).map(String::as_str).unwrap_or_default();
        out = out.replace(&format!("{{{{{name}}}}}"), value);
        out = out.replace(&format!("{{{{ {name} }}}}"), value);
    }
    Ok(out)
}

/// Who made a change: with `YMERA_AUTH=required`, the verified owner of the
/// request's credential (whatever the request's own field says);
/// otherwise that field, or `fallback`.
fn author(
    req: &ServiceRequest,
    given: Option<String>,
    fallback: impl FnOnce() -> String,
) -> String {
    match req.principal() {
        Some(principal) => principal.owner.clone(),
        None => given.unwrap_or_else(fallback),
    }
}

async fn create(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let mut body: CreateRequest = req.json()?;
    body.author_id = author(&req, Some(body.author_id), String::new);
    check_id("/author_id", &body.author_id)?;
    let draft_id = body
        .draft_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    check_id("/draft_id", &draft_id)?;
    check_tags(&body.tags)?;
    let (content, document_type, title) = match &body.template_id {
        Some(tid) => {
            let template = state.store.template(tid).await?;
            let content = fill_template(&template.content, &body.variables)?;
            let title = body.title.clone().unwrap_or_else(|| template.name.clone());
            (
                content,
                body.document_type.clone().unwrap_or(template.document_type),
                title,
            )
        }
        None => (
            body.content.clone().unwrap_or_default(),
            body.document_type
                .clone()
                .unwrap_or_else(|| "document".to_owned()),
            body.title.clone().unwrap_or_default(),
        ),
    };
    check_title(&title)?;
    check_size(&content)?;
    let now = Utc::now();
    let draft = Draft {
        draft_id,
        title,
        document_type,
        word_count: word_count(&content),
        content,
        template_id: body.template_id,
        author_id: body.author_id,
        status: "draft".to_owned(),
        version: 1,
        tone: body.tone,
        target_audience: body.target_audience,
        created_at: now,
        updated_at: now,
        metadata: body.metadata.unwrap_or_else(|| json!({})),
        collaborators: body.collaborators,
        tags: body.tags,
    };
    state.store.create(&draft).await?;
    Reply::json(&draft)
}

async fn get(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: IdRequest = req.json()?;
    // Before the read: not pending then means the content has every save.
    let pending = state.autosave.pending(&body.draft_id).await?;
    let draft = state.store.get(&body.draft_id).await?;
    let mut value = serde_json::to_value(&draft).map_err(Error::internal)?;
    value["autosave_pending"] = json!(pending);
    value["editors"] = json!(state.collab.editors(&body.draft_id));
    if body.include.iter().any(|i| i == "comments") {
        value["comments"] = json!(state.store.comments(&body.draft_id).await?);
    }
    if body.include.iter().any(|i| i == "transitions") {
        value["transitions"] = json!(state.store.transitions(&body.draft_id).await?);
    }
    Reply::json(&value)
}

async fn update(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: UpdateRequest = req.json()?;
    if let Some(c) = &body.content {
        check_size(c)?;
    }
    if let Some(t) = &body.title {
        check_title(t)?;
    }
    if let Some(t) = &body.tags {
        check_tags(t)?;
    }
    if state.collab.is_active(&body.draft_id) {
        return Err(Error::conflict(format!(
            "draft {} is being edited collaboratively; send changes through drafting.collab.update",
            body.draft_id
        )));
    }
    let draft = state.store.get(&body.draft_id).await?;
    let author = author(&req, body.author_id.clone(), || draft.author_id.clone());
    check_id("/author_id", &author)?;
    if body.autosave {
        let Some(content) = body.content else {
            return Err(Error::validation(vec![Violation::new(
                "/content",
                "an autosave carries the content",
            )]));
        };
        if draft.status == "archived" {
            return Err(Error::conflict("the draft is archived"));
        }
        state
            .autosave
            .put(PendingSave {
                draft_id: body.draft_id.clone(),
                author_id: author,
                title: body.title,
                content,
            })
            .await?;
        return Reply::json(
            &json!({"draft_id": body.draft_id, "accepted": true, "buffered": state.autosave.backend(), "version": draft.version}),
        );
    }
    let (draft, revision) = state
        .store
        .commit(
            &body.draft_id,
            Change {
                title: body.title,
                content: body.content,
                tags: body.tags,
                metadata: body.metadata,
                tone: body.tone,
                target_audience: body.target_audience,
                document_type: body.document_type,
                author_id: author,
                source: "update",
                message: body.message,
                expected_version: body.expected_version,
            },
        )
        .await?;
    // A committed update supersedes older buffered typing.
    state.autosave.discard(&body.draft_id).await?;
    let mut value = serde_json::to_value(&draft).map_err(Error::internal)?;
    value["revision"] = json!(revision);
    Reply::json(&value)
}

fn encode_cursor(d: &Draft) -> String {
    B64URL.encode(format!("{}|{}", d.updated_at.to_rfc3339(), d.draft_id))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), Error> {
    let bad = || Error::invalid_request("cursor is not one this service issued");
    let raw = B64URL.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, id) = text.split_once('|').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
    Ok((at.with_timezone(&Utc), id.to_owned()))
}

async fn list(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: ListRequest = req.json_or_default()?;
    if let Some(s) = &body.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(Error::validation(vec![Violation::new(
            "/status",
            format!("one of {}", STATUSES.join(", ")),
        )]));
    }
    let limit = body.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Error::validation(vec![Violation::new("/limit", "1-100")]));
    }
    if body.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(Error::validation(vec![Violation::new(
            "/q",
            "at most 200 characters",
        )]));
    }
    let filter = ListFilter {
        author_id: body.author_id,
        status: body.status,
        tag: body.tag,
        query: body.q,
        after: body.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut drafts = state.store.list(&filter).await?;
    let more = drafts.len() > usize::try_from(limit).unwrap_or(0);
    drafts.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if more {
        drafts.last().map(encode_cursor)
    } else {
        None
    };
    let items: Vec<Value> = drafts
        .iter()
        .map(|d| {
            json!({"draft_id": d.draft_id, "title": d.title, "document_type": d.document_type, "author_id": d.author_id,
                   "status": d.status, "version": d.version, "tags": d.tags, "word_count": d.word_count, "updated_at": d.updated_at})
        })
        .collect();
    Reply::json(&json!({"drafts": items, "next_cursor": next_cursor}))
}

async fn delete(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: DeleteRequest = req.json()?;
    if body.hard {
        state.authorize(&req, "drafting:admin").await?;
        state.autosave.discard(&body.draft_id).await?;
        state.store.hard_delete(&body.draft_id).await?;
        return Reply::json(&json!({"draft_id": body.draft_id, "deleted": true}));
    }
    if state.collab.is_active(&body.draft_id) {
        return Err(Error::conflict(
            "the draft is being edited collaboratively; wait until the editors leave",
        ));
    }
    let draft = state.store.get(&body.draft_id).await?;
    if draft.status == "archived" {
        return Reply::json(&json!({"draft_id": body.draft_id, "status": "archived"}));
    }
    flush_one(&state, &body.draft_id).await?;
    let actor = author(&req, body.actor, || draft.author_id.clone());
    let draft = state
        .store
        .transition(
            &body.draft_id,
            &draft.status,
            "archived",
            &actor,
            Some("deleted"),
        )
        .await?;
    Reply::json(&json!({"draft_id": draft.draft_id, "status": draft.status}))
}

/// Reply header of `drafting.analyze`: microseconds the service spent on the
/// request (decoding, analysis, encoding), for benchmarks and clients that
/// want to separate service time from transport.
pub const PROCESSING_TIME_HEADER: &str = "Ymera-Processing-Us";

async fn analyze(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let started = std::time::Instant::now();
    let body: AnalyzeRequest = req.json()?;
    let (text, tone, audience) = match (&body.draft_id, body.text) {
        (Some(id), None) => {
            state.authorize(&req, READ).await?;
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
    let mut reply = Reply::json(&analysis)?;
    reply.headers.insert(
        PROCESSING_TIME_HEADER,
        started.elapsed().as_micros().to_string().as_str(),
    );
    Ok(reply)
}

async fn export(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: ExportRequest = req.json()?;
    let mut draft = state.store.get(&body.draft_id).await?;
    if let Some(r) = body.revision {
        let rev = state.store.revision(&body.draft_id, r).await?;
        draft.title = rev.title;
        draft.content = rev.content.unwrap_or_default();
        draft.version = rev.revision;
    }
    let (content, ext) = match body.format {
        ExportFormat::Markdown => (format!("# {}\n\n{}", draft.title, draft.content), "md"),
        ExportFormat::Html => (html_document(&draft.title, &draft.content), "html"),
        ExportFormat::Json => (
            serde_json::to_string_pretty(&draft).map_err(Error::internal)?,
            "json",
        ),
        ExportFormat::Text => (
            format!("{}\n\n{}", draft.title, to_text(&draft.content)),
            "txt",
        ),
    };
    Reply::json(&json!({
        "draft_id": draft.draft_id, "version": draft.version, "format": body.format,
        "content_type": body.format.content_type(),
        "filename": format!("{}.{ext}", draft.draft_id), "content": content,
    }))
}

async fn revisions(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: RevisionsRequest = req.json()?;
    let limit = body.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::validation(vec![Violation::new("/limit", "1-500")]));
    }
    state.store.get(&body.draft_id).await?;
    let mut revs = state
        .store
        .revisions(&body.draft_id, body.before, limit, body.include_diff)
        .await?;
    for r in &mut revs {
        r.content = None;
    }
    let next_before = if i64::try_from(revs.len()).unwrap_or(0) == limit {
        revs.last().map(|r| r.revision)
    } else {
        None
    };
    Reply::json(&json!({"draft_id": body.draft_id, "revisions": revs, "next_before": next_before}))
}

async fn diff(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: DiffRequest = req.json()?;
    let to_rev = match body.to {
        Some(t) => t,
        None => state.store.get(&body.draft_id).await?.version,
    };
    let from = state.store.revision(&body.draft_id, body.from).await?;
    let to = state.store.revision(&body.draft_id, to_rev).await?;
    let (a, b) = (
        from.content.unwrap_or_default(),
        to.content.unwrap_or_default(),
    );
    let out = tokio::task::spawn_blocking(move || match body.level {
        DiffLevel::Line => {
            json!({"unified": unified(&a, &b, &format!("r{}", body.from), &format!("r{to_rev}"))})
        }
        DiffLevel::Word => json!({"changes": words(&a, &b)}),
    })
    .await
    .map_err(Error::internal)?;
    let mut out = out;
    out["draft_id"] = json!(body.draft_id);
    out["from"] = json!(body.from);
    out["to"] = json!(to_rev);
    out["level"] = json!(body.level);
    Reply::json(&out)
}

async fn restore(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: RestoreRequest = req.json()?;
    if state.collab.is_active(&body.draft_id) {
        return Err(Error::conflict("the draft is being edited collaboratively"));
    }
    let old = state.store.revision(&body.draft_id, body.revision).await?;
    let draft = state.store.get(&body.draft_id).await?;
    let (draft, revision) = state
        .store
        .commit(
            &body.draft_id,
            Change {
                title: Some(old.title),
                content: old.content,
                tags: None,
                metadata: None,
                tone: None,
                target_audience: None,
                document_type: None,
                author_id: author(&req, body.author_id, || draft.author_id),
                source: "restore",
                message: Some(format!("restore revision {}", body.revision)),
                expected_version: body.expected_version,
            },
        )
        .await?;
    state.autosave.discard(&body.draft_id).await?;
    let mut value = serde_json::to_value(&draft).map_err(Error::internal)?;
    value["revision"] = json!(revision);
    Reply::json(&value)
}

async fn comment(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: CommentRequest = req.json()?;
    match body.action.as_str() {
        "add" => {
            // Anchors refer to committed text: persist pending typing first.
            flush_one(&state, &body.draft_id).await?;
            let draft = state.store.get(&body.draft_id).await?;
            let author = author(&req, body.author_id, || draft.author_id.clone());
            let text = body.body.unwrap_or_default();
            if text.trim().is_empty() || text.chars().count() > 10_000 {
                return Err(Error::validation(vec![Violation::new(
                    "/body",
                    "1-10000 characters",
                )]));
            }
            let len = draft.content.chars().count();
            let start = body.start.unwrap_or(0);
            let end = body.end.unwrap_or(start);
            if start > end || end > len {
                return Err(Error::validation(vec![Violation::new(
                    "/start",
                    format!("0 <= start <= end <= {len} (characters of the content)"),
                )]));
            }
            let now = Utc::now();
            let c = Comment {
                comment_id: uuid::Uuid::now_v7().to_string(),
                draft_id: body.draft_id,
                author_id: author,
                body: text,
                anchor_start: i32::try_from(start).unwrap_or(i32::MAX),
                anchor_end: i32::try_from(end).unwrap_or(i32::MAX),
                quote: draft
                    .content
                    .chars()
                    .skip(start)
                    .take(end - start)
                    .collect(),
                status: "open".to_owned(),
                created_at: now,
                updated_at: now,
                resolved_by: None,
            };
            state.store.add_comment(&c).await?;
            Reply::json(&c)
        }
        "resolve" | "reopen" => {
            let id = body.comment_id.ok_or_else(|| {
                Error::validation(vec![Violation::new("/comment_id", "required")])
            })?;
            let status = if body.action == "resolve" {
                "resolved"
            } else {
                "open"
            };
            let actor = author(&req, body.author_id, || "unknown".to_owned());
            let c = state
                .store
                .set_comment_status(&body.draft_id, &id, status, &actor)
                .await?;
            Reply::json(&c)
        }
        "list" => {
            let draft = state.store.get(&body.draft_id).await?;
            let comments = state.store.comments(&body.draft_id).await?;
            let items: Vec<Value> = comments
                .into_iter()
                .map(|c| {
                    let s = usize::try_from(c.anchor_start).unwrap_or(0);
                    let e = usize::try_from(c.anchor_end).unwrap_or(0);
                    let current: String = draft
                        .content
                        .chars()
                        .skip(s)
                        .take(e.saturating_sub(s))
                        .collect();
                    let mut v = json!(c);
                    v["anchored_text"] = json!(current);
                    v
                })
                .collect();
            Reply::json(&json!({"draft_id": body.draft_id, "comments": items}))
        }
        other => Err(Error::validation(vec![Violation::new(
            "/action",
            format!("'{other}' is not one of add, resolve, reopen, list"),
        )])),
    }
}

async fn transition(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: TransitionRequest = req.json()?;
    if !STATUSES.contains(&body.to.as_str()) {
        return Err(Error::validation(vec![Violation::new(
            "/to",
            format!("one of {}", STATUSES.join(", ")),
        )]));
    }
    if state.collab.is_active(&body.draft_id) {
        return Err(Error::conflict(
            "the draft is being edited collaboratively; wait until the editors leave",
        ));
    }
    let draft = state.store.get(&body.draft_id).await?;
    if !transition_allowed(&draft.status, &body.to) {
        return Err(Error::conflict(format!(
            "cannot move draft {} from {} to {}",
            body.draft_id, draft.status, body.to
        ))
        .with_detail("status", draft.status.clone()));
    }
    flush_one(&state, &body.draft_id).await?;
    let actor = author(&req, body.actor, || draft.author_id.clone());
    let draft = state
        .store
        .transition(
            &body.draft_id,
            &draft.status,
            &body.to,
            &actor,
            body.note.as_deref(),
        )
        .await?;
    let transitions = state.store.transitions(&body.draft_id).await?;
    Reply::json(
        &json!({"draft_id": draft.draft_id, "status": draft.status, "transitions": transitions}),
    )
}

async fn template_set(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: TemplateSetRequest = req.json()?;
    let id = body
        .template_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    check_id("/template_id", &id)?;
    check_title(&body.name)
        .map_err(|_| Error::validation(vec![Violation::new("/name", "1-500 characters")]))?;
    check_size(&body.content)?;
    let now = Utc::now();
    let t = Template {
        template_id: id,
        name: body.name,
        document_type: body.document_type.unwrap_or_else(|| "document".to_owned()),
        description: body.description,
        placeholders: placeholders(&body.content),
        content: body.content,
        created_at: now,
        updated_at: now,
    };
    Reply::json(&state.store.set_template(&t).await?)
}

async fn template_list(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: TemplateListRequest = req.json_or_default()?;
    let templates = state.store.templates(body.document_type.as_deref()).await?;
    Reply::json(&json!({"templates": templates}))
}

async fn collab_join(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let mut body: JoinRequest = req.json()?;
    body.user_id = author(&req, Some(body.user_id), String::new);
    check_id("/user_id", &body.user_id)?;
    let client_id = body
        .client_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    check_id("/client_id", &client_id)?;
    // A session that just closed opens again only from its committed text.
    let mut attempt = 0;
    let (draft, joined) = loop {
        attempt += 1;
        if attempt > MAX_JOIN_ATTEMPTS {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the previous collaboration session is still being committed; try again",
            ));
        }
        if state.collab.is_closing(&body.draft_id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        // Typing buffered before the session starts belongs in its base text.
        flush_one(&state, &body.draft_id).await?;
        let draft = state.store.get(&body.draft_id).await?;
        if draft.status == "archived" {
            return Err(Error::conflict("the draft is archived"));
        }
        if let Some(joined) =
            state
                .collab
                .join(&body.draft_id, &draft.content, &client_id, &body.user_id)?
        {
            break (draft, joined);
        }
    };
    let mut value = serde_json::to_value(&joined).map_err(Error::internal)?;
    value["draft_id"] = json!(body.draft_id);
    value["client_id"] = json!(client_id);
    value["version"] = json!(draft.version);
    value["updates_subject"] = json!(format!("drafting.collab.{}.updates", body.draft_id));
    Reply::json(&value)
}

async fn collab_update(state: Shared, req: ServiceRequest) -> Result<Reply, Error> {
    let body: CollabUpdateRequest = req.json()?;
    check_id("/draft_id", &body.draft_id)?;
    // The broadcast is queued while the session's lock is held, so each
    // draft's updates go out in the order they were applied; the queue
    // slot is reserved first so nothing waits under that lock.
    let broadcast = match body.update.as_deref() {
        Some(update) => {
            let event = json!({
                "draft_id": body.draft_id, "client_id": body.client_id,
                "update": update.trim(),
            });
            let payload = serde_json::to_vec(&event).map_err(Error::internal)?;
            let permit = state
                .broadcasts
                .reserve()
                .await
                .map_err(|_| Error::dependency_down("nats"))?;
            Some((permit, payload))
        }
        None => None,
    };
    let subject = format!("drafting.collab.{}.updates", body.draft_id);
    let applied = state.collab.apply(
        &body.draft_id,
        &body.client_id,
        body.update.as_deref(),
        body.state_vector.as_deref(),
        body.text
            .unwrap_or(body.update.is_none() || body.state_vector.is_some()),
        || {
            if let Some((permit, payload)) = broadcast {
                permit.send((subject, payload.into()));
            }
        },
    )?;
    if !body.leave {
        return Reply::json(&applied);
    }
    let mut value = serde_json::to_value(&applied).map_err(Error::internal)?;
    if let Some(commit) = state.collab.leave(&body.draft_id, &body.client_id) {
        let revision = commit_collab(&state, commit).await?;
        value["committed_version"] = json!(revision);
        value["editors"] = json!([]);
    }
    Reply::json(&value)
}

// ---- background ----

/// Most waits of one join for a closing session's commit (10 ms each).
const MAX_JOIN_ATTEMPTS: u32 = 1000;

/// Commits a session's text; a closed session's draft may then be opened
/// again from the stored content (also when the commit failed: what it
/// held is then lost, as before).
async fn commit_collab(state: &State, commit: PendingCommit) -> Result<Option<i32>, Error> {
    let (draft_id, closed) = (commit.draft_id.clone(), commit.closed);
    let result = store_collab(state, commit).await;
    if closed {
        state.collab.close_committed(&draft_id);
    }
    result
}

async fn store_collab(state: &State, commit: PendingCommit) -> Result<Option<i32>, Error> {
    let author = commit
        .authors
        .first()
        .cloned()
        .unwrap_or_else(|| "collab".to_owned());
    let message = if commit.authors.is_empty() {
        None
    } else {
        Some(format!(
            "collaborative edit by {}",
            commit.authors.join(", ")
        ))
    };
    let (draft, rev) = state
        .store
        .commit(
            &commit.draft_id,
            Change {
                title: None,
                content: Some(commit.text),
                tags: None,
                metadata: None,
                tone: None,
                target_audience: None,
                document_type: None,
                author_id: author,
                source: "collab",
                message,
                expected_version: None,
            },
        )
        .await?;
    Ok(rev.map(|_| draft.version))
}

/// Commits a save taken from the buffer; it stops being in flight once
/// committed, dropped or put back.
async fn persist_save(state: &State, save: PendingSave) -> Result<(), Error> {
    let draft_id = save.draft_id.clone();
    let result = commit_save(state, save).await;
    state.autosave.settled(&draft_id);
    result
}

async fn commit_save(state: &State, save: PendingSave) -> Result<(), Error> {
    let draft_id = save.draft_id.clone();
    let result = state
        .store
        .commit(
            &draft_id,
            Change {
                title: save.title.clone(),
                content: Some(save.content.clone()),
                tags: None,
                metadata: None,
                tone: None,
                target_audience: None,
                document_type: None,
                author_id: save.author_id.clone(),
                source: "autosave",
                message: None,
                expected_version: None,
            },
        )
        .await;
    match result {
        Ok(_) => {
            state.autosave.persisted(&draft_id).await;
            Ok(())
        }
        // The draft is gone or archived: nothing to save it into.
        Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Conflict) => {
            tracing::info!(draft_id = %draft_id, error = %e, "auto-save dropped");
            Ok(())
        }
        Err(e) => {
            state.autosave.restore(save).await?;
            Err(e)
        }
    }
}

/// Persists a draft's buffered auto-save now (before a lifecycle change,
/// a comment anchor or a collaboration session reads the content).
async fn flush_one(state: &State, draft_id: &str) -> Result<(), Error> {
    if let Some(save) = state.autosave.take(draft_id).await? {
        persist_save(state, save).await?;
    }
    Ok(())
}

/// Persists due auto-saves and collaboration texts; with `force`, all of
/// them (shutdown).
pub async fn flush(state: &State, force: bool) -> Result<usize, Error> {
    let mut done = 0;
    let mut failed = None;
    // Every taken save is committed or put back, even after a failure.
    for save in state.autosave.due(force).await? {
        match persist_save(state, save).await {
            Ok(()) => done += 1,
            Err(e) => failed = Some(e),
        }
    }
    let commits = if force {
        state.collab.drain()
    } else {
        state.collab.due_commits(state.autosave.interval())
    };
    for commit in commits {
        if let Err(e) = commit_collab(state, commit).await {
            tracing::warn!(error = %e, "collaboration commit failed");
        } else {
            done += 1;
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Queued collaboration broadcasts before `drafting.collab.update` waits.
const BROADCAST_QUEUE: usize = 8_192;

/// The sending end of the broadcast queue; a task publishes what arrives,
/// in order, until every sender is gone.
fn broadcaster(nats: async_nats::Client) -> mpsc::Sender<(String, bytes::Bytes)> {
    let (tx, mut rx) = mpsc::channel::<(String, bytes::Bytes)>(BROADCAST_QUEUE);
    tokio::spawn(async move {
        while let Some((subject, payload)) = rx.recv().await {
            if let Err(e) = nats.publish(subject, payload).await {
                metrics::counter!("ymera_drafting_collab_broadcast_failures_total").increment(1);
                tracing::warn!(error = %e, "collaboration broadcast failed");
            }
        }
    });
    tx
}

/// The service's state from a started runtime (PostgreSQL is required).
/// The auto-save interval follows agent `drafting`'s document in the config
/// manager (`auto_save_interval_ms`) over `AUTO_SAVE_INTERVAL`.
pub async fn state(
    runtime: &Runtime,
    settings: &crate::Settings,
) -> Result<Arc<State>, ymera_core::runtime::RuntimeError> {
    let pool = runtime
        .postgres()
        .cloned()
        .ok_or(ymera_core::runtime::RuntimeError::Config {
            variable: "POSTGRES_URL",
            reason: "the drafting service stores drafts in PostgreSQL; set POSTGRES_URL".to_owned(),
        })?;
    let interval = ymera_core::config_watch::follow_settings(
        runtime,
        NAME,
        settings.watch.clone(),
        settings.auto_save_interval,
        crate::autosave::live_interval,
    )
    .await;
    Ok(Arc::new(State {
        store: DraftStore::new(pool),
        autosave: AutoSave::following(runtime.redis().cloned(), interval),
        collab: Collab::default(),
        broadcasts: broadcaster(runtime.client().clone()),
        authorizer: runtime.authorizer(),
    }))
}

/// The service with its endpoints.
/// The permission of the endpoints that read drafts.
const READ: &str = "drafting:read";
/// The permission of the endpoints that change drafts.
const WRITE: &str = "drafting:write";

pub fn builder(state: &Arc<State>) -> ServiceBuilder {
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "Drafting agent: documents with revisions, analysis and real-time collaboration",
    )
    .secured("drafting.create", WRITE, with_state(state, create))
    .secured("drafting.get", READ, with_state(state, get))
    .secured("drafting.update", WRITE, with_state(state, update))
    .secured("drafting.list", READ, with_state(state, list))
    .secured("drafting.delete", WRITE, with_state(state, delete))
    .endpoint("drafting.analyze", with_state(state, analyze))
    .secured("drafting.export", READ, with_state(state, export))
    .secured("drafting.revisions", READ, with_state(state, revisions))
    .secured("drafting.diff", READ, with_state(state, diff))
    .secured("drafting.restore", WRITE, with_state(state, restore))
    .secured("drafting.comment", WRITE, with_state(state, comment))
    .secured("drafting.transition", WRITE, with_state(state, transition))
    .secured(
        "drafting.template.set",
        WRITE,
        with_state(state, template_set),
    )
    .secured(
        "drafting.template.list",
        READ,
        with_state(state, template_list),
    )
    .secured(
        "drafting.collab.join",
        WRITE,
        with_state(state, collab_join),
    )
    .secured(
        "drafting.collab.update",
        WRITE,
        with_state(state, collab_update),
    )
}

/// Serves until shutdown, then flushes every buffered auto-save and open
/// collaboration text before returning. The flush runs after `serve`
/// returns, i.e. after in-flight requests finished, so nothing acknowledged
/// is left behind.
pub async fn serve(
    runtime: Runtime,
    settings: crate::Settings,
) -> Result<(), ymera_core::runtime::RuntimeError> {
    let state = state(&runtime, &settings).await?;
    let shutdown = runtime.shutdown_token();
    // Saves a previous instance left in Redis.
    if let Err(e) = flush(&state, false).await {
        tracing::warn!(error = %e, "initial auto-save flush failed");
    }
    let max = runtime.config().max_message_size;
    let inbox = ymera_core::agent::AgentInbox::subscribe(&runtime, NAME).await?;
    tokio::spawn(
        inbox.run(runtime.shutdown_token(), move |envelope| async move {
            crate::inbox::answer(&envelope, max).await
        }),
    );
    let ticker_state = state.clone();
    // Ticks at a quarter of the interval, and at once when the config
    // manager changes the interval.
    let mut interval = ticker_state.autosave.interval_receiver();
    let ticker = tokio::spawn(async move {
        // False once nothing can change the interval any more.
        let mut live = true;
        loop {
            let tick = (*interval.borrow_and_update() / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(5));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
                changed = interval.changed(), if live => live = changed.is_ok(),
            }
            if let Err(e) = flush(&ticker_state, false).await {
                tracing::warn!(error = %e, "auto-save flush failed");
            }
        }
    });
    let result = builder(&state).serve(runtime).await;
    let _ = ticker.await;
    match flush(&state, true).await {
        Ok(n) => tracing::info!(saved = n, "flushed buffered drafts at shutdown"),
        Err(e) => tracing::error!(error = %e, "flushing buffered drafts at shutdown failed"),
    }
    result
}
