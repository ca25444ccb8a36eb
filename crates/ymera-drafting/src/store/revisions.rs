//! Revisions: what every commit records.

use sqlx::{Postgres, Row, Transaction};
use ymera_core::Error;

use super::{Draft, DraftStore, Named, Revision, RevisionSource, db, stored};

fn revision_from_row(row: &sqlx::postgres::PgRow, full: bool) -> Result<Revision, Error> {
    let get = |e: sqlx::Error| Error::internal(e);
    Ok(Revision {
        draft_id: row.try_get("draft_id").map_err(get)?,
        revision: row.try_get("revision").map_err(get)?,
        author_id: row.try_get("author_id").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        source: stored("source", row.try_get("source").map_err(get)?)?,
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

impl DraftStore {
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
}

pub(super) async fn insert_revision(
    tx: &mut Transaction<'_, Postgres>,
    draft: &Draft,
    source: RevisionSource,
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
    .bind(source.as_str())
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
        source,
        title: draft.title.clone(),
        word_count: draft.word_count,
        word_delta,
        diff: None,
        content: None,
        message: message.map(str::to_owned),
    })
}
