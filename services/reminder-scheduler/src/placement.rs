//! Where a reminder lands in time: the call time plus the agreed period in
//! the client's own calendar ("in a month" is the same wall-clock time a
//! calendar month later, whatever DST did meanwhile), moved out of quiet
//! hours to the next opening of the send window, and spread over the first
//! part of that window so that a morning does not start with a spike.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use uuid::Uuid;

use kit::local_time::SendWindow;

/// Why a due time cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("`{0}` is not an ISO 8601 period like P1M, P14D or PT2H")]
    Period(String),
    #[error("the period {0} takes the time out of range")]
    OutOfRange(String),
}

/// An ISO 8601 period (`P1M`, `P2W`, `P14D`, `PT2H`) as a calendar span.
pub fn parse_period(text: &str) -> Result<Span, PlacementError> {
    let span: Span = text
        .trim()
        .parse()
        .map_err(|_| PlacementError::Period(text.to_owned()))?;
    if span.is_negative() || span.is_zero() {
        return Err(PlacementError::Period(text.to_owned()));
    }
    Ok(span)
}

/// The rules of one deployment.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub window: SendWindow,
    /// Most a reminder moved to the window's opening is spread after it.
    pub jitter: Duration,
}

impl Placement {
    /// The due time of a reminder `after` a moment `from`, for a client in
    /// `tz`. `seed` (the reminder's id) makes the jitter the same every time
    /// the reminder is placed, so a replay places it identically.
    pub fn due_at(
        &self,
        from: Timestamp,
        after: Span,
        tz: &TimeZone,
        seed: Uuid,
    ) -> Result<Timestamp, PlacementError> {
        let target = from
            .to_zoned_datetime(tz.clone())
            .checked_add(after)
            .map_err(|_| PlacementError::OutOfRange(after.to_string()))?
            .timestamp();
        Ok(self.place(target, tz, seed))
    }

    /// `at`, or when it falls in quiet hours, the next opening of the window
    /// plus the reminder's jitter (never past the window's close).
    pub fn place(&self, at: Timestamp, tz: &TimeZone, seed: Uuid) -> Timestamp {
        let open = self.window.next_open(at, tz);
        if open == at {
            return at;
        }
        let jitter_secs = self.jitter.as_secs();
        if jitter_secs == 0 {
            return open;
        }
        let offset = (seed.as_u128() % u128::from(jitter_secs)) as i64;
        let latest = self
            .window
            .closing(open, tz)
            .checked_sub(SignedDuration::from_mins(1))
            .unwrap_or(open);
        open.checked_add(SignedDuration::from_secs(offset))
            .map_or(open, |t| t.min(latest).max(open))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn placement(jitter_mins: u64) -> Placement {
        Placement {
            window: SendWindow::default(),
            jitter: Duration::from_secs(jitter_mins * 60),
        }
    }

    #[test]
    fn periods_are_iso_8601_and_positive() {
        assert!(parse_period("P1M").is_ok());
        assert!(parse_period("P14D").is_ok());
        assert!(parse_period("PT2H").is_ok());
        assert!(parse_period("P2W").is_ok());
        assert!(parse_period("-P1D").is_err());
        assert!(parse_period("PT0S").is_err());
        assert!(parse_period("a month").is_err());
    }

    #[test]
    fn a_month_after_an_afternoon_call_is_the_same_afternoon_a_month_later() {
        let moscow = TimeZone::get("Europe/Moscow").unwrap();
        let due = placement(30).due_at(
            at("2026-11-24T11:15:00Z"),
            parse_period("P1M").unwrap(),
            &moscow,
            Uuid::nil(),
        );
        assert_eq!(due, Ok(at("2026-12-24T11:15:00Z")));
    }

    #[test]
    fn a_late_evening_due_time_moves_to_the_next_morning_with_jitter_inside_the_window() {
        let moscow = TimeZone::get("Europe/Moscow").unwrap();
        // Call at 22:00 Moscow, "in two weeks" → 22:00 is quiet → next 09:00 + jitter.
        let seed = Uuid::from_u128(17 * 60 + 5); // 1025 s of jitter
        let due = placement(30)
            .due_at(
                at("2026-11-24T19:00:00Z"),
                parse_period("P14D").unwrap(),
                &moscow,
                seed,
            )
            .unwrap();
        assert_eq!(due, at("2026-12-09T06:17:05Z"));
        // No jitter: exactly the opening.
        let due = placement(0)
            .due_at(
                at("2026-11-24T19:00:00Z"),
                parse_period("P14D").unwrap(),
                &moscow,
                seed,
            )
            .unwrap();
        assert_eq!(due, at("2026-12-09T06:00:00Z"));
    }

    #[test]
    fn the_same_reminder_is_placed_identically_and_different_ones_spread() {
        let moscow = TimeZone::get("Europe/Moscow").unwrap();
        let night = at("2026-11-24T20:00:00Z");
        let p = placement(60);
        let a = Uuid::new_v4();
        assert_eq!(p.place(night, &moscow, a), p.place(night, &moscow, a));
        let spread: std::collections::HashSet<_> = (0..50)
            .map(|_| p.place(night, &moscow, Uuid::new_v4()))
            .collect();
        assert!(spread.len() > 40, "jitter spreads a morning");
        assert!(
            spread
                .iter()
                .all(|t| *t >= at("2026-11-25T06:00:00Z") && *t < at("2026-11-25T07:00:00Z"))
        );
    }

    #[test]
    fn a_month_across_a_dst_change_keeps_the_wall_clock_time() {
        let london = TimeZone::get("Europe/London").unwrap();
        // 2026-03-10 15:00 GMT; a month later is 2026-04-10 15:00 BST = 14:00 UTC.
        let due = placement(0).due_at(
            at("2026-03-10T15:00:00Z"),
            parse_period("P1M").unwrap(),
            &london,
            Uuid::nil(),
        );
        assert_eq!(due, Ok(at("2026-04-10T14:00:00Z")));
    }

    #[test]
    fn a_quiet_due_time_before_a_dst_change_opens_in_the_new_offset() {
        let new_york = TimeZone::get("America/New_York").unwrap();
        // Called Saturday 2026-02-07 22:30 EST; "in a month" → Saturday
        // 2026-03-07 22:30 EST, quiet → Sunday 2026-03-08 09:00, which is EDT.
        let due = placement(0).due_at(
            at("2026-02-08T03:30:00Z"),
            parse_period("P1M").unwrap(),
            &new_york,
            Uuid::nil(),
        );
        assert_eq!(due, Ok(at("2026-03-08T13:00:00Z")));
    }
}
