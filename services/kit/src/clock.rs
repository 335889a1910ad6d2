//! Time as a dependency: services ask the [`Clock`] they were given, never a
//! global, so tests and the demo can move time forward.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// A clock shared between tasks.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct TestClock {
    now: Mutex<Timestamp>,
}

impl TestClock {
    pub fn new(start: Timestamp) -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(start),
        })
    }

    pub fn set(&self, to: Timestamp) {
        *self.now.lock().expect("clock lock") = to;
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().expect("clock lock");
        *now = now.saturating_add(by).expect("clock stays in range");
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock")
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_moves_only_when_told() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = TestClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(SignedDuration::from_hours(2));
        assert_eq!(clock.now(), "2026-01-01T02:00:00Z".parse().unwrap());
    }
}
