//! Collaboration updates are stored in batches: every
//! `drafting.collab.update` carrying an update hands it to one task per
//! replica, which stores whatever has queued meanwhile in one PostgreSQL
//! statement ([`DraftStore::collab_append_batch`]) and answers each
//! request when its update is stored — group commit, so the updates'
//! rate is not bounded by one statement per keystroke.

use tokio::sync::{mpsc, oneshot};
use ymera_core::Error;

use crate::store::{Append, DraftStore};

/// Most updates one statement stores.
pub const MAX_BATCH: usize = 256;
/// Updates waiting for the task before `drafting.collab.update` waits.
pub const QUEUE: usize = 8_192;

/// One update to store, and where its outcome goes.
pub struct Job {
    draft_id: String,
    client_id: String,
    update: Vec<u8>,
    done: oneshot::Sender<Result<Append, Error>>,
}

/// The sending end of the queue.
#[derive(Clone, Debug)]
pub struct Appender {
    jobs: mpsc::Sender<Job>,
}

impl Appender {
    /// Starts the task (it ends when every `Appender` is dropped).
    pub fn start(store: DraftStore) -> Appender {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Appender { jobs }
    }

    /// Stores an update; answers once it is durable.
    pub async fn append(
        &self,
        draft_id: &str,
        client_id: &str,
        update: Vec<u8>,
    ) -> Result<Append, Error> {
        let (done, outcome) = oneshot::channel();
        let job = Job {
            draft_id: draft_id.to_owned(),
            client_id: client_id.to_owned(),
            update,
            done,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::dependency_down("postgres"))?;
        outcome
            .await
            .map_err(|_| Error::dependency_down("postgres"))?
    }
}

async fn run(store: DraftStore, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let jobs: Vec<(String, String, Vec<u8>)> = batch
            .iter_mut()
            .map(|j| {
                (
                    std::mem::take(&mut j.draft_id),
                    std::mem::take(&mut j.client_id),
                    std::mem::take(&mut j.update),
                )
            })
            .collect();
        match store.collab_append_batch(&jobs).await {
            Ok(stored) => {
                for ((job, outcome), (draft_id, client_id, update)) in
                    batch.drain(..).zip(stored).zip(jobs)
                {
                    let answer = match outcome {
                        Some((seq, session_id, editors)) => Ok(Append::Done {
                            session_id,
                            seq,
                            editors,
                        }),
                        // Not joined, no session, or joined meanwhile: the
                        // one-update statement says which (and stores it
                        // when it now can).
                        None => {
                            store
                                .collab_append(&draft_id, &client_id, Some(&update))
                                .await
                        }
                    };
                    let _ = job.done.send(answer);
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    let _ = job.done.send(Err(e.clone()));
                }
            }
        }
    }
}
