//! Progress of long copies: a bar with bytes/s on a terminal, a plain line
//! every 30 seconds otherwise (cron, kubectl logs).

use indicatif::{ProgressBar, ProgressStyle};
use pgark_engine::ProgressSink;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The right progress display for stderr.
pub fn for_stderr(command: &'static str) -> Arc<dyn ProgressSink> {
    if std::io::stderr().is_terminal() {
        Arc::new(Bar(ProgressBar::hidden()))
    } else {
        Arc::new(Lines {
            command,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            state: Mutex::new(None),
        })
    }
}

#[derive(Debug)]
struct Bar(ProgressBar);

impl ProgressSink for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.0.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template"),
        );
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

#[derive(Debug)]
struct Lines {
    command: &'static str,
    total: AtomicU64,
    done: AtomicU64,
    /// Start time and time of the last line.
    state: Mutex<Option<(Instant, Instant)>>,
}

impl Lines {
    const EVERY: Duration = Duration::from_secs(30);

    fn line(&self, started: Instant) {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed).max(1);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "pgark {}: copied {} of {} MiB ({:.0}%), {:.1} MiB/s",
            self.command,
            done >> 20,
            total >> 20,
            100.0 * done as f64 / total as f64,
            done as f64 / secs / f64::from(1 << 20)
        );
    }
}

impl ProgressSink for Lines {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        let now = Instant::now();
        *self.state.lock().expect("progress lock") = Some((now, now));
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        let mut state = self.state.lock().expect("progress lock");
        if let Some((started, last)) = state.as_mut() {
            if last.elapsed() >= Self::EVERY {
                *last = Instant::now();
                self.line(*started);
            }
        }
    }
    fn finish(&self) {}
}
