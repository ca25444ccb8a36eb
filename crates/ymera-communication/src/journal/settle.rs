//! The settler: stores overall statuses in `message_history.status`, in
//! bulk and off the delivery path.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::sql::STATUS_SQL;

/// Most message ids waiting for the settler; past it the next run sweeps.
const MAX_UNSETTLED: usize = 200_000;
/// How often the settler stores overall statuses.
const SETTLE_EVERY: Duration = Duration::from_millis(500);
/// Most messages settled by one statement.
const SETTLE_CHUNK: usize = 5000;

/// Messages whose copies reached a final state since the settler last ran.
///
/// Storing the overall status is kept off the delivery path (a copy is
/// acknowledged once its own row is stored): the settler updates
/// `message_history.status` in bulk every [`SETTLE_EVERY`], and at start
/// sweeps every row still `accepted` (statuses a crash left unsettled).
#[derive(Clone, Default)]
pub(super) struct Settle {
    inner: Arc<std::sync::Mutex<(BTreeSet<Uuid>, bool)>>,
}

impl Settle {
    pub(super) fn add(&self, ids: impl Iterator<Item = Uuid>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if inner.0.len() >= MAX_UNSETTLED {
                inner.1 = true;
                break;
            }
            inner.0.insert(id);
        }
    }

    fn take(&self) -> (Vec<Uuid>, bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let ids = std::mem::take(&mut inner.0).into_iter().collect();
        (ids, std::mem::take(&mut inner.1))
    }
}

pub(super) async fn settler(pool: PgPool, settle: Settle) {
    let mut sweep = true;
    // Runs while a writer (holding a clone) is alive.
    while Arc::strong_count(&settle.inner) > 1 {
        let (ids, overflowed) = settle.take();
        let result = if sweep || overflowed {
            settle_statuses(&pool, None).await
        } else {
            let mut result = Ok(());
            for chunk in ids.chunks(SETTLE_CHUNK) {
                result = settle_statuses(&pool, Some(chunk)).await;
                if result.is_err() {
                    break;
                }
            }
            result
        };
        sweep = match result {
            Ok(()) => false,
            Err(err) => {
                tracing::warn!(error = %err, "message statuses not stored; will sweep");
                true
            }
        };
        tokio::time::sleep(SETTLE_EVERY).await;
    }
}

/// Stores the overall status of `ids` (or of every row still `accepted`).
async fn settle_statuses(pool: &PgPool, ids: Option<&[Uuid]>) -> Result<(), sqlx::Error> {
    let filter = match ids {
        Some(_) => "h.message_id = ANY($1)",
        None => "h.status = 'accepted'",
    };
    let sql = format!(
        "UPDATE message_history m SET status = s.status FROM ( \
           SELECT h.message_id, {STATUS_SQL} AS status FROM message_history h WHERE {filter}) s \
         WHERE m.message_id = s.message_id AND s.status <> 'accepted' \
           AND m.status IS DISTINCT FROM s.status"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql));
    let query = match ids {
        Some(ids) => query.bind(ids.iter().map(Uuid::to_string).collect::<Vec<_>>()),
        None => query,
    };
    query.execute(pool).await.map(|_| ())
}
