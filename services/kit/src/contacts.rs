//! What the log knows about a client: their stream holds profile updates
//! (`ContactProfileUpdated`) and opt-outs (`ContactOptedOut`). Senders read
//! it at the moment they act, so an opt-out recorded a second ago is
//! already honoured.
//!
//! The stream is named `contact-<id>` where the id is an HMAC of the number
//! under the deployment's contact salt (`CALLFLOW_CONTACT_SALT`), not the
//! number itself: stream names are not encrypted, and a forgotten contact's
//! number must not stay readable in the log.

use jiff::tz::TimeZone;

use crate::events::decode;
use crate::local_time::zone_for_phone;
use crate::phone::PhoneNumber;
use crate::proto::events::v1::{ContactOptedOut, ContactProfileUpdated};
use crate::proto::eventstore::v1::ReadStreamRequest;
use crate::store_client::EventStoreClient;

/// What personal data reads as once its contact is forgotten (the event
/// store's redaction, and projections blanking their copies).
pub const FORGOTTEN: &str = "[forgotten]";

/// The category of the streams where `ContactForgotten` is recorded
/// (`forgotten-<contact ref>`), which projections holding personal data read.
pub const FORGOTTEN_CATEGORY: &str = "forgotten";

/// The contact streams of one deployment, and reads of them.
#[derive(Clone)]
pub struct Contacts {
    store: EventStoreClient,
    salt: String,
}

impl Contacts {
    pub fn new(store: EventStoreClient, salt: &str) -> Self {
        Self {
            store,
            salt: salt.to_owned(),
        }
    }

    /// The stream of a client.
    pub fn stream(&self, phone: &PhoneNumber) -> String {
        contact_stream(&self.salt, phone)
    }

    /// Reads the client's stream.
    pub async fn load(&self, phone: &PhoneNumber) -> Result<Contact, tonic::Status> {
        load(&self.store, &self.stream(phone)).await
    }
}

/// The stream of a client under `salt`: `contact-` and 32 hex digits of
/// HMAC-SHA256(salt, E.164 number).
pub fn contact_stream(salt: &str, phone: &PhoneNumber) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(salt.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(phone.as_str().as_bytes());
    format!(
        "contact-{}",
        &hex::encode(mac.finalize().into_bytes())[..32]
    )
}

/// A client, as the log describes them now.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    /// From the latest profile update that named a valid zone.
    pub time_zone: Option<TimeZone>,
    /// From the latest profile update that named one.
    pub name: Option<String>,
    /// The client asked not to be contacted again.
    pub opted_out: bool,
}

impl Contact {
    /// The zone to place contacts with this client in: their own, else
    /// their number's country's, else `default`.
    pub fn zone(&self, phone: &PhoneNumber, default: &TimeZone) -> TimeZone {
        self.time_zone
            .clone()
            .or_else(|| zone_for_phone(phone))
            .unwrap_or_else(|| default.clone())
    }
}

async fn load(store: &EventStoreClient, stream: &str) -> Result<Contact, tonic::Status> {
    let events = store
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: stream.to_owned(),
            from_version: 1,
            max_count: 0,
        })
        .await?
        .into_inner()
        .events;
    let mut contact = Contact::default();
    for event in &events {
        if let Ok(profile) = decode::<ContactProfileUpdated>(event) {
            if let Ok(zone) = TimeZone::get(&profile.time_zone) {
                contact.time_zone = Some(zone);
            }
            if !profile.name.trim().is_empty() {
                contact.name = Some(profile.name.trim().to_owned());
            }
        } else if decode::<ContactOptedOut>(event).is_ok() {
            contact.opted_out = true;
        }
    }
    Ok(contact)
}
