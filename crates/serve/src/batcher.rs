//! Micro-batching: requests scored at the same time are merged into one batch so that load
//! rides on the batched kernels. One scoring thread takes the queue; it scores at once when
//! no other request is on its way, and otherwise waits (at most `max_wait`) for the requests
//! still being decoded, up to `max_rows` rows. Jobs are only merged when they were encoded
//! for the same model, so a reload never mixes two models in one batch.

use crate::engine::{batch_of, ServedModel};
use crate::error::ServeError;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Clone, Debug)]
pub struct BatcherConfig {
    /// Rows at which a batch is closed (a single larger request is still scored whole).
    pub max_rows: usize,
    /// Longest a request waits for others to join its batch.
    pub max_wait: Duration,
    /// Requests that may wait in the queue before new ones are refused (503).
    pub queue: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_rows: 4096,
            max_wait: Duration::from_micros(1000),
            queue: 1024,
        }
    }
}

struct Job {
    model: Arc<ServedModel>,
    rows: usize,
    slots: Vec<u32>,
    reply: oneshot::Sender<Vec<f32>>,
}

pub struct Batcher {
    tx: SyncSender<Job>,
    /// Requests holding a ticket: lets the thread tell whether waiting could gather anything.
    pending: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
}

impl Batcher {
    pub fn start(cfg: BatcherConfig, metrics: Metrics) -> Result<Self, ServeError> {
        let (tx, rx) = sync_channel::<Job>(cfg.queue.max(1));
        let pending = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let (p, a) = (pending.clone(), alive.clone());
        std::thread::Builder::new()
            .name("recforge-scorer".into())
            .spawn(move || {
                run(rx, cfg, &p, &metrics);
                a.store(false, Ordering::SeqCst);
            })
            .map_err(|e| ServeError::Internal(format!("cannot start scoring thread: {e}")))?;
        Ok(Batcher { tx, pending, alive })
    }

    /// Marks a request as on its way to the scorer, from before its body is decoded until
    /// it is answered (when the ticket drops).
    pub fn begin(&self) -> Ticket {
        self.pending.fetch_add(1, Ordering::SeqCst);
        Ticket(self.pending.clone())
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Scores `rows` encoded rows with `model`; resolves when their batch is done.
    pub async fn score(
        &self,
        model: Arc<ServedModel>,
        rows: usize,
        slots: Vec<u32>,
    ) -> Result<Vec<f32>, ServeError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            model,
            rows,
            slots,
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ServeError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                return Err(ServeError::Internal("scoring thread has stopped".into()))
            }
        }
        rx.await
            .map_err(|_| ServeError::Internal("scoring failed for this batch".into()))
    }
}

pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn run(rx: Receiver<Job>, cfg: BatcherConfig, pending: &AtomicUsize, metrics: &Metrics) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // every sender dropped: the server is shutting down
            },
        };
        let deadline = Instant::now() + cfg.max_wait;
        let mut rows = first.rows;
        let mut jobs = vec![first];
        while rows < cfg.max_rows {
            let next = match rx.try_recv() {
                Ok(j) => j,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // wait only if some submitted request is not in this batch yet
                    let now = Instant::now();
                    if pending.load(Ordering::SeqCst) <= jobs.len() || now >= deadline {
                        break;
                    }
                    match rx.recv_timeout((deadline - now).min(Duration::from_micros(100))) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if !Arc::ptr_eq(&next.model, &jobs[0].model) || rows + next.rows > cfg.max_rows {
                carried = Some(next);
                break;
            }
            rows += next.rows;
            jobs.push(next);
        }
        score_batch(jobs, rows, metrics);
    }
}

fn score_batch(jobs: Vec<Job>, rows: usize, metrics: &Metrics) {
    let model = jobs[0].model.clone();
    // only CTR models are queued (the engine checks before it submits)
    let Ok(ctr) = model.ctr() else {
        tracing::error!("a top-K model reached the CTR batcher; batch dropped");
        return;
    };
    let width = ctr.meta.feature_map.width;
    let mut slots = Vec::with_capacity(rows * width);
    for j in &jobs {
        slots.extend_from_slice(&j.slots);
    }
    metrics.observe_batch(rows, jobs.len());
    // A panic must not take the scoring thread down with it: the requests of this batch get
    // an internal error (their reply senders are dropped) and the next batch is scored.
    let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctr.model.predict(&batch_of(width, rows, slots))
    }));
    let Ok(scores) = scored else {
        tracing::error!(
            rows,
            "scoring panicked; batch answered with an internal error"
        );
        return;
    };
    let mut at = 0;
    for j in jobs {
        let _ = j.reply.send(scores[at..at + j.rows].to_vec());
        at += j.rows;
    }
}
