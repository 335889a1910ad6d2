//! The local time of the people callflow contacts: their time zone, and the
//! window of their day in which they may be contacted (outside it are quiet
//! hours: no SMS, no call, no retry).
//!
//! DST is handled by working in civil (wall-clock) time and converting with
//! RFC 5545's "compatible" rule: a local time that does not exist (the hour
//! skipped in spring) moves forward by the length of the gap, a local time
//! that exists twice (the hour repeated in autumn) takes the earlier one.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;

use crate::phone::PhoneNumber;

/// The daily window in which a contact may be reached, `[start, end)` in the
/// contact's local time, for example 09:00–21:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    start: Time,
    end: Time,
}

impl SendWindow {
    pub fn new(start: Time, end: Time) -> Result<Self, String> {
        if start >= end {
            return Err(format!(
                "the window must open before it closes ({start} is not before {end})"
            ));
        }
        Ok(Self { start, end })
    }

    /// Whether `at` falls inside the window in `tz`.
    pub fn contains(&self, at: Timestamp, tz: &TimeZone) -> bool {
        let time = tz.to_datetime(at).time();
        self.start <= time && time < self.end
    }

    /// The first moment at or after `at` inside the window, in `tz`: `at`
    /// itself when the window is open, else the next opening.
    pub fn next_open(&self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        if self.contains(at, tz) {
            return at;
        }
        let local = tz.to_datetime(at);
        let day = if local.time() < self.start {
            local.date()
        } else {
            local.date().tomorrow().unwrap_or(local.date())
        };
        tz.to_ambiguous_timestamp(day.to_datetime(self.start))
            .compatible()
            .unwrap_or(at)
    }

    /// When the window that contains `at` closes.
    pub fn closing(&self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        let local = tz.to_datetime(at);
        tz.to_ambiguous_timestamp(local.date().to_datetime(self.end))
            .compatible()
            .unwrap_or(at)
    }
}

impl Default for SendWindow {
    fn default() -> Self {
        Self {
            start: Time::constant(9, 0, 0, 0),
            end: Time::constant(21, 0, 0, 0),
        }
    }
}

impl FromStr for SendWindow {
    type Err = String;

    /// `HH:MM-HH:MM`, for example `09:00-21:00`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (start, end) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not a window like 09:00-21:00"))?;
        let time = |t: &str| {
            let t = t.trim();
            let full = if t.len() == 5 {
                format!("{t}:00")
            } else {
                t.to_owned()
            };
            full.parse::<Time>()
                .map_err(|_| format!("`{t}` is not a time like 09:00"))
        };
        Self::new(time(start)?, time(end)?)
    }
}

impl fmt::Display for SendWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M")
        )
    }
}

/// A time zone for a country, when the country has one zone or one where
/// most of its people live. Multi-zone countries get their most populous
/// zone: a better answer needs the contact's own time zone.
pub fn zone_for_region(region: &str) -> Option<&'static str> {
    let zone = match region {
        "RU" => "Europe/Moscow",
        "KZ" => "Asia/Almaty",
        "BY" => "Europe/Minsk",
        "UA" => "Europe/Kyiv",
        "UZ" => "Asia/Tashkent",
        "KG" => "Asia/Bishkek",
        "TJ" => "Asia/Dushanbe",
        "TM" => "Asia/Ashgabat",
        "AM" => "Asia/Yerevan",
        "AZ" => "Asia/Baku",
        "GE" => "Asia/Tbilisi",
        "MD" => "Europe/Chisinau",
        "LV" => "Europe/Riga",
        "LT" => "Europe/Vilnius",
        "EE" => "Europe/Tallinn",
        "FI" => "Europe/Helsinki",
        "PL" => "Europe/Warsaw",
        "DE" => "Europe/Berlin",
        "FR" => "Europe/Paris",
        "IT" => "Europe/Rome",
        "ES" => "Europe/Madrid",
        "NL" => "Europe/Amsterdam",
        "GB" => "Europe/London",
        "IE" => "Europe/Dublin",
        "TR" => "Europe/Istanbul",
        "IL" => "Asia/Jerusalem",
        "AE" => "Asia/Dubai",
        "IN" => "Asia/Kolkata",
        "CN" => "Asia/Shanghai",
        "JP" => "Asia/Tokyo",
        "US" => "America/New_York",
        "CA" => "America/Toronto",
        "BR" => "America/Sao_Paulo",
        "MX" => "America/Mexico_City",
        "AU" => "Australia/Sydney",
        _ => return None,
    };
    Some(zone)
}

/// The time zone of a phone number's country, when [`zone_for_region`]
/// knows one.
pub fn zone_for_phone(phone: &PhoneNumber) -> Option<TimeZone> {
    let region = phone.region()?;
    TimeZone::get(zone_for_region(region.as_ref())?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn windows_parse_and_refuse_nonsense() {
        let window: SendWindow = "09:00-21:00".parse().unwrap();
        assert_eq!(window, SendWindow::default());
        assert_eq!(window.to_string(), "09:00-21:00");
        assert!("21:00-09:00".parse::<SendWindow>().is_err());
        assert!("9-21".parse::<SendWindow>().is_err());
    }

    #[test]
    fn inside_the_window_nothing_moves() {
        let moscow = TimeZone::get("Europe/Moscow").unwrap();
        let noon = at("2026-11-24T09:00:00Z"); // 12:00 in Moscow
        assert_eq!(SendWindow::default().next_open(noon, &moscow), noon);
    }

    #[test]
    fn late_evening_moves_to_the_next_morning_and_early_morning_to_the_same_one() {
        let moscow = TimeZone::get("Europe/Moscow").unwrap();
        let window = SendWindow::default();
        // 22:30 Moscow → 09:00 Moscow next day.
        assert_eq!(
            window.next_open(at("2026-11-24T19:30:00Z"), &moscow),
            at("2026-11-25T06:00:00Z")
        );
        // 05:00 Moscow → 09:00 Moscow the same day.
        assert_eq!(
            window.next_open(at("2026-11-24T02:00:00Z"), &moscow),
            at("2026-11-24T06:00:00Z")
        );
        // 21:00 sharp is already quiet.
        assert_eq!(
            window.next_open(at("2026-11-24T18:00:00Z"), &moscow),
            at("2026-11-25T06:00:00Z")
        );
    }

    #[test]
    fn the_next_morning_is_found_across_a_dst_change() {
        let new_york = TimeZone::get("America/New_York").unwrap();
        let window = SendWindow::default();
        // Saturday 2026-03-07 22:00 EST (UTC-5); clocks go forward on Sunday
        // 2026-03-08 at 02:00: Sunday 09:00 is EDT (UTC-4).
        assert_eq!(
            window.next_open(at("2026-03-08T03:00:00Z"), &new_york),
            at("2026-03-08T13:00:00Z")
        );
        // Saturday 2026-10-31 23:00 EDT; clocks go back on Sunday 2026-11-01:
        // Sunday 09:00 is EST (UTC-5).
        assert_eq!(
            window.next_open(at("2026-11-01T03:00:00Z"), &new_york),
            at("2026-11-01T14:00:00Z")
        );
    }

    #[test]
    fn a_window_opening_in_a_skipped_hour_opens_when_the_clock_resumes() {
        let new_york = TimeZone::get("America/New_York").unwrap();
        let window: SendWindow = "02:30-21:00".parse().unwrap();
        // 02:30 does not exist on 2026-03-08; it becomes 03:30 EDT.
        assert_eq!(
            window.next_open(at("2026-03-08T06:00:00Z"), &new_york),
            at("2026-03-08T07:30:00Z")
        );
    }

    #[test]
    fn one_instant_is_working_hours_at_one_end_of_russia_and_night_at_the_other() {
        let kaliningrad = TimeZone::get("Europe/Kaliningrad").unwrap(); // UTC+2
        let vladivostok = TimeZone::get("Asia/Vladivostok").unwrap(); // UTC+10
        let window = SendWindow::default();
        // 12:00 UTC: 14:00 in Kaliningrad, 22:00 in Vladivostok.
        let noon_utc = at("2026-11-24T12:00:00Z");
        assert!(window.contains(noon_utc, &kaliningrad));
        assert_eq!(window.next_open(noon_utc, &kaliningrad), noon_utc);
        assert_eq!(
            window.closing(noon_utc, &kaliningrad),
            at("2026-11-24T19:00:00Z")
        );
        assert!(!window.contains(noon_utc, &vladivostok));
        // Vladivostok's next 09:00 is 23:00 UTC the same day.
        assert_eq!(
            window.next_open(noon_utc, &vladivostok),
            at("2026-11-24T23:00:00Z")
        );
        // 05:00 UTC: 15:00 in Vladivostok, 07:00 in Kaliningrad.
        let early = at("2026-11-24T05:00:00Z");
        assert!(window.contains(early, &vladivostok));
        assert_eq!(
            window.next_open(early, &kaliningrad),
            at("2026-11-24T07:00:00Z")
        );
    }

    #[test]
    fn countries_map_to_zones() {
        assert_eq!(zone_for_region("RU"), Some("Europe/Moscow"));
        assert_eq!(zone_for_region("ZZ"), None);
        let phone = PhoneNumber::parse("+77012345678", Default::default()).unwrap();
        assert_eq!(
            zone_for_phone(&phone).unwrap().iana_name(),
            Some("Asia/Almaty")
        );
    }
}
