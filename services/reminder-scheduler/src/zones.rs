//! Whose clock a reminder follows: the time zone the request names, else the
//! contact's own (their profile in the log), else the one of the phone
//! number's country, else the deployment's default.

use jiff::tz::TimeZone;

use kit::contacts::Contacts;
use kit::phone::PhoneNumber;

/// The time zone to place a reminder for `phone` in.
pub async fn resolve(
    contacts: &Contacts,
    phone: &PhoneNumber,
    requested: Option<&str>,
    default: &TimeZone,
) -> Result<TimeZone, tonic::Status> {
    if let Some(name) = requested.filter(|n| !n.is_empty()) {
        return TimeZone::get(name).map_err(|_| {
            tonic::Status::invalid_argument(format!("time_zone: `{name}` is not an IANA time zone"))
        });
    }
    Ok(contacts.load(phone).await?.zone(phone, default))
}
