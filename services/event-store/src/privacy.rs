//! Personal data in an immutable log: the fields the `.proto` files mark as
//! personal are encrypted when an event is appended and decrypted when it is
//! read, with a data key of the contact the event is about (AES-256-GCM).
//! Forgetting a contact deletes their data keys; from then on those fields
//! read as `[forgotten]` (strings) or are absent (nested messages such as a
//! transcript's turns), for every reader, while the events stay in place.
//!
//! The work happens on the protobuf wire format, without decoding the
//! payload into a message: the top-level fields to protect (personal
//! strings, and nested messages that contain personal fields) are cut out
//! of the payload, encrypted together in one AES-GCM operation, and stored
//! as one extra bytes field (number [`SEALED_FIELD`]) that only this module
//! reads. Its header, in clear, names the key (`contact_ref`, `generation`)
//! and the numbers of the fields it holds, and is bound to the ciphertext
//! as associated data.
//!
//! The contact is the first non-empty field marked `contact` (by its
//! preference); an event with personal fields but no contact is sealed
//! with its stream's key, which forgetting a contact does not reach.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use kit::proto::prost_reflect::{Kind, MessageDescriptor, Value};

/// The field number of the sealed personal fields (the largest protobuf
/// allows, so it never meets a real field).
pub const SEALED_FIELD: u32 = 536_870_911;
/// What a personal string reads as once its contact is forgotten.
pub const FORGOTTEN: &str = kit::contacts::FORGOTTEN;
/// How long a key looked up for reading is trusted before being looked up
/// again, so that a contact forgotten through another replica reads as
/// forgotten here soon.
const KEY_TTL: Duration = Duration::from_secs(5);
/// Past this many cached keys, expired ones are dropped before adding one,
/// so the caches stay bounded by the contacts of the last [`KEY_TTL`].
const MAX_CACHED_KEYS: usize = 50_000;

/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("the payload is not valid protobuf: {0}")]
    Wire(&'static str),
    #[error("key store: {0}")]
    Keys(String),
}

/// How to protect one payload type.
#[derive(Debug, Clone, Default)]
struct Plan {
    /// Top-level fields cut out and sealed.
    sealed: HashSet<u32>,
    /// Of those, the strings (which read as [`FORGOTTEN`] when forgotten).
    strings: HashSet<u32>,
    /// Fields that may name the contact, most preferred first.
    contacts: Vec<u32>,
}

fn plans() -> HashMap<String, Plan> {
    let pool = kit::proto::descriptors();
    let personal = pool
        .get_extension_by_name("callflow.options.v1.personal")
        .expect("options.proto is compiled");
    let contact = pool
        .get_extension_by_name("callflow.options.v1.contact")
        .expect("options.proto is compiled");
    fn holds_personal(
        message: &MessageDescriptor,
        personal: &kit::proto::prost_reflect::ExtensionDescriptor,
        seen: &mut Vec<String>,
    ) -> bool {
        if seen.contains(&message.full_name().to_owned()) {
            return false;
        }
        seen.push(message.full_name().to_owned());
        message.fields().any(|f| {
            f.options().get_extension(personal).as_bool() == Some(true)
                || matches!(f.kind(), Kind::Message(m) if holds_personal(&m, personal, seen))
        })
    }
    let mut plans = HashMap::new();
    for message in pool
        .all_messages()
        .filter(|m| m.package_name() == "callflow.events.v1")
    {
        let mut plan = Plan::default();
        let mut contacts = Vec::new();
        for field in message.fields() {
            let options = field.options();
            let is_personal = options.get_extension(&personal).as_bool() == Some(true);
            let nested = matches!(field.kind(), Kind::Message(m) if holds_personal(&m, &personal, &mut Vec::new()));
            if is_personal || nested {
                plan.sealed.insert(field.number());
                if matches!(field.kind(), Kind::String) {
                    plan.strings.insert(field.number());
                }
            }
            if let Value::I32(priority) = options.get_extension(&contact).as_ref()
                && *priority > 0
            {
                contacts.push((*priority, field.number()));
            }
        }
        contacts.sort();
        plan.contacts = contacts.into_iter().map(|(_, number)| number).collect();
        if !plan.sealed.is_empty() {
            plans.insert(message.name().to_owned(), plan);
        }
    }
    plans
}

// ---------------------------------------------------------------------------
// The wire format.

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, PrivacyError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or(PrivacyError::Wire("truncated varint"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(PrivacyError::Wire("varint too long"))
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// One top-level field record: its number, the whole record's extent, and
/// for length-delimited fields the value's extent.
struct Record {
    number: u32,
    whole: std::ops::Range<usize>,
    value: Option<std::ops::Range<usize>>,
}

fn records(bytes: &[u8]) -> Result<Vec<Record>, PrivacyError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let tag = read_varint(bytes, &mut at)?;
        let number = (tag >> 3) as u32;
        let mut value = None;
        match tag & 7 {
            0 => {
                read_varint(bytes, &mut at)?;
            }
            1 => at += 8,
            2 => {
                let len = read_varint(bytes, &mut at)? as usize;
                value = Some(at..at + len);
                at += len;
            }
            5 => at += 4,
            _ => return Err(PrivacyError::Wire("groups are not supported")),
        }
        if at > bytes.len() || number == 0 {
            return Err(PrivacyError::Wire("field runs past the end"));
        }
        out.push(Record {
            number,
            whole: start..at,
            value,
        });
    }
    Ok(out)
}

fn push_bytes_field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    write_varint(out, (u64::from(number) << 3) | 2);
    write_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// The sealed field of a payload, parsed: version 1, the contact's
/// reference and key generation, the numbers of the fields it holds, then
/// nonce and ciphertext. `header` (everything before the nonce) is the AEAD's
/// associated data.
struct Sealed<'a> {
    contact_ref: &'a [u8],
    generation: i64,
    numbers: Vec<u32>,
    header: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> Sealed<'a> {
    /// The sealed field of `payload` and its records, or `None` when it has
    /// no sealed field.
    fn find(payload: &'a [u8]) -> Result<Option<(Self, Vec<Record>)>, PrivacyError> {
        let records = records(payload)?;
        let Some(sealed) = records.iter().find(|r| r.number == SEALED_FIELD) else {
            return Ok(None);
        };
        let value = &payload[sealed
            .value
            .clone()
            .ok_or(PrivacyError::Wire("sealed field is not bytes"))?];
        let sealed = Self::parse(value).ok_or(PrivacyError::Wire("sealed field is malformed"))?;
        Ok(Some((sealed, records)))
    }

    fn parse(value: &'a [u8]) -> Option<Self> {
        if value.first() != Some(&1) {
            return None;
        }
        let ref_len = *value.get(1)? as usize;
        let mut at = 2;
        let contact_ref = value.get(at..at + ref_len)?;
        at += ref_len;
        let generation = i64::from_le_bytes(value.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        let count = u16::from_le_bytes(value.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2;
        let mut numbers = Vec::with_capacity(count);
        for _ in 0..count {
            numbers.push(u32::from_le_bytes(value.get(at..at + 4)?.try_into().ok()?));
            at += 4;
        }
        Some(Self {
            contact_ref,
            generation,
            numbers,
            header: &value[..at],
            nonce: value.get(at..at + 12)?,
            ciphertext: &value[at + 12..],
        })
    }
}

// ---------------------------------------------------------------------------
// Keys.

type Cipher = Arc<Aes256Gcm>;

/// A contact's key as this process knows it.
#[derive(Clone)]
struct Known {
    cipher: Option<Cipher>,
    fetched: Instant,
}

/// Drops expired keys once a cache has grown past [`MAX_CACHED_KEYS`].
fn drop_expired<K, V>(cache: &mut HashMap<K, V>, fetched: impl Fn(&V) -> Instant) {
    if cache.len() >= MAX_CACHED_KEYS {
        cache.retain(|_, v| fetched(v).elapsed() < KEY_TTL);
    }
}

fn cipher(key: &[u8; 32]) -> Cipher {
    Arc::new(Aes256Gcm::new_from_slice(key).expect("32-byte key"))
}

/// The keys of the log and the plans of every payload type.
pub struct Privacy {
    plans: HashMap<String, Plan>,
    wrap: Aes256Gcm,
    index_key: [u8; 32],
    pool: deadpool_postgres::Pool,
    /// The key each contact's new events are sealed with, and when it was
    /// looked up (re-checked after [`KEY_TTL`], so that a contact forgotten
    /// through another replica gets a new key here too).
    sealing: Mutex<HashMap<Vec<u8>, (i64, Cipher, Instant)>>,
    /// Keys looked up for opening, by (contact_ref, generation).
    opening: Mutex<HashMap<(Vec<u8>, i64), Known>>,
}

fn derive(master: &[u8; 32], purpose: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Parses the master key: 64 hex digits.
pub fn parse_master_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim())
        .map_err(|_| "EVENT_STORE_MASTER_KEY must be 64 hex digits".to_owned())?;
    bytes
        .try_into()
        .map_err(|_| "EVENT_STORE_MASTER_KEY must be 32 bytes (64 hex digits)".to_owned())
}

impl Privacy {
    pub fn new(master: &[u8; 32], pool: deadpool_postgres::Pool) -> Self {
        Self {
            plans: plans(),
            wrap: Aes256Gcm::new_from_slice(&derive(master, "callflow.privacy.wrap"))
                .expect("32-byte key"),
            index_key: derive(master, "callflow.privacy.index"),
            pool,
            sealing: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
        }
    }

    /// Whether events of `event_type` carry personal fields.
    pub fn protects(&self, event_type: &str) -> bool {
        self.plans.contains_key(event_type)
    }

    /// The reference of a contact (or of `stream:<name>` for events without
    /// one) in the key tables: an HMAC, never the number.
    pub fn contact_ref(&self, contact: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.index_key)
            .expect("HMAC takes any key length");
        mac.update(contact.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    async fn sealing_key(&self, contact_ref: &[u8]) -> Result<(i64, Cipher), PrivacyError> {
        if let Some((generation, cipher, fetched)) =
            self.sealing.lock().expect("key cache").get(contact_ref)
            && fetched.elapsed() < KEY_TTL
        {
            return Ok((*generation, cipher.clone()));
        }
        let keys = |e: &dyn std::fmt::Display| PrivacyError::Keys(e.to_string());
        let client = self.pool.get().await.map_err(|e| keys(&e))?;
        let latest = client
            .prepare_cached(
                "SELECT generation, wrapped_key FROM eventlog.contact_keys WHERE contact_ref = $1 ORDER BY created_at DESC LIMIT 1",
            )
            .await
            .map_err(|e| keys(&e))?;
        let row = client
            .query_opt(&latest, &[&contact_ref])
            .await
            .map_err(|e| keys(&e))?;
        let (generation, key) = match row {
            Some(row) => (
                row.get::<_, i64>(0),
                self.unwrap_key(contact_ref, row.get::<_, i64>(0), row.get(1))?,
            ),
            None => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let generation = (rand::rng().next_u64() >> 1) as i64;
                let wrapped = self.wrap_key(contact_ref, generation, &key);
                let insert = client
                    .prepare_cached(
                        "INSERT INTO eventlog.contact_keys (contact_ref, generation, wrapped_key) VALUES ($1, $2, $3)",
                    )
                    .await
                    .map_err(|e| keys(&e))?;
                client
                    .execute(&insert, &[&contact_ref, &generation, &wrapped])
                    .await
                    .map_err(|e| keys(&e))?;
                (generation, key)
            }
        };
        let cipher = cipher(&key);
        let fetched = Instant::now();
        {
            let mut sealing = self.sealing.lock().expect("key cache");
            drop_expired(&mut sealing, |(_, _, at)| *at);
            sealing.insert(contact_ref.to_vec(), (generation, cipher.clone(), fetched));
        }
        // Readers in this process (the relay first of all) will open what
        // was just sealed: spare them the lookup.
        self.remember_opening(
            [((contact_ref.to_vec(), generation), Some(cipher.clone()))],
            fetched,
        );
        Ok((generation, cipher))
    }

    /// The key of `(contact_ref, generation)` this process looked up less
    /// than [`KEY_TTL`] ago: `Some(None)` when it is known to be gone.
    fn cached_opening(&self, pair: &(Vec<u8>, i64)) -> Option<Option<Cipher>> {
        self.opening
            .lock()
            .expect("key cache")
            .get(pair)
            .filter(|known| known.fetched.elapsed() < KEY_TTL)
            .map(|known| known.cipher.clone())
    }

    fn remember_opening(
        &self,
        keys: impl IntoIterator<Item = ((Vec<u8>, i64), Option<Cipher>)>,
        fetched: Instant,
    ) {
        let mut known = self.opening.lock().expect("key cache");
        drop_expired(&mut known, |k| k.fetched);
        for (pair, cipher) in keys {
            known.insert(pair, Known { cipher, fetched });
        }
    }

    async fn opening_key(
        &self,
        contact_ref: &[u8],
        generation: i64,
    ) -> Result<Option<Cipher>, PrivacyError> {
        let pair = (contact_ref.to_vec(), generation);
        if let Some(known) = self.cached_opening(&pair) {
            return Ok(known);
        }
        self.fetch_opening_keys(HashSet::from([pair.clone()]))
            .await?;
        Ok(self.cached_opening(&pair).flatten())
    }

    /// Looks up, in one query, the keys of `wanted` this process does not
    /// know (or knows for longer than [`KEY_TTL`]), and remembers them;
    /// a pair with no key row is remembered as forgotten.
    async fn fetch_opening_keys(
        &self,
        wanted: HashSet<(Vec<u8>, i64)>,
    ) -> Result<(), PrivacyError> {
        let missing: Vec<(Vec<u8>, i64)> = wanted
            .into_iter()
            .filter(|pair| self.cached_opening(pair).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let keys = |e: &dyn std::fmt::Display| PrivacyError::Keys(e.to_string());
        let refs: Vec<&[u8]> = missing.iter().map(|(r, _)| r.as_slice()).collect();
        let generations: Vec<i64> = missing.iter().map(|(_, g)| *g).collect();
        let client = self.pool.get().await.map_err(|e| keys(&e))?;
        let statement = client
            .prepare_cached(
                "SELECT k.contact_ref, k.generation, k.wrapped_key
                 FROM unnest($1::bytea[], $2::int8[]) AS w(contact_ref, generation)
                 JOIN eventlog.contact_keys k USING (contact_ref, generation)",
            )
            .await
            .map_err(|e| keys(&e))?;
        let rows = client
            .query(&statement, &[&refs, &generations])
            .await
            .map_err(|e| keys(&e))?;
        drop(client);
        let mut found: HashMap<(Vec<u8>, i64), Cipher> = HashMap::with_capacity(rows.len());
        for row in rows {
            let (contact_ref, generation): (Vec<u8>, i64) = (row.get(0), row.get(1));
            let key = self.unwrap_key(&contact_ref, generation, row.get(2))?;
            found.insert((contact_ref, generation), cipher(&key));
        }
        self.remember_opening(
            missing.into_iter().map(|pair| {
                let cipher = found.remove(&pair);
                (pair, cipher)
            }),
            Instant::now(),
        );
        Ok(())
    }

    fn wrap_key(&self, contact_ref: &[u8], generation: i64, key: &[u8; 32]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let aad = [contact_ref, &generation.to_le_bytes()].concat();
        let mut out = nonce.to_vec();
        out.extend(
            self.wrap
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: key,
                        aad: &aad,
                    },
                )
                .expect("wrapping"),
        );
        out
    }

    fn unwrap_key(
        &self,
        contact_ref: &[u8],
        generation: i64,
        wrapped: Vec<u8>,
    ) -> Result<[u8; 32], PrivacyError> {
        if wrapped.len() < 12 {
            return Err(PrivacyError::Keys("a wrapped key is too short".into()));
        }
        let aad = [contact_ref, &generation.to_le_bytes()].concat();
        let key = self
            .wrap
            .decrypt(
                Nonce::from_slice(&wrapped[..12]),
                Payload {
                    msg: &wrapped[12..],
                    aad: &aad,
                },
            )
            .map_err(|_| {
                PrivacyError::Keys(
                    "a data key does not unwrap: wrong EVENT_STORE_MASTER_KEY?".into(),
                )
            })?;
        key.try_into()
            .map_err(|_| PrivacyError::Keys("a data key is not 32 bytes".into()))
    }

    /// The payload to store for an event: its personal fields sealed.
    /// Payloads of types without personal fields, and empty ones, are
    /// returned unchanged.
    pub async fn seal(
        &self,
        event_type: &str,
        stream: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, PrivacyError> {
        let Some(plan) = self.plans.get(event_type) else {
            return Ok(payload);
        };
        let records = records(&payload)?;
        if records.iter().any(|r| r.number == SEALED_FIELD) {
            return Err(PrivacyError::Wire("the payload already has a sealed field"));
        }
        let contact = plan
            .contacts
            .iter()
            .find_map(|number| {
                records
                    .iter()
                    .find(|r| r.number == *number)
                    .and_then(|r| r.value.clone())
                    .and_then(|v| std::str::from_utf8(&payload[v]).ok())
                    .filter(|v| !v.is_empty())
            })
            .map_or_else(
                || format!("stream:{stream}"),
                |phone| format!("contact:{phone}"),
            );
        let mut kept = Vec::with_capacity(payload.len() + 96);
        let mut secret = Vec::new();
        let mut numbers: Vec<u32> = Vec::new();
        for record in &records {
            if plan.sealed.contains(&record.number) {
                secret.extend_from_slice(&payload[record.whole.clone()]);
                if !numbers.contains(&record.number) {
                    numbers.push(record.number);
                }
            } else {
                kept.extend_from_slice(&payload[record.whole.clone()]);
            }
        }
        if secret.is_empty() {
            return Ok(payload);
        }
        let contact_ref = self.contact_ref(&contact);
        let (generation, cipher) = self.sealing_key(&contact_ref).await?;
        let mut header = vec![1u8, contact_ref.len() as u8];
        header.extend_from_slice(&contact_ref);
        header.extend_from_slice(&generation.to_le_bytes());
        header.extend_from_slice(&(numbers.len() as u16).to_le_bytes());
        for number in &numbers {
            header.extend_from_slice(&number.to_le_bytes());
        }
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &secret,
                    aad: &header,
                },
            )
            .map_err(|_| PrivacyError::Keys("encryption failed".into()))?;
        let mut sealed = header;
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        push_bytes_field(&mut kept, SEALED_FIELD, &sealed);
        Ok(kept)
    }

    /// Opens the payloads of `events` in place (see [`Privacy::open`]). A
    /// payload that cannot be opened is left sealed, and logged.
    ///
    /// The keys the page needs are fetched in one query first: a page of
    /// new contacts would otherwise cost one round trip per event.
    pub async fn open_all(
        &self,
        events: &mut [kit::proto::events::v1::Event],
    ) -> Result<(), PrivacyError> {
        let wanted: HashSet<(Vec<u8>, i64)> = events
            .iter()
            .filter_map(|event| match Sealed::find(&event.payload) {
                Ok(Some((sealed, _))) => Some((sealed.contact_ref.to_vec(), sealed.generation)),
                _ => None,
            })
            .collect();
        self.fetch_opening_keys(wanted).await?;
        for event in events {
            match self.open(&event.r#type, &event.payload).await {
                Ok(Some(opened)) => event.payload = opened,
                Ok(None) => {}
                Err(PrivacyError::Wire(why)) => {
                    tracing::warn!(event_id = %event.event_id, why, "payload left as stored")
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// The payload as readers see it: sealed fields restored, or redacted
    /// when the key is gone; `None` when it has no sealed field (it reads as
    /// stored).
    pub async fn open(
        &self,
        event_type: &str,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, PrivacyError> {
        let Some((sealed, records)) = Sealed::find(payload)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(payload.len());
        for record in &records {
            if record.number != SEALED_FIELD {
                out.extend_from_slice(&payload[record.whole.clone()]);
            }
        }
        let opened = match self
            .opening_key(sealed.contact_ref, sealed.generation)
            .await?
        {
            Some(cipher) => cipher
                .decrypt(
                    Nonce::from_slice(sealed.nonce),
                    Payload {
                        msg: sealed.ciphertext,
                        aad: sealed.header,
                    },
                )
                .ok(),
            None => None,
        };
        match opened {
            Some(secret) => out.extend_from_slice(&secret),
            None => {
                let plan = self.plans.get(event_type);
                for number in sealed.numbers {
                    if plan.is_some_and(|p| p.strings.contains(&number)) {
                        push_bytes_field(&mut out, number, FORGOTTEN.as_bytes());
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// Destroys every key of `contact` (E.164) and remembers it was
    /// forgotten. Returns the contact's reference and the number of keys
    /// destroyed.
    pub async fn forget(
        &self,
        contact: &str,
        requested_by: &str,
    ) -> Result<(Vec<u8>, u32), PrivacyError> {
        let contact_ref = self.contact_ref(&format!("contact:{contact}"));
        let keys = |e: &dyn std::fmt::Display| PrivacyError::Keys(e.to_string());
        let mut client = self.pool.get().await.map_err(|e| keys(&e))?;
        let tx = client.transaction().await.map_err(|e| keys(&e))?;
        let destroyed = tx
            .execute(
                "DELETE FROM eventlog.contact_keys WHERE contact_ref = $1",
                &[&contact_ref],
            )
            .await
            .map_err(|e| keys(&e))?;
        tx.execute(
            "INSERT INTO eventlog.forgotten_contacts (contact_ref, requested_by) VALUES ($1, $2)
             ON CONFLICT (contact_ref) DO UPDATE SET forgotten_at = now(), requested_by = excluded.requested_by",
            &[&contact_ref, &requested_by],
        )
        .await
        .map_err(|e| keys(&e))?;
        tx.commit().await.map_err(|e| keys(&e))?;
        // Deleted rows linger on disk until vacuumed; the wrapped keys in them
        // must not.
        let _ = client.batch_execute("VACUUM eventlog.contact_keys").await;
        self.sealing.lock().expect("key cache").remove(&contact_ref);
        self.opening
            .lock()
            .expect("key cache")
            .retain(|(r, _), _| *r != contact_ref);
        Ok((contact_ref, destroyed as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plans_follow_the_proto_options() {
        let plans = plans();
        let call = &plans["CallCompleted"];
        assert!(
            call.sealed.contains(&4) && call.sealed.contains(&5) && call.sealed.contains(&10),
            "from, to, client_phone"
        );
        assert!(!call.sealed.contains(&2), "call_id is not personal");
        assert_eq!(call.contacts, vec![10, 4], "client_phone first, then from");
        let transcript = &plans["TranscriptReady"];
        assert!(
            transcript.sealed.contains(&3),
            "the turns hold personal text"
        );
        assert!(
            !transcript.strings.contains(&3),
            "turns are messages, not strings"
        );
        assert!(!plans.contains_key("ReminderCancelled"));
    }

    #[test]
    fn varints_and_records_round_trip() {
        let mut bytes = Vec::new();
        push_bytes_field(&mut bytes, 3, b"abc");
        push_bytes_field(&mut bytes, SEALED_FIELD, &[7; 300]);
        let records = records(&bytes).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].number, SEALED_FIELD);
        assert_eq!(&bytes[records[0].value.clone().unwrap()], b"abc");
        assert!(super::records(&[0x0a, 0x05, 1]).is_err(), "truncated");
    }
}
