//! Whose turn it is to run a request with `--threads 1`: the IO thread (inline) or the
//! Python thread (handed-off work). One request at a time, whichever runs it.
//!
//! A quick bodiless request that finds the Python thread busy is not queued behind
//! it: it is *held* on the IO side, and the Python thread, when it finishes a job and
//! sees held requests, gives the IO thread a turn before it takes its next job. Queued
//! work and held requests thus alternate, and a worker under load does not slide into
//! handing every request off just because one was (the queue would never drain).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Turns {
    /// Work sent to the Python thread and not finished yet. Only the IO thread adds
    /// to it, so when it reads 0 the Python thread runs nothing.
    pending: AtomicUsize,
    /// Requests waiting on the IO side for their turn.
    held: AtomicUsize,
    /// The IO thread's turn: the Python thread waits before its next job.
    io_turn: AtomicBool,
    /// Wakes held requests (when the Python thread is idle or gives a turn).
    io_wake: Notify,
    /// The Python thread sleeps here while the IO thread has its turn.
    python_lock: Mutex<()>,
    python_wake: Condvar,
}

impl Turns {
    /// Whether the IO thread may run a request now.
    pub fn io_may_run(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0 || self.io_turn.load(Ordering::Acquire)
    }

    /// Counts work sent to the Python thread.
    pub fn sent(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// Uncounts work that could not be sent.
    pub fn unsent(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Registers a held request; wait with [`Held::ready`], run, then drop it.
    pub fn hold(&self) -> Held<'_> {
        self.held.fetch_add(1, Ordering::AcqRel);
        Held(self)
    }

    /// Python thread, before a job: waits while the IO thread has its turn.
    pub fn python_wait(&self) {
        if !self.io_turn.load(Ordering::Acquire) {
            return;
        }
        let mut guard = self.python_lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.io_turn.load(Ordering::Acquire) {
            guard = self
                .python_wake
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Python thread, after a job: gives the IO thread a turn if requests are held.
    pub fn python_done(&self) {
        let left = self.pending.fetch_sub(1, Ordering::AcqRel) - 1;
        let give = self.held.load(Ordering::Acquire) > 0;
        if give {
            self.io_turn.store(true, Ordering::Release);
        }
        if give || left == 0 {
            self.io_wake.notify_waiters();
        }
    }

    fn end_io_turn(&self) {
        if self.io_turn.swap(false, Ordering::AcqRel) {
            // Taking the lock orders this with the Python thread's check-then-wait.
            drop(self.python_lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.python_wake.notify_all();
        }
    }
}

/// A request held on the IO side. Dropping the last one ends the IO thread's turn.
pub struct Held<'a>(&'a Turns);

impl Held<'_> {
    /// Returns once the IO thread may run the request.
    pub async fn ready(&self) {
        loop {
            let notified = self.0.io_wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.io_may_run() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.0.held.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.end_io_turn();
        }
    }
}
