//! Drafts: `drafting.create`, `get`, `update`, `list`, `delete` and
//! `export`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ymera_core::Error;
use ymera_core::error::Violation;
use ymera_core::runtime::{Call, OrEmpty};

use super::templates::fill_template;
use super::{
    Admin, Read, Shared, Write, author, check_id, check_size, check_tags, check_title, flush_one,
};
use crate::autosave::{BufferKind, PendingSave};
use crate::collab::Editor;
use crate::export::{ExportFormat, html_document, to_text};
use crate::store::{
    Change, Comment, Draft, DraftStatus, ListFilter, Named, Revision, RevisionSource, Transition,
    word_count,
};

// ---- requests ----

/// `drafting.create` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftCreateRequest {
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
    /// When the expiry job archives the draft (RFC 3339, in the future).
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// What `drafting.get` may include besides the draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// The draft's comments.
    Comments,
    /// The draft's lifecycle transitions.
    Transitions,
}

impl Include {
    fn as_str(self) -> &'static str {
        match self {
            Include::Comments => "comments",
            Include::Transitions => "transitions",
        }
    }
}

/// `drafting.get` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftGetRequest {
    draft_id: String,
    /// [`Include`] names (others are ignored).
    #[serde(default)]
    include: Vec<String>,
}

impl DraftGetRequest {
    fn includes(&self, what: Include) -> bool {
        self.include.iter().any(|i| i == what.as_str())
    }
}

/// `drafting.update` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftUpdateRequest {
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
    /// A new expiry (RFC 3339, in the future), or `null` for none; absent:
    /// unchanged. Not a content change: no revision of its own.
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<DateTime<Utc>>>,
}

/// A field that may be given as `null`: `Some(None)` then, `None` when absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// An expiry given in a request: in the future (422 naming `/expires_at`).
fn check_expiry(at: Option<DateTime<Utc>>) -> Result<(), Error> {
    match at {
        Some(at) if at <= Utc::now() => Err(Error::validation(vec![Violation::new(
            "/expires_at",
            "must be in the future",
        )])),
        _ => Ok(()),
    }
}

/// `drafting.list` request (an empty body is `{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftListRequest {
    #[serde(default)]
    author_id: Option<String>,
    /// A [`DraftStatus`] name, checked by the handler (422 naming `/status`).
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

/// `drafting.delete` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftDeleteRequest {
    draft_id: String,
    #[serde(default)]
    hard: bool,
    #[serde(default)]
    actor: Option<String>,
}

/// `drafting.export` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    draft_id: String,
    #[serde(default)]
    format: ExportFormat,
    #[serde(default)]
    revision: Option<i32>,
}

// ---- replies ----

/// `drafting.get` reply: the draft, whether typing is buffered, the live
/// editors, and what was included.
#[derive(Debug, Serialize)]
pub struct DraftGetReply {
    #[serde(flatten)]
    draft: Draft,
    autosave_pending: bool,
    editors: Vec<Editor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comments: Option<Vec<Comment>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transitions: Option<Vec<Transition>>,
}

/// A committed change: the draft after it and the revision it made (`None`
/// when nothing changed). Also the reply of `drafting.restore`.
#[derive(Debug, Serialize)]
pub struct Committed {
    #[serde(flatten)]
    pub(super) draft: Draft,
    pub(super) revision: Option<Revision>,
}

/// An acknowledged auto-save.
#[derive(Debug, Serialize)]
pub struct AutoSaved {
    draft_id: String,
    /// Always true.
    accepted: bool,
    buffered: BufferKind,
    /// The committed version the buffered content follows.
    version: i32,
}

/// `drafting.update` reply.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum DraftUpdateReply {
    /// A committed update.
    Committed(Box<Committed>),
    /// A buffered auto-save.
    AutoSaved(AutoSaved),
}

/// One draft in a `drafting.list` page.
#[derive(Debug, Serialize)]
pub struct DraftSummary {
    draft_id: String,
    title: String,
    document_type: String,
    author_id: String,
    status: DraftStatus,
    version: i32,
    tags: Vec<String>,
    word_count: i32,
    updated_at: DateTime<Utc>,
}

impl From<Draft> for DraftSummary {
    fn from(d: Draft) -> Self {
        DraftSummary {
            draft_id: d.draft_id,
            title: d.title,
            document_type: d.document_type,
            author_id: d.author_id,
            status: d.status,
            version: d.version,
            tags: d.tags,
            word_count: d.word_count,
            updated_at: d.updated_at,
        }
    }
}

/// `drafting.list` reply.
#[derive(Debug, Serialize)]
pub struct DraftListReply {
    drafts: Vec<DraftSummary>,
    next_cursor: Option<String>,
}

/// `drafting.delete` reply.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum DraftDeleteReply {
    /// Archived (the default).
    Archived {
        /// The draft.
        draft_id: String,
        /// Always archived.
        status: DraftStatus,
    },
    /// Hard-deleted.
    Deleted {
        /// The draft.
        draft_id: String,
        /// Always true.
        deleted: bool,
    },
}

/// `drafting.export` reply.
#[derive(Debug, Serialize)]
pub struct ExportReply {
    draft_id: String,
    version: i32,
    format: ExportFormat,
    content_type: &'static str,
    filename: String,
    content: String,
}

// ---- handlers ----

pub(super) async fn create(
    state: Shared,
    call: Call<Write>,
    mut body: DraftCreateRequest,
) -> Result<Draft, Error> {
    body.author_id = author(&call, Some(body.author_id), String::new);
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
    check_expiry(body.expires_at)?;
    let now = Utc::now();
    let draft = Draft {
        draft_id,
        title,
        document_type,
        word_count: word_count(&content),
        content,
        template_id: body.template_id,
        author_id: body.author_id,
        status: DraftStatus::Draft,
        version: 1,
        tone: body.tone,
        target_audience: body.target_audience,
        created_at: now,
        updated_at: now,
        metadata: body
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default())),
        collaborators: body.collaborators,
        tags: body.tags,
        expires_at: body.expires_at,
    };
    state.store.create(&draft).await?;
    Ok(draft)
}

pub(super) async fn get(
    state: Shared,
    _call: Call<Read>,
    body: DraftGetRequest,
) -> Result<DraftGetReply, Error> {
    // Before the read: not pending then means the content has every save.
    let pending = state.autosave.pending(&body.draft_id).await?;
    let draft = state.store.get(&body.draft_id).await?;
    let comments = if body.includes(Include::Comments) {
        Some(state.store.comments(&body.draft_id).await?)
    } else {
        None
    };
    let transitions = if body.includes(Include::Transitions) {
        Some(state.store.transitions(&body.draft_id).await?)
    } else {
        None
    };
    Ok(DraftGetReply {
        editors: state.store.collab_editors(&body.draft_id).await?,
        draft,
        autosave_pending: pending,
        comments,
        transitions,
    })
}

pub(super) async fn update(
    state: Shared,
    call: Call<Write>,
    body: DraftUpdateRequest,
) -> Result<DraftUpdateReply, Error> {
    if let Some(c) = &body.content {
        check_size(c)?;
    }
    if let Some(t) = &body.title {
        check_title(t)?;
    }
    if let Some(t) = &body.tags {
        check_tags(t)?;
    }
    if state.store.collab_live(&body.draft_id).await? {
        return Err(Error::conflict(format!(
            "draft {} is being edited collaboratively; send changes through drafting.collab.update",
            body.draft_id
        )));
    }
    if let Some(expires_at) = body.expires_at {
        check_expiry(expires_at)?;
        state.store.set_expiry(&body.draft_id, expires_at).await?;
    }
    let draft = state.store.get(&body.draft_id).await?;
    let author = author(&call, body.author_id.clone(), || draft.author_id.clone());
    check_id("/author_id", &author)?;
    if body.autosave {
        let Some(content) = body.content else {
            return Err(Error::validation(vec![Violation::new(
                "/content",
                "an autosave carries the content",
            )]));
        };
        if draft.status == DraftStatus::Archived {
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
        return Ok(DraftUpdateReply::AutoSaved(AutoSaved {
            draft_id: body.draft_id,
            accepted: true,
            buffered: state.autosave.backend(),
            version: draft.version,
        }));
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
                source: RevisionSource::Update,
                message: body.message,
                expected_version: body.expected_version,
            },
        )
        .await?;
    // A committed update supersedes older buffered typing.
    state.autosave.discard(&body.draft_id).await?;
    Ok(DraftUpdateReply::Committed(Box::new(Committed {
        draft,
        revision,
    })))
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

/// A status named in a request (`path`), or 422.
pub(super) fn status_at(path: &str, name: &str) -> Result<DraftStatus, Error> {
    DraftStatus::parse(name).ok_or_else(|| {
        Error::validation(vec![Violation::new(
            path,
            format!("one of {}", DraftStatus::names()),
        )])
    })
}

pub(super) async fn list(
    state: Shared,
    _call: Call<Read>,
    OrEmpty(body): OrEmpty<DraftListRequest>,
) -> Result<DraftListReply, Error> {
    let status = body
        .status
        .as_deref()
        .map(|s| status_at("/status", s))
        .transpose()?;
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
        status,
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
    Ok(DraftListReply {
        drafts: drafts.into_iter().map(DraftSummary::from).collect(),
        next_cursor,
    })
}

/// Archives a draft (a recorded transition); `hard` deletes it, which
/// needs `drafting:admin` as well.
pub(super) async fn delete(
    state: Shared,
    call: Call<Write>,
    body: DraftDeleteRequest,
) -> Result<DraftDeleteReply, Error> {
    if body.hard {
        state.authorize(&call, Admin::PERMISSION).await?;
        state.autosave.discard(&body.draft_id).await?;
        state.store.hard_delete(&body.draft_id).await?;
        return Ok(DraftDeleteReply::Deleted {
            draft_id: body.draft_id,
            deleted: true,
        });
    }
    if state.store.collab_live(&body.draft_id).await? {
        return Err(Error::conflict(
            "the draft is being edited collaboratively; wait until the editors leave",
        ));
    }
    let draft = state.store.get(&body.draft_id).await?;
    if draft.status == DraftStatus::Archived {
        return Ok(DraftDeleteReply::Archived {
            draft_id: body.draft_id,
            status: DraftStatus::Archived,
        });
    }
    flush_one(&state, &body.draft_id).await?;
    let actor = author(&call, body.actor, || draft.author_id.clone());
    let draft = state
        .store
        .transition(
            &body.draft_id,
            draft.status,
            DraftStatus::Archived,
            &actor,
            Some("deleted"),
        )
        .await?;
    Ok(DraftDeleteReply::Archived {
        draft_id: draft.draft_id,
        status: draft.status,
    })
}

pub(super) async fn export(
    state: Shared,
    _call: Call<Read>,
    body: ExportRequest,
) -> Result<ExportReply, Error> {
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
    Ok(ExportReply {
        filename: format!("{}.{ext}", draft.draft_id),
        draft_id: draft.draft_id,
        version: draft.version,
        format: body.format,
        content_type: body.format.content_type(),
        content,
    })
}
