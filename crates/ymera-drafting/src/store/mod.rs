//! PostgreSQL persistence of drafts, revisions, transitions, comments and
//! templates. Every content change goes through [`DraftStore::commit`],
//! which writes the revision, bumps the version and remaps comment anchors
//! in one transaction.
//!
//! Files: this one (the stored types and their states), [`drafts`]
//! (drafts, commits, lists, lifecycle transitions), [`revisions`],
//! [`comments`] (anchors remapped on commit), [`templates`], [`collab`]
//! (collaboration sessions shared by every replica).

mod collab;
mod comments;
mod drafts;
mod revisions;
mod templates;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use ymera_core::Error;

use crate::readability::list_words;

pub use collab::{Append, CommitMode, Committed, Merge, SessionRow, StoredUpdate};

/// A state stored as text (PostgreSQL) and sent as a snake_case JSON
/// string: the names of both are [`Named::as_str`].
pub trait Named: Sized + Copy + 'static {
    /// Every value, in documentation order.
    const ALL: &'static [Self];

    /// The stored and wire name.
    fn as_str(self) -> &'static str;

    /// The value of a name.
    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == name)
    }

    /// Every name, comma-separated (for messages).
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A stored state name that is not one of `T`'s (a row written by
/// something else): 500, never a silent default.
fn stored<T: Named>(column: &str, name: &str) -> Result<T, Error> {
    T::parse(name).ok_or_else(|| {
        Error::internal(format!(
            "stored {column} '{name}' is not one of {}",
            T::names()
        ))
    })
}

/// A draft's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftStatus {
    /// Being written (new drafts start here).
    Draft,
    /// Waiting for review.
    InReview,
    /// Reviewed and approved.
    Approved,
    /// Published.
    Published,
    /// Archived (soft-deleted); refuses edits.
    Archived,
}

impl Named for DraftStatus {
    const ALL: &'static [Self] = &[
        DraftStatus::Draft,
        DraftStatus::InReview,
        DraftStatus::Approved,
        DraftStatus::Published,
        DraftStatus::Archived,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DraftStatus::Draft => "draft",
            DraftStatus::InReview => "in_review",
            DraftStatus::Approved => "approved",
            DraftStatus::Published => "published",
            DraftStatus::Archived => "archived",
        }
    }
}

impl DraftStatus {
    /// Whether the lifecycle allows moving from `self` to `to`: draft →
    /// in_review → approved → published; in_review → draft, approved →
    /// in_review, published → draft (a new cycle); any → archived;
    /// archived → draft.
    pub fn can_move_to(self, to: DraftStatus) -> bool {
        use DraftStatus::{Approved, Archived, Draft, InReview, Published};
        matches!(
            (self, to),
            (Draft, InReview)
                | (InReview, Draft | Approved)
                | (Approved, Published | InReview)
                | (Published, Draft)
                | (Draft | InReview | Approved | Published, Archived)
                | (Archived, Draft)
        )
    }
}

impl std::fmt::Display for DraftStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comment's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentStatus {
    /// Open (new comments, and reopened ones).
    Open,
    /// Resolved (`resolved_by` says who).
    Resolved,
}

impl Named for CommentStatus {
    const ALL: &'static [Self] = &[CommentStatus::Open, CommentStatus::Resolved];

    fn as_str(self) -> &'static str {
        match self {
            CommentStatus::Open => "open",
            CommentStatus::Resolved => "resolved",
        }
    }
}

/// What made a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionSource {
    /// `drafting.create` (revision 1).
    Create,
    /// `drafting.update`.
    Update,
    /// A buffered auto-save, persisted.
    Autosave,
    /// `drafting.restore`.
    Restore,
    /// A collaboration session's merged text.
    Collab,
}

impl Named for RevisionSource {
    const ALL: &'static [Self] = &[
        RevisionSource::Create,
        RevisionSource::Update,
        RevisionSource::Autosave,
        RevisionSource::Restore,
        RevisionSource::Collab,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RevisionSource::Create => "create",
            RevisionSource::Update => "update",
            RevisionSource::Autosave => "autosave",
            RevisionSource::Restore => "restore",
            RevisionSource::Collab => "collab",
        }
    }
}

/// A draft as stored and returned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Draft {
    /// Identifier.
    pub draft_id: String,
    /// Title.
    pub title: String,
    /// Document type (article, email, report, …).
    pub document_type: String,
    /// Markdown content.
    pub content: String,
    /// Template it was created from.
    pub template_id: Option<String>,
    /// Author.
    pub author_id: String,
    /// Lifecycle status.
    pub status: DraftStatus,
    /// Version (= latest revision number).
    pub version: i32,
    /// Tone.
    pub tone: Option<String>,
    /// Target audience.
    pub target_audience: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Free-form metadata.
    pub metadata: Value,
    /// Collaborator ids.
    pub collaborators: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Words in the content (textstat's count).
    pub word_count: i32,
    /// When the expiry job archives it (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A draft the expiry job archived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Expired {
    /// The draft.
    pub draft_id: String,
    /// Its status before.
    pub from_status: DraftStatus,
    /// When it expired.
    pub expires_at: DateTime<Utc>,
    /// When it was archived.
    pub archived_at: DateTime<Utc>,
}

/// What `drafting.metrics` reads from the store (all replicas).
#[derive(Debug, Clone, Default)]
pub struct DraftCounts {
    /// Drafts per stored status name.
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// Drafts not archived with an `expires_at`.
    pub expiring: i64,
    /// Live collaboration sessions.
    pub sessions: i64,
    /// Their editors.
    pub editors: i64,
    /// Collaboration updates not yet committed as a revision.
    pub pending_updates: i64,
}

/// A revision (without its content unless asked).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revision {
    /// The draft.
    pub draft_id: String,
    /// Revision number (the draft version it produced).
    pub revision: i32,
    /// Who made it.
    pub author_id: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// What made it.
    pub source: RevisionSource,
    /// Title at this revision.
    pub title: String,
    /// Words at this revision.
    pub word_count: i32,
    /// Words added (negative: removed) against the previous revision.
    pub word_delta: i32,
    /// Unified diff against the previous revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Content at this revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Commit message.
    pub message: Option<String>,
}

/// A comment anchored to a character range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comment {
    /// Identifier.
    pub comment_id: String,
    /// The draft.
    pub draft_id: String,
    /// Author.
    pub author_id: String,
    /// Text.
    pub body: String,
    /// Anchor start (characters).
    pub anchor_start: i32,
    /// Anchor end (characters, exclusive).
    pub anchor_end: i32,
    /// The anchored text when the comment was made.
    pub quote: String,
    /// Open or resolved.
    pub status: CommentStatus,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
}

/// A lifecycle transition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    /// From.
    pub from_status: DraftStatus,
    /// To.
    pub to_status: DraftStatus,
    /// Who.
    pub actor: String,
    /// Why.
    pub note: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A document template with `{{placeholder}}`s.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Template {
    /// Identifier.
    pub template_id: String,
    /// Name.
    pub name: String,
    /// Document type of drafts made from it.
    pub document_type: String,
    /// Description.
    pub description: Option<String>,
    /// Content with placeholders.
    pub content: String,
    /// Placeholder names, in order of first use.
    pub placeholders: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A content change to commit.
#[derive(Debug, Clone)]
pub struct Change {
    /// New title (None: unchanged).
    pub title: Option<String>,
    /// New content (None: unchanged).
    pub content: Option<String>,
    /// Other fields (None: unchanged).
    pub tags: Option<Vec<String>>,
    /// Metadata.
    pub metadata: Option<Value>,
    /// Tone.
    pub tone: Option<String>,
    /// Audience.
    pub target_audience: Option<String>,
    /// Document type.
    pub document_type: Option<String>,
    /// Who.
    pub author_id: String,
    /// Where it came from.
    pub source: RevisionSource,
    /// Commit message.
    pub message: Option<String>,
    /// Required current version (409 when different).
    pub expected_version: Option<i32>,
}

/// Words in a text (textstat's count).
pub fn word_count(text: &str) -> i32 {
    i32::try_from(list_words(text).len()).unwrap_or(i32::MAX)
}

fn db(err: sqlx::Error) -> Error {
    tracing::warn!(error = %err, "postgres");
    Error::dependency_down("postgres")
}

fn json_strings(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// List filters.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Author.
    pub author_id: Option<String>,
    /// Status (archived drafts are listed only when asked for).
    pub status: Option<DraftStatus>,
    /// Tag.
    pub tag: Option<String>,
    /// Case-insensitive substring of the title.
    pub query: Option<String>,
    /// Cursor: (updated_at, draft_id) of the last item of the previous page.
    pub after: Option<(DateTime<Utc>, String)>,
    /// Page size.
    pub limit: i64,
}

/// The draft tables.
#[derive(Clone, Debug)]
pub struct DraftStore {
    pool: PgPool,
}

impl DraftStore {
    /// A store on `pool` (migrations already applied by the runtime).
    pub fn new(pool: PgPool) -> Self {
        DraftStore { pool }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored name of every state is its JSON name.
    fn names_match<
        T: Named + Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    >() {
        for v in T::ALL {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json, Value::String(v.as_str().to_owned()));
            assert_eq!(T::parse(v.as_str()), Some(*v));
            assert_eq!(serde_json::from_value::<T>(json).unwrap(), *v);
        }
        assert_eq!(T::parse("nonsense"), None);
    }

    #[test]
    fn stored_names_are_the_wire_names() {
        names_match::<DraftStatus>();
        names_match::<CommentStatus>();
        names_match::<RevisionSource>();
        assert_eq!(
            DraftStatus::names(),
            "draft, in_review, approved, published, archived"
        );
    }

    #[test]
    fn lifecycle_moves() {
        use DraftStatus::*;
        assert!(Draft.can_move_to(InReview));
        assert!(!Draft.can_move_to(Published));
        assert!(Published.can_move_to(Draft));
        assert!(Archived.can_move_to(Draft));
        assert!(!Archived.can_move_to(Archived));
        assert!(
            DraftStatus::ALL[..4]
                .iter()
                .all(|s| s.can_move_to(Archived))
        );
        assert!(!InReview.can_move_to(Published));
    }
}
