//! PostgreSQL persistence of drafts, revisions, transitions, comments and
//! templates. Every content change goes through [`DraftStore::commit`],
//! which writes the revision, bumps the version and remaps comment anchors
//! in one transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Row, Transaction};
use ymera_core::Error;

use crate::diff::{OffsetMap, unified};
use crate::readability::list_words;

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
    pub status: String,
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
    /// create, update, autosave, restore, collab, template.
    pub source: String,
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
    /// open or resolved.
    pub status: String,
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
    pub from_status: String,
    /// To.
    pub to_status: String,
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
    pub source: &'static str,
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

const DRAFT_COLUMNS: &str = "draft_id, title, document_type, content, template_id, author_id, status, version, tone, target_audience, created_at, updated_at, metadata, collaborators, tags, word_count";

fn json_strings(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn draft_from_row(row: &sqlx::postgres::PgRow) -> Result<Draft, Error> {
    let get = |e: sqlx::Error| Error::internal(e);
    Ok(Draft {
        draft_id: row.try_get("draft_id").map_err(get)?,
        title: row.try_get("title").map_err(get)?,
        document_type: row.try_get("document_type").map_err(get)?,
        content: row
            .try_get::<Option<String>, _>("content")
            .map_err(get)?
            .unwrap_or_default(),
        template_id: row.try_get("template_id").map_err(get)?,
        author_id: row.try_get("author_id").map_err(get)?,
        status: row.try_get("status").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        tone: row.try_get("tone").map_err(get)?,
        target_audience: row.try_get("target_audience").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        metadata: row
            .try_get::<Option<Value>, _>("metadata")
            .map_err(get)?
            .unwrap_or_else(|| Value::Object(Default::default())),
        collaborators: json_strings(row.try_get("collaborators").map_err(get)?),
        tags: json_strings(row.try_get("tags").map_err(get)?),
        word_count: row.try_get("word_count").map_err(get)?,
    })
}

fn revision_from_row(row: &sqlx::postgres::PgRow, full: bool) -> Result<Revision, Error> {
    let get = |e: sqlx::Error| Error::internal(e);
    Ok(Revision {
        draft_id: row.try_get("draft_id").map_err(get)?,
        revision: row.try_get("revision").map_err(get)?,
        author_id: row.try_get("author_id").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        source: row.try_get("source").map_err(get)?,
        title: row.try_get("title").map_err(get)?,
        word_count: row.try_get("word_count").map_err(get)?,
        word_delta: row.try_get("word_delta").map_err(get)?,
        diff: if full {
            Some(row.try_get("diff").map_err(get)?)
        } else {
            None
        },
        content: if full {
            Some(row.try_get("content").map_err(get)?)
        } else {
            None
        },
        message: row.try_get("message").map_err(get)?,
    })
}

fn comment_from_row(row: &sqlx::postgres::PgRow) -> Result<Comment, Error> {
    let get = |e: sqlx::Error| Error::internal(e);
    Ok(Comment {
        comment_id: row.try_get("comment_id").map_err(get)?,
        draft_id: row.try_get("draft_id").map_err(get)?,
        author_id: row.try_get("author_id").map_err(get)?,
        body: row.try_get("body").map_err(get)?,
        anchor_start: row.try_get("anchor_start").map_err(get)?,
        anchor_end: row.try_get("anchor_end").map_err(get)?,
        quote: row.try_get("quote").map_err(get)?,
        status: row.try_get("status").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        resolved_by: row.try_get("resolved_by").map_err(get)?,
    })
}

/// List filters.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Author.
    pub author_id: Option<String>,
    /// Status (archived drafts are listed only when asked for).
    pub status: Option<String>,
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

    /// Inserts a new draft and its first revision.
    pub async fn create(&self, draft: &Draft) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO drafts (draft_id, title, document_type, content, template_id, author_id, status, version, tone, target_audience, created_at, updated_at, metadata, collaborators, comments, revision_history, tags, word_count)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,'[]'::jsonb,'[]'::jsonb,$15,$16)",
        )
        .bind(&draft.draft_id)
        .bind(&draft.title)
        .bind(&draft.document_type)
        .bind(&draft.content)
        .bind(&draft.template_id)
        .bind(&draft.author_id)
        .bind(&draft.status)
        .bind(draft.version)
        .bind(&draft.tone)
        .bind(&draft.target_audience)
        .bind(draft.created_at)
        .bind(draft.updated_at)
        .bind(&draft.metadata)
        .bind(serde_json::json!(draft.collaborators))
        .bind(serde_json::json!(draft.tags))
        .bind(draft.word_count)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Error::conflict(format!("draft {} already exists", draft.draft_id))
            }
            _ => db(e),
        })?;
        insert_revision(
            &mut tx,
            draft,
            "create",
            &draft.author_id,
            draft.word_count,
            &unified("", &draft.content, "empty", "r1"),
            None,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        metrics::counter!("ymera_drafting_revisions_total").increment(1);
        Ok(())
    }

    /// The draft, or 404.
    pub async fn get(&self, draft_id: &str) -> Result<Draft, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DRAFT_COLUMNS} FROM drafts WHERE draft_id = $1"
        )))
        .bind(draft_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| Error::not_found(format!("draft {draft_id} not found")))?;
        draft_from_row(&row)
    }

    /// Applies a change as a new revision. Returns the draft after it and the
    /// revision, or `None` as revision when nothing changed.
    pub async fn commit(
        &self,
        draft_id: &str,
        change: Change,
    ) -> Result<(Draft, Option<Revision>), Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DRAFT_COLUMNS} FROM drafts WHERE draft_id = $1 FOR UPDATE"
        )))
        .bind(draft_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| Error::not_found(format!("draft {draft_id} not found")))?;
        let before = draft_from_row(&row)?;
        if let Some(expected) = change.expected_version
            && expected != before.version
        {
            return Err(Error::conflict(format!(
                "draft {draft_id} is at version {}, not {expected}",
                before.version
            ))
            .with_detail("current_version", before.version));
        }
        if before.status == "archived" {
            return Err(Error::conflict(format!(
                "draft {draft_id} is archived; transition it to draft first"
            )));
        }
        let mut after = before.clone();
        if let Some(t) = change.title {
            after.title = t;
        }
        if let Some(c) = change.content {
            after.content = c;
        }
        if let Some(t) = change.tags {
            after.tags = t;
        }
        if let Some(m) = change.metadata {
            after.metadata = m;
        }
        if change.tone.is_some() {
            after.tone = change.tone;
        }
        if change.target_audience.is_some() {
            after.target_audience = change.target_audience;
        }
        if let Some(d) = change.document_type {
            after.document_type = d;
        }
        if after == before {
            return Ok((before, None));
        }
        if !after.collaborators.contains(&change.author_id) && change.author_id != after.author_id {
            after.collaborators.push(change.author_id.clone());
        }
        after.version = before.version + 1;
        after.word_count = word_count(&after.content);
        after.updated_at = Utc::now();
        sqlx::query(
            "UPDATE drafts SET title=$2, content=$3, tags=$4, metadata=$5, tone=$6, target_audience=$7, document_type=$8,
             version=$9, word_count=$10, updated_at=$11, collaborators=$12 WHERE draft_id=$1",
        )
        .bind(draft_id)
        .bind(&after.title)
        .bind(&after.content)
        .bind(serde_json::json!(after.tags))
        .bind(&after.metadata)
        .bind(&after.tone)
        .bind(&after.target_audience)
        .bind(&after.document_type)
        .bind(after.version)
        .bind(after.word_count)
        .bind(after.updated_at)
        .bind(serde_json::json!(after.collaborators))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let diff = unified(
            &before.content,
            &after.content,
            &format!("r{}", before.version),
            &format!("r{}", after.version),
        );
        let revision = insert_revision(
            &mut tx,
            &after,
            change.source,
            &change.author_id,
            after.word_count - before.word_count,
            &diff,
            change.message.as_deref(),
        )
        .await?;
        if before.content != after.content {
            remap_comments(&mut tx, draft_id, &before.content, &after.content).await?;
        }
        tx.commit().await.map_err(db)?;
        metrics::counter!("ymera_drafting_revisions_total").increment(1);
        Ok((after, Some(revision)))
    }

    /// Drafts matching the filter, newest change first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Draft>, Error> {
        let mut sql = format!("SELECT {DRAFT_COLUMNS} FROM drafts WHERE TRUE");
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if filter.author_id.is_some() {
            sql.push_str(&format!(" AND author_id = ${}", next()));
        }
        if filter.status.is_some() {
            sql.push_str(&format!(" AND status = ${}", next()));
        } else {
            sql.push_str(" AND status <> 'archived'");
        }
        if filter.tag.is_some() {
            sql.push_str(&format!(" AND tags @> ${}", next()));
        }
        if filter.query.is_some() {
            sql.push_str(&format!(" AND title ILIKE ${} ESCAPE '\\'", next()));
        }
        if filter.after.is_some() {
            let (a, b) = (next(), next());
            sql.push_str(&format!(" AND (updated_at, draft_id) < (${a}, ${b})"));
        }
        sql.push_str(&format!(
            " ORDER BY updated_at DESC, draft_id DESC LIMIT ${}",
            next()
        ));
        // Audited: the SQL is built from constants and numbered placeholders only.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(a) = &filter.author_id {
            q = q.bind(a);
        }
        if let Some(s) = &filter.status {
            q = q.bind(s);
        }
        if let Some(t) = &filter.tag {
            q = q.bind(serde_json::json!([t]));
        }
        if let Some(text) = &filter.query {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q = q.bind(format!("%{escaped}%"));
        }
        if let Some((at, id)) = &filter.after {
            q = q.bind(*at).bind(id);
        }
        q = q.bind(filter.limit);
        let rows = q.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(draft_from_row).collect()
    }

    /// Changes the status with the transition recorded; 409 when the draft
    /// is not in `from` any more.
    pub async fn transition(
        &self,
        draft_id: &str,
        from: &str,
        to: &str,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Draft, Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let now = Utc::now();
        let updated = sqlx::query(
            "UPDATE drafts SET status=$3, updated_at=$4, archived_at = CASE WHEN $3 = 'archived' THEN $4 ELSE NULL END
             WHERE draft_id=$1 AND status=$2",
        )
        .bind(draft_id)
        .bind(from)
        .bind(to)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if updated.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "draft {draft_id} is no longer {from}"
            )));
        }
        sqlx::query(
            "INSERT INTO draft_transitions (draft_id, from_status, to_status, actor, note, created_at) VALUES ($1,$2,$3,$4,$5,$6)",
        )
        .bind(draft_id)
        .bind(from)
        .bind(to)
        .bind(actor)
        .bind(note)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.get(draft_id).await
    }

    /// The recorded transitions of a draft, oldest first.
    pub async fn transitions(&self, draft_id: &str) -> Result<Vec<Transition>, Error> {
        let rows = sqlx::query(
            "SELECT from_status, to_status, actor, note, created_at FROM draft_transitions WHERE draft_id=$1 ORDER BY id LIMIT 1000",
        )
        .bind(draft_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    from_status: r.try_get("from_status").map_err(Error::internal)?,
                    to_status: r.try_get("to_status").map_err(Error::internal)?,
                    actor: r.try_get("actor").map_err(Error::internal)?,
                    note: r.try_get("note").map_err(Error::internal)?,
                    created_at: r.try_get("created_at").map_err(Error::internal)?,
                })
            })
            .collect()
    }

    /// Deletes a draft with its revisions, comments and transitions.
    pub async fn hard_delete(&self, draft_id: &str) -> Result<(), Error> {
        let done = sqlx::query("DELETE FROM drafts WHERE draft_id=$1")
            .bind(draft_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("draft {draft_id} not found")));
        }
        Ok(())
    }

    /// Revisions, newest first, before `before` (exclusive) when given.
    pub async fn revisions(
        &self,
        draft_id: &str,
        before: Option<i32>,
        limit: i64,
        full: bool,
    ) -> Result<Vec<Revision>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM draft_revisions WHERE draft_id=$1 AND ($2::INTEGER IS NULL OR revision < $2) ORDER BY revision DESC LIMIT $3",
        )
        .bind(draft_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| revision_from_row(r, full)).collect()
    }

    /// One revision with content and diff, or 404.
    pub async fn revision(&self, draft_id: &str, revision: i32) -> Result<Revision, Error> {
        let row = sqlx::query("SELECT * FROM draft_revisions WHERE draft_id=$1 AND revision=$2")
            .bind(draft_id)
            .bind(revision)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| {
                Error::not_found(format!("draft {draft_id} has no revision {revision}"))
            })?;
        revision_from_row(&row, true)
    }

    /// Adds a comment.
    pub async fn add_comment(&self, c: &Comment) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO draft_comments (comment_id, draft_id, author_id, body, anchor_start, anchor_end, quote, status, created_at, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        )
        .bind(&c.comment_id)
        .bind(&c.draft_id)
        .bind(&c.author_id)
        .bind(&c.body)
        .bind(c.anchor_start)
        .bind(c.anchor_end)
        .bind(&c.quote)
        .bind(&c.status)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Resolves or reopens a comment.
    pub async fn set_comment_status(
        &self,
        draft_id: &str,
        comment_id: &str,
        status: &str,
        actor: &str,
    ) -> Result<Comment, Error> {
        let row = sqlx::query(
            "UPDATE draft_comments SET status=$3, updated_at=now(), resolved_by = CASE WHEN $3='resolved' THEN $4 ELSE NULL END
             WHERE draft_id=$1 AND comment_id=$2 RETURNING *",
        )
        .bind(draft_id)
        .bind(comment_id)
        .bind(status)
        .bind(actor)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| Error::not_found(format!("comment {comment_id} not found")))?;
        comment_from_row(&row)
    }

    /// Comments of a draft, oldest first.
    pub async fn comments(&self, draft_id: &str) -> Result<Vec<Comment>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM draft_comments WHERE draft_id=$1 ORDER BY created_at, comment_id LIMIT 10000",
        )
        .bind(draft_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(comment_from_row).collect()
    }

    /// Creates or replaces a template.
    pub async fn set_template(&self, t: &Template) -> Result<Template, Error> {
        let row = sqlx::query(
            "INSERT INTO draft_templates (template_id, name, document_type, description, content, placeholders, created_at, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$7)
             ON CONFLICT (template_id) DO UPDATE SET name=$2, document_type=$3, description=$4, content=$5, placeholders=$6, updated_at=$7
             RETURNING created_at",
        )
        .bind(&t.template_id)
        .bind(&t.name)
        .bind(&t.document_type)
        .bind(&t.description)
        .bind(&t.content)
        .bind(serde_json::json!(t.placeholders))
        .bind(t.updated_at)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let mut t = t.clone();
        t.created_at = row.try_get("created_at").map_err(Error::internal)?;
        Ok(t)
    }

    /// Templates, by name.
    pub async fn templates(&self, document_type: Option<&str>) -> Result<Vec<Template>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM draft_templates WHERE ($1::TEXT IS NULL OR document_type=$1) ORDER BY name, template_id LIMIT 1000",
        )
        .bind(document_type)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(template_from_row).collect()
    }

    /// One template, or 404.
    pub async fn template(&self, template_id: &str) -> Result<Template, Error> {
        let row = sqlx::query("SELECT * FROM draft_templates WHERE template_id=$1")
            .bind(template_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| Error::not_found(format!("template {template_id} not found")))?;
        template_from_row(&row)
    }
}

fn template_from_row(row: &sqlx::postgres::PgRow) -> Result<Template, Error> {
    let get = |e: sqlx::Error| Error::internal(e);
    Ok(Template {
        template_id: row.try_get("template_id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        document_type: row.try_get("document_type").map_err(get)?,
        description: row.try_get("description").map_err(get)?,
        content: row.try_get("content").map_err(get)?,
        placeholders: json_strings(row.try_get("placeholders").map_err(get)?),
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}

async fn insert_revision(
    tx: &mut Transaction<'_, Postgres>,
    draft: &Draft,
    source: &str,
    author: &str,
    word_delta: i32,
    diff: &str,
    message: Option<&str>,
) -> Result<Revision, Error> {
    let now = draft.updated_at;
    sqlx::query(
        "INSERT INTO draft_revisions (draft_id, revision, author_id, created_at, source, title, content, word_count, word_delta, diff, message)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
    )
    .bind(&draft.draft_id)
    .bind(draft.version)
    .bind(author)
    .bind(now)
    .bind(source)
    .bind(&draft.title)
    .bind(&draft.content)
    .bind(draft.word_count)
    .bind(word_delta)
    .bind(diff)
    .bind(message)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(Revision {
        draft_id: draft.draft_id.clone(),
        revision: draft.version,
        author_id: author.to_owned(),
        created_at: now,
        source: source.to_owned(),
        title: draft.title.clone(),
        word_count: draft.word_count,
        word_delta,
        diff: None,
        content: None,
        message: message.map(str::to_owned),
    })
}

async fn remap_comments(
    tx: &mut Transaction<'_, Postgres>,
    draft_id: &str,
    old: &str,
    new: &str,
) -> Result<(), Error> {
    let rows = sqlx::query(
        "SELECT comment_id, anchor_start, anchor_end FROM draft_comments WHERE draft_id=$1 FOR UPDATE",
    )
    .bind(draft_id)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    if rows.is_empty() {
        return Ok(());
    }
    let map = OffsetMap::new(old, new);
    for row in rows {
        let id: String = row.try_get("comment_id").map_err(Error::internal)?;
        let start: i32 = row.try_get("anchor_start").map_err(Error::internal)?;
        let end: i32 = row.try_get("anchor_end").map_err(Error::internal)?;
        let new_start = map.map(usize::try_from(start).unwrap_or(0), false);
        let new_end = map
            .map(usize::try_from(end).unwrap_or(0), true)
            .max(new_start);
        // An anchor on deleted text collapses to an empty range where it was.
        let new_end = if end > start && map_is_collapsed(&map, start, end) {
            new_start
        } else {
            new_end
        };
        sqlx::query("UPDATE draft_comments SET anchor_start=$2, anchor_end=$3 WHERE comment_id=$1")
            .bind(&id)
            .bind(i32::try_from(new_start).unwrap_or(i32::MAX))
            .bind(i32::try_from(new_end).unwrap_or(i32::MAX))
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// Whether the end of a range maps before the start of it (deleted text).
fn map_is_collapsed(map: &OffsetMap, start: i32, end: i32) -> bool {
    let s = map.map(usize::try_from(start).unwrap_or(0), false);
    let e = map.map(usize::try_from(end - 1).unwrap_or(0), false);
    e < s
}
