//! Drafts: create, read, commit, list, lifecycle transitions, delete.

use chrono::Utc;
use serde_json::Value;
use sqlx::Row;
use ymera_core::Error;

use super::comments::remap_comments;
use super::revisions::insert_revision;
use super::{
    Change, Draft, DraftCounts, DraftStatus, DraftStore, Expired, ListFilter, Named, Revision,
    RevisionSource, Transition, db, json_strings, stored, word_count,
};
use crate::diff::unified;

const DRAFT_COLUMNS: &str = "draft_id, title, document_type, content, template_id, author_id, status, version, tone, target_audience, created_at, updated_at, metadata, collaborators, tags, word_count, expires_at";

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
        status: stored("status", row.try_get("status").map_err(get)?)?,
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
        expires_at: row.try_get("expires_at").map_err(get)?,
    })
}

impl DraftStore {
    /// Inserts a new draft and its first revision.
    pub async fn create(&self, draft: &Draft) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO drafts (draft_id, title, document_type, content, template_id, author_id, status, version, tone, target_audience, created_at, updated_at, metadata, collaborators, comments, revision_history, tags, word_count, expires_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,'[]'::jsonb,'[]'::jsonb,$15,$16,$17)",
        )
        .bind(&draft.draft_id)
        .bind(&draft.title)
        .bind(&draft.document_type)
        .bind(&draft.content)
        .bind(&draft.template_id)
        .bind(&draft.author_id)
        .bind(draft.status.as_str())
        .bind(draft.version)
        .bind(&draft.tone)
        .bind(&draft.target_audience)
        .bind(draft.created_at)
        .bind(draft.updated_at)
        .bind(&draft.metadata)
        .bind(serde_json::json!(draft.collaborators))
        .bind(serde_json::json!(draft.tags))
        .bind(draft.word_count)
        .bind(draft.expires_at)
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
            RevisionSource::Create,
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
        let done = self.commit_in(&mut tx, draft_id, change).await?;
        tx.commit().await.map_err(db)?;
        if done.1.is_some() {
            metrics::counter!("ymera_drafting_revisions_total").increment(1);
        }
        Ok(done)
    }

    /// The draft, locked for the rest of `tx` (the lock every writer of a
    /// draft and of its collaboration session takes first), or 404.
    pub(crate) async fn lock(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        draft_id: &str,
    ) -> Result<Draft, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DRAFT_COLUMNS} FROM drafts WHERE draft_id = $1 FOR UPDATE"
        )))
        .bind(draft_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?
        .ok_or_else(|| Error::not_found(format!("draft {draft_id} not found")))?;
        draft_from_row(&row)
    }

    /// [`commit`](Self::commit) inside `tx` (the caller commits it). A
    /// change from anything but the collaboration session is refused (409)
    /// while a session is live: its document is then the only writer.
    pub(crate) async fn commit_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        draft_id: &str,
        change: Change,
    ) -> Result<(Draft, Option<Revision>), Error> {
        let before = self.lock(tx, draft_id).await?;
        if change.source != RevisionSource::Collab {
            let live: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM draft_collab WHERE draft_id = $1)",
            )
            .bind(draft_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?;
            if live {
                return Err(Error::conflict(format!(
                    "draft {draft_id} is being edited collaboratively; send changes through drafting.collab.update"
                )));
            }
        }
        if let Some(expected) = change.expected_version
            && expected != before.version
        {
            return Err(Error::conflict(format!(
                "draft {draft_id} is at version {}, not {expected}",
                before.version
            ))
            .with_detail("current_version", before.version));
        }
        if before.status == DraftStatus::Archived {
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
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        let diff = unified(
            &before.content,
            &after.content,
            &format!("r{}", before.version),
            &format!("r{}", after.version),
        );
        let revision = insert_revision(
            tx,
            &after,
            change.source,
            &change.author_id,
            after.word_count - before.word_count,
            &diff,
            change.message.as_deref(),
        )
        .await?;
        if before.content != after.content {
            remap_comments(tx, draft_id, &before.content, &after.content).await?;
        }
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
        if let Some(s) = filter.status {
            q = q.bind(s.as_str());
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
        from: DraftStatus,
        to: DraftStatus,
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
        .bind(from.as_str())
        .bind(to.as_str())
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
        .bind(from.as_str())
        .bind(to.as_str())
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
                    from_status: stored(
                        "from_status",
                        r.try_get("from_status").map_err(Error::internal)?,
                    )?,
                    to_status: stored(
                        "to_status",
                        r.try_get("to_status").map_err(Error::internal)?,
                    )?,
                    actor: r.try_get("actor").map_err(Error::internal)?,
                    note: r.try_get("note").map_err(Error::internal)?,
                    created_at: r.try_get("created_at").map_err(Error::internal)?,
                })
            })
            .collect()
    }

    /// Sets (or with `None` clears) when a draft expires; 404 when absent,
    /// 409 when archived.
    pub async fn set_expiry(
        &self,
        draft_id: &str,
        expires_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<(), Error> {
        let done = sqlx::query(
            "UPDATE drafts SET expires_at = $2 WHERE draft_id = $1 AND status <> 'archived'",
        )
        .bind(draft_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            self.get(draft_id).await?;
            return Err(Error::conflict("the draft is archived"));
        }
        Ok(())
    }

    /// Archives up to `limit` drafts whose `expires_at` has passed (never
    /// one with a live collaboration session), each with its transition
    /// (actor `expiry`); rows another replica is archiving are skipped, so
    /// each draft is archived once.
    pub async fn archive_expired(&self, limit: i64) -> Result<Vec<Expired>, Error> {
        let rows = sqlx::query(
            "WITH due AS (
                SELECT draft_id, status FROM drafts d
                WHERE expires_at <= now() AND status <> 'archived'
                  AND NOT EXISTS (SELECT 1 FROM draft_collab c WHERE c.draft_id = d.draft_id)
                ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
             ), archived AS (
                UPDATE drafts d SET status = 'archived', archived_at = now(), updated_at = now()
                FROM due WHERE d.draft_id = due.draft_id
                RETURNING d.draft_id, due.status AS from_status, d.expires_at, d.archived_at
             ), logged AS (
                INSERT INTO draft_transitions (draft_id, from_status, to_status, actor, note, created_at)
                SELECT draft_id, from_status, 'archived', 'expiry', 'expired at ' || to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), archived_at
                FROM archived
             )
             SELECT draft_id, from_status, expires_at, archived_at FROM archived",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Expired {
                    draft_id: r.try_get("draft_id").map_err(Error::internal)?,
                    from_status: stored(
                        "from_status",
                        r.try_get("from_status").map_err(Error::internal)?,
                    )?,
                    expires_at: r.try_get("expires_at").map_err(Error::internal)?,
                    archived_at: r.try_get("archived_at").map_err(Error::internal)?,
                })
            })
            .collect()
    }

    /// Drafts by status, and those with an expiry still to come.
    pub async fn counts(&self) -> Result<DraftCounts, Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM drafts GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let (expiring, sessions, editors, pending): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM drafts WHERE expires_at IS NOT NULL AND status <> 'archived'),
                    (SELECT count(*) FROM draft_collab),
                    (SELECT count(*) FROM draft_collab_editors),
                    (SELECT COALESCE(sum(seq - base_seq), 0)::bigint FROM draft_collab)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(DraftCounts {
            by_status: rows.into_iter().collect(),
            expiring,
            sessions,
            editors,
            pending_updates: pending,
        })
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
}
