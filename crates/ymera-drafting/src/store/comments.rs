//! Comments anchored to character ranges, remapped on every commit.

use sqlx::{Postgres, Row, Transaction};
use ymera_core::Error;

use super::{Comment, CommentStatus, DraftStore, Named, db, stored};
use crate::diff::OffsetMap;

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
        status: stored("status", row.try_get("status").map_err(get)?)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        resolved_by: row.try_get("resolved_by").map_err(get)?,
    })
}

impl DraftStore {
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
        .bind(c.status.as_str())
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
        status: CommentStatus,
        actor: &str,
    ) -> Result<Comment, Error> {
        let row = sqlx::query(
            "UPDATE draft_comments SET status=$3, updated_at=now(), resolved_by = CASE WHEN $3='resolved' THEN $4 ELSE NULL END
             WHERE draft_id=$1 AND comment_id=$2 RETURNING *",
        )
        .bind(draft_id)
        .bind(comment_id)
        .bind(status.as_str())
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
}

pub(super) async fn remap_comments(
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
