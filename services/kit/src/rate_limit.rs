//! A token bucket for the rate limits of external services (a Telegram
//! chat's 20 messages a minute, a Bitrix24 portal's 2 requests a second
//! with bursts of 50). Real time, not the service clock: providers count
//! real seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `per_second` tokens a second, at most `burst` saved up.
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket. `per_second` must be positive; `burst` is at least 1.
    pub fn new(per_second: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is free.
    pub fn take(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("token bucket lock");
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }

    /// Takes a token, waiting for it up to `max_wait`; else says how long
    /// the wait would be.
    pub async fn acquire(&self, max_wait: Duration) -> Result<(), Duration> {
        let started = Instant::now();
        loop {
            match self.take() {
                Ok(()) => return Ok(()),
                Err(wait) if started.elapsed() + wait <= max_wait => tokio::time::sleep(wait).await,
                Err(wait) => return Err(wait),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let bucket = TokenBucket::new(2.0, 3.0);
        for _ in 0..3 {
            assert!(bucket.take().is_ok());
        }
        let wait = bucket.take().unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(wait > Duration::from_millis(400), "{wait:?}");
    }
}
