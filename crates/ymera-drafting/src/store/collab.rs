//! Collaboration sessions in PostgreSQL, shared by every drafting replica:
//! `draft_collab` (the yrs document as of the last commit, `base_seq`, and
//! the last appended update, `seq`), `draft_collab_updates` (every update
//! after `base_seq`, numbered per draft) and `draft_collab_editors`.
//!
//! Lock order: the draft's row (`drafts`, [`DraftStore::lock`]), then its
//! session row, then editor rows. An appended update takes only the
//! session row, in one statement, so it never waits for a lock while
//! holding one.

use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;
use ymera_core::Error;

use super::{Change, Draft, DraftStatus, DraftStore, RevisionSource, db};
use crate::collab::{Editor, MAX_BACKLOG, MAX_EDITORS, MAX_SESSIONS, PRESENCE_TIMEOUT};

/// A numbered update of a session: (seq, user, v1 update bytes).
pub type StoredUpdate = (i64, String, Vec<u8>);

/// A session as stored.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// This opening of the session.
    pub session_id: Uuid,
    /// The yrs document (v1) as of `base_seq`.
    pub base_state: Vec<u8>,
    /// The last update folded into `base_state`.
    pub base_seq: i64,
    /// The last update appended.
    pub seq: i64,
}

/// What appending an update found.
#[derive(Debug)]
pub enum Append {
    /// Stored as `seq` of `session_id` (or, without an update, the
    /// session's current `seq`), with the editors.
    Done {
        /// The session.
        session_id: Uuid,
        /// The update's number (or the current one).
        seq: i64,
        /// Who is editing.
        editors: Vec<Editor>,
    },
    /// The session is live but this client has not joined it.
    NotJoined,
    /// No session is live.
    NoSession,
}

/// Which commit of a session's text.
#[derive(Debug, Clone)]
pub enum CommitMode {
    /// The periodic one: only when changed and the interval (seconds) has
    /// passed since the last, or the backlog is long.
    Due(f64),
    /// Whatever changed (shutdown of a replica).
    Changed,
    /// The client leaves; the last one closes the session.
    Leave(String),
    /// Closes the session when no editor is left (presence timed out).
    Idle,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The version the text was committed as (`None`: unchanged or nothing to do).
    pub version: Option<i32>,
    /// Whether the session closed.
    pub closed: bool,
}

/// The merged text and the new base document of a session:
/// `merge(base_state, updates)`.
pub type Merge<'a> =
    &'a (dyn Fn(&[u8], &[StoredUpdate]) -> Result<(String, Vec<u8>), Error> + Sync);

fn editors_json(value: Option<Value>) -> Result<Vec<Editor>, Error> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v).map_err(Error::internal),
    }
}

const EDITORS: &str = "(SELECT COALESCE(json_agg(json_build_object('client_id', e.client_id, 'user_id', e.user_id, 'joined_at', e.joined_at, 'idle_seconds', EXTRACT(EPOCH FROM now() - e.last_seen)::float8) ORDER BY e.joined_at, e.client_id), '[]'::json) FROM draft_collab_editors e WHERE e.draft_id = $1)";

impl DraftStore {
    /// Whether a collaboration session of the draft is live (on any replica).
    pub async fn collab_live(&self, draft_id: &str) -> Result<bool, Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM draft_collab WHERE draft_id = $1)")
            .bind(draft_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    /// Who is editing a draft.
    pub async fn collab_editors(&self, draft_id: &str) -> Result<Vec<Editor>, Error> {
        let v: Option<Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {EDITORS}")))
            .bind(draft_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        editors_json(v)
    }

    /// Live sessions (all replicas).
    pub async fn collab_sessions(&self) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT count(*) FROM draft_collab")
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    /// Joins `client_id` as `user_id`, opening the session from the draft's
    /// content (`base(content)`, the yrs document as v1) when none is
    /// live. Returns the draft as read and the session's id and last seq.
    pub async fn collab_join(
        &self,
        draft_id: &str,
        client_id: &str,
        user_id: &str,
        wait_share: f64,
        base: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<(Draft, Uuid, i64), Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let draft = self.lock(&mut tx, draft_id).await?;
        if draft.status == DraftStatus::Archived {
            return Err(Error::conflict("the draft is archived"));
        }
        let row =
            sqlx::query("SELECT session_id, seq FROM draft_collab WHERE draft_id = $1 FOR UPDATE")
                .bind(draft_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let (session_id, seq) = match row {
            Some(r) => (
                r.try_get::<Uuid, _>("session_id")
                    .map_err(Error::internal)?,
                r.try_get::<i64, _>("seq").map_err(Error::internal)?,
            ),
            None => {
                let live: i64 = sqlx::query_scalar("SELECT count(*) FROM draft_collab")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
                if live >= MAX_SESSIONS as i64 {
                    return Err(Error::rate_limited(5_000));
                }
                let session_id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO draft_collab (draft_id, session_id, base_state, base_seq, seq, base_version, committed_at, wait_share, created_at)
                     VALUES ($1, $2, $3, 0, 0, $4, now(), $5, now())",
                )
                .bind(draft_id)
                .bind(session_id)
                .bind(base(&draft.content))
                .bind(draft.version)
                .bind(wait_share)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                (session_id, 0)
            }
        };
        let (editors, present): (i64, bool) = sqlx::query_as(
            "SELECT count(*), COALESCE(bool_or(client_id = $2), false) FROM draft_collab_editors WHERE draft_id = $1",
        )
        .bind(draft_id)
        .bind(client_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        if !present && editors >= MAX_EDITORS as i64 {
            return Err(Error::conflict(format!(
                "draft {draft_id} already has {MAX_EDITORS} editors"
            )));
        }
        sqlx::query(
            "INSERT INTO draft_collab_editors (draft_id, client_id, user_id, joined_at, last_seen) VALUES ($1, $2, $3, now(), now())
             ON CONFLICT (draft_id, client_id) DO UPDATE SET user_id = EXCLUDED.user_id, last_seen = now()",
        )
        .bind(draft_id)
        .bind(client_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((draft, session_id, seq))
    }

    /// Appends an update of a joined client (durable when this returns),
    /// or, without one, reads the session's position.
    pub async fn collab_append(
        &self,
        draft_id: &str,
        client_id: &str,
        update: Option<&[u8]>,
    ) -> Result<Append, Error> {
        let sql = format!(
            "WITH s AS (
                UPDATE draft_collab SET seq = seq + $4
                WHERE draft_id = $1 AND EXISTS (SELECT 1 FROM draft_collab_editors WHERE draft_id = $1 AND client_id = $2)
                RETURNING seq, session_id
             ), i AS (
                INSERT INTO draft_collab_updates (draft_id, seq, client_id, user_id, body)
                SELECT $1, s.seq, $2, e.user_id, $3 FROM s, draft_collab_editors e
                WHERE $3::bytea IS NOT NULL AND e.draft_id = $1 AND e.client_id = $2
             )
             SELECT s.seq, s.session_id, {EDITORS} AS editors FROM s"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(draft_id)
            .bind(client_id)
            .bind(update)
            .bind(i64::from(update.is_some()))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        match row {
            Some(r) => Ok(Append::Done {
                seq: r.try_get("seq").map_err(Error::internal)?,
                session_id: r.try_get("session_id").map_err(Error::internal)?,
                editors: editors_json(r.try_get("editors").map_err(Error::internal)?)?,
            }),
            None if self.collab_live(draft_id).await? => Ok(Append::NotJoined),
            None => Ok(Append::NoSession),
        }
    }

    /// Marks an editor as heard from now.
    pub async fn collab_touch(&self, draft_id: &str, client_id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE draft_collab_editors SET last_seen = now() WHERE draft_id = $1 AND client_id = $2")
            .bind(draft_id)
            .bind(client_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The updates `after < seq <= upto` of a session still in the log;
    /// `None` when that session is not live any more.
    pub async fn collab_updates(
        &self,
        draft_id: &str,
        session_id: Uuid,
        after: i64,
        upto: i64,
    ) -> Result<Option<Vec<StoredUpdate>>, Error> {
        let rows = sqlx::query(
            "SELECT u.seq, u.user_id, u.body FROM draft_collab c JOIN draft_collab_updates u ON u.draft_id = c.draft_id
             WHERE c.draft_id = $1 AND c.session_id = $2 AND u.seq > $3 AND u.seq <= $4 ORDER BY u.seq",
        )
        .bind(draft_id)
        .bind(session_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if rows.is_empty() && !self.collab_session_is(draft_id, session_id).await? {
            return Ok(None);
        }
        rows.iter()
            .map(update_from_row)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn collab_session_is(&self, draft_id: &str, session_id: Uuid) -> Result<bool, Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM draft_collab WHERE draft_id = $1 AND session_id = $2)",
        )
        .bind(draft_id)
        .bind(session_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    /// The session's base document and every update after it up to `upto`
    /// (one snapshot); `None` when that session is not live.
    pub async fn collab_load(
        &self,
        draft_id: &str,
        session_id: Uuid,
        upto: i64,
    ) -> Result<Option<(SessionRow, Vec<StoredUpdate>)>, Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let Some(row) = sqlx::query(
            "SELECT session_id, base_state, base_seq, seq FROM draft_collab WHERE draft_id = $1 AND session_id = $2",
        )
        .bind(draft_id)
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        else {
            return Ok(None);
        };
        let session = session_from_row(&row)?;
        let updates = sqlx::query(
            "SELECT seq, user_id, body FROM draft_collab_updates WHERE draft_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
        )
        .bind(draft_id)
        .bind(session.base_seq)
        .bind(upto.max(session.base_seq))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        .iter()
        .map(update_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(db)?;
        Ok(Some((session, updates)))
    }

    /// Sessions whose periodic commit is due (`interval` in seconds).
    pub async fn collab_due(&self, interval: f64, limit: i64) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT draft_id FROM draft_collab WHERE seq > base_seq
             AND (committed_at + make_interval(secs => $1 * wait_share) <= now() OR seq - base_seq >= $2)
             ORDER BY committed_at LIMIT $3",
        )
        .bind(interval)
        .bind(MAX_BACKLOG)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Drops editors not heard from for [`PRESENCE_TIMEOUT`] and returns the
    /// sessions left without editors (to close).
    pub async fn collab_idle(&self, limit: i64) -> Result<Vec<String>, Error> {
        sqlx::query(
            "DELETE FROM draft_collab_editors WHERE last_seen < now() - make_interval(secs => $1)",
        )
        .bind(PRESENCE_TIMEOUT.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        sqlx::query_scalar(
            "SELECT c.draft_id FROM draft_collab c WHERE NOT EXISTS (SELECT 1 FROM draft_collab_editors e WHERE e.draft_id = c.draft_id) LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Commits a session's text as a revision (source `collab`) and folds
    /// its updates into the base document, or closes it, under the draft's
    /// lock: whichever replica gets there first does it, a later one finds
    /// nothing left to do, so no text is committed twice.
    pub async fn collab_commit(
        &self,
        draft_id: &str,
        mode: &CommitMode,
        merge: Merge<'_>,
    ) -> Result<Committed, Error> {
        let nothing = Committed {
            version: None,
            closed: false,
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        match self.lock(&mut tx, draft_id).await {
            Ok(_) => {}
            Err(e) if e.kind == ymera_core::ErrorKind::NotFound => return Ok(nothing),
            Err(e) => return Err(e),
        }
        let (interval, backlog) = match mode {
            CommitMode::Due(secs) => (*secs, MAX_BACKLOG),
            _ => (0.0, 0),
        };
        let Some(row) = sqlx::query(
            "SELECT session_id, base_state, base_seq, seq,
                    (seq > base_seq AND (committed_at + make_interval(secs => $2 * wait_share) <= now() OR seq - base_seq >= $3)) AS due
             FROM draft_collab WHERE draft_id = $1 FOR UPDATE",
        )
        .bind(draft_id)
        .bind(interval)
        .bind(backlog.max(1))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        else {
            return Ok(nothing);
        };
        let session = session_from_row(&row)?;
        let due: bool = row.try_get("due").map_err(Error::internal)?;
        let close = match mode {
            CommitMode::Due(_) | CommitMode::Changed => {
                if !due {
                    return Ok(nothing);
                }
                false
            }
            CommitMode::Leave(client_id) => {
                sqlx::query(
                    "DELETE FROM draft_collab_editors WHERE draft_id = $1 AND client_id = $2",
                )
                .bind(draft_id)
                .bind(client_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                let left = self.editor_count(&mut tx, draft_id).await?;
                if left > 0 {
                    tx.commit().await.map_err(db)?;
                    return Ok(nothing);
                }
                true
            }
            CommitMode::Idle => {
                if self.editor_count(&mut tx, draft_id).await? > 0 {
                    return Ok(nothing);
                }
                true
            }
        };
        let mut version = None;
        let mut new_base = None;
        if session.seq > session.base_seq {
            let updates = sqlx::query(
                "SELECT seq, user_id, body FROM draft_collab_updates WHERE draft_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
            )
            .bind(draft_id)
            .bind(session.base_seq)
            .bind(session.seq)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(update_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            let (text, state) = merge(&session.base_state, &updates)?;
            let mut authors: Vec<String> = Vec::new();
            for (_, user, _) in &updates {
                if !authors.contains(user) {
                    authors.push(user.clone());
                }
            }
            let change = Change {
                title: None,
                content: Some(text),
                tags: None,
                metadata: None,
                tone: None,
                target_audience: None,
                document_type: None,
                author_id: authors
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "collab".to_owned()),
                source: RevisionSource::Collab,
                message: (!authors.is_empty())
                    .then(|| format!("collaborative edit by {}", authors.join(", "))),
                expected_version: None,
            };
            let (draft, revision) = self.commit_in(&mut tx, draft_id, change).await?;
            version = revision.map(|_| draft.version);
            new_base = Some(state);
        }
        if close {
            sqlx::query("DELETE FROM draft_collab WHERE draft_id = $1")
                .bind(draft_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        } else if let Some(state) = new_base {
            sqlx::query(
                "UPDATE draft_collab SET base_state = $2, base_seq = $3, committed_at = now(), wait_share = 1 WHERE draft_id = $1",
            )
            .bind(draft_id)
            .bind(state)
            .bind(session.seq)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("DELETE FROM draft_collab_updates WHERE draft_id = $1 AND seq <= $2")
                .bind(draft_id)
                .bind(session.seq)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        if version.is_some() {
            metrics::counter!("ymera_drafting_revisions_total").increment(1);
        }
        Ok(Committed {
            version,
            closed: close,
        })
    }

    async fn editor_count(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        draft_id: &str,
    ) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT count(*) FROM draft_collab_editors WHERE draft_id = $1")
            .bind(draft_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)
    }
}

fn session_from_row(row: &sqlx::postgres::PgRow) -> Result<SessionRow, Error> {
    Ok(SessionRow {
        session_id: row.try_get("session_id").map_err(Error::internal)?,
        base_state: row.try_get("base_state").map_err(Error::internal)?,
        base_seq: row.try_get("base_seq").map_err(Error::internal)?,
        seq: row.try_get("seq").map_err(Error::internal)?,
    })
}

fn update_from_row(row: &sqlx::postgres::PgRow) -> Result<StoredUpdate, Error> {
    Ok((
        row.try_get("seq").map_err(Error::internal)?,
        row.try_get("user_id").map_err(Error::internal)?,
        row.try_get("body").map_err(Error::internal)?,
    ))
}
