//! The blocking workers of a restore, and how they are stopped.
//!
//! Each part is extracted on a thread of the blocking pool, which dropping
//! the restore's future does not stop: without more, a restore cancelled
//! midway (restore-test on SIGINT or SIGTERM) would go on writing files
//! while its caller removes them. So every worker is counted from before
//! it is spawned until it has returned (or was dropped unrun), and checks a
//! shared stop flag before each file and each chunk it writes. A [`StopGuard`]
//! held by the restore sets the flag when the restore's future is dropped
//! and waits, for a bounded time, until no worker runs: once it returns,
//! nothing writes into the destination any more.

use crate::EngineError;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a cancelled restore waits for its workers: each stops before
/// its next chunk (at most a few hundred KiB), so this is only reached by
/// a write stuck in the kernel.
pub(super) const STOP_WAIT: Duration = Duration::from_secs(5);

/// The workers of one restore (cheap to clone: a shared handle).
#[derive(Debug, Clone, Default)]
pub(super) struct Workers(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    stop: AtomicBool,
    running: Mutex<usize>,
    idle: Condvar,
}

/// One worker counted as running until this is dropped.
pub(super) struct Enlisted(Workers);

impl Drop for Enlisted {
    fn drop(&mut self) {
        let mut running = self.0 .0.running.lock().unwrap_or_else(|e| e.into_inner());
        *running = running.saturating_sub(1);
        if *running == 0 {
            self.0 .0.idle.notify_all();
        }
    }
}

impl Workers {
    /// Counts one more worker, from now (before it is spawned) until the
    /// returned token is dropped.
    pub(super) fn enlist(&self) -> Enlisted {
        *self.0.running.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Enlisted(self.clone())
    }

    /// Tells every worker to stop before its next file or chunk.
    pub(super) fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }

    /// `Err` once the restore was told to stop: what a worker returns then
    /// (never seen by anyone: its caller has gone).
    pub(super) fn check(&self) -> Result<(), EngineError> {
        if self.0.stop.load(Ordering::SeqCst) {
            return Err(EngineError::Internal("the restore was stopped".into()));
        }
        Ok(())
    }

    /// Waits until no worker runs, at most `limit`; the number still
    /// running then (0: all stopped).
    pub(super) fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            running = self
                .0
                .idle
                .wait_timeout(running, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *running
    }

    /// A reader that fails once the restore was told to stop: each chunk
    /// a worker reads (and then writes) passes through it.
    pub(super) fn reader<R: Read>(&self, inner: R) -> Stoppable<R> {
        Stoppable {
            inner,
            workers: self.clone(),
        }
    }
}

pub(super) struct Stoppable<R> {
    inner: R,
    workers: Workers,
}

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.workers.0.stop.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the restore was stopped"));
        }
        self.inner.read(buf)
    }
}

/// Held by a restore for as long as it runs. Dropped with the restore's
/// future (it is interrupted), or when the restore returns: stops the
/// workers and waits for them (see the module docs), so that the caller
/// may remove what they wrote. Declared before the futures that hold the
/// download streams, it is dropped after them: the workers then see their
/// streams end too, never a wait on a chunk that cannot come.
pub(super) struct StopGuard(pub(super) Workers);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stop();
        let left = self.0.wait_idle(STOP_WAIT);
        if left > 0 {
            tracing::warn!(
                "{left} restore worker(s) still writing {} s after the restore was stopped",
                STOP_WAIT.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_restore_waits_for_its_workers() {
        let workers = Workers::default();
        assert_eq!(workers.wait_idle(Duration::ZERO), 0);
        let token = workers.enlist();
        let w = workers.clone();
        let worker = std::thread::spawn(move || {
            let _token = token;
            let mut source = w.reader(std::io::repeat(7));
            let mut buf = [0u8; 16];
            while source.read(&mut buf).is_ok() {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(w.check().is_err());
        });
        assert_eq!(workers.wait_idle(Duration::from_millis(50)), 1);
        let started = Instant::now();
        drop(StopGuard(workers.clone()));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(workers.wait_idle(Duration::ZERO), 0);
        worker.join().unwrap();
    }
}
