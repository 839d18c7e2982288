//! Re-running a whole operation after a transient failure.

use crate::EngineError;
use std::future::Future;
use std::time::Duration;

/// How often and how patiently to re-run an operation whose failure was
/// transient (timeouts, throttling, connection resets). Other failures are
/// returned at once.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, including the first (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            ..Default::default()
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, EngineError>>,
    {
        let mut backoff = self.initial_backoff;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.attempts.max(1) => {
                    // Full jitter keeps many clients from retrying in step.
                    let sleep = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                    tracing::warn!("{what}: attempt {attempt} failed ({e}); retrying in {sleep:?}");
                    tokio::time::sleep(sleep).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
