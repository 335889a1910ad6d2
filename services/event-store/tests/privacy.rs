//! Personal data in the immutable log: encrypted at rest, readable through
//! the API, and gone for good once the contact is forgotten — while the
//! events, their order and their other fields stay.

use kit::events::{decode, new_event};
use kit::proto::events::v1::{
    CallCompleted, ContactProfileUpdated, Event, TranscriptReady, TranscriptTurn,
};
use kit::proto::eventstore::v1::{ForgetContactRequest, ReadAllRequest};
use kit::store_client::Expected;

use event_store::testing::TestStore;

const PHONE: &str = "+79161234567";
const OTHER: &str = "+79167654321";

async fn everything(store: &TestStore) -> Vec<Event> {
    let mut stream = store
        .client
        .grpc()
        .read_all(ReadAllRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        events.extend(page.events);
    }
    events
}

/// Every byte of the events table as it is on disk (after a checkpoint).
async fn raw_table(store: &TestStore) -> Vec<u8> {
    let client = store.db.connect().await;
    client.batch_execute("CHECKPOINT").await.unwrap();
    let path: String = client
        .query_one("SELECT pg_relation_filepath('eventlog.events')", &[])
        .await
        .unwrap()
        .get(0);
    let mut bytes: Vec<u8> = client
        .query_one("SELECT pg_read_binary_file($1)", &[&path])
        .await
        .unwrap()
        .get(0);
    // And the table's TOAST, where large payloads go.
    let toast: Option<String> = client
        .query_one(
            "SELECT pg_relation_filepath(reltoastrelid) FROM pg_class WHERE oid = 'eventlog.events'::regclass AND reltoastrelid <> 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if let Some(toast) = toast {
        let more: Vec<u8> = client
            .query_one("SELECT pg_read_binary_file($1)", &[&toast])
            .await
            .unwrap()
            .get(0);
        bytes.extend(more);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_forgotten_contact_leaves_nothing_readable_and_the_log_still_replays() {
    let store = TestStore::start(false).await;
    let call = CallCompleted {
        provider: "exolve".into(),
        call_id: "4412".into(),
        from: PHONE.into(),
        to: "+74951234567".into(),
        client_phone: PHONE.into(),
        ..Default::default()
    };
    let transcript = TranscriptReady {
        provider: "exolve".into(),
        call_id: "4412".into(),
        client_phone: PHONE.into(),
        turns: vec![TranscriptTurn {
            text: "Меня зовут Анна Петровна Соколова".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let profile = ContactProfileUpdated {
        phone: PHONE.into(),
        name: "Анна Петровна Соколова".into(),
        time_zone: "Europe/Moscow".into(),
    };
    let other = CallCompleted {
        call_id: "4413".into(),
        client_phone: OTHER.into(),
        from: OTHER.into(),
        ..Default::default()
    };
    for (stream, event) in [
        (
            "call-exolve-4412",
            new_event(uuid::Uuid::new_v4(), None, &call),
        ),
        (
            "call-exolve-4412",
            new_event(uuid::Uuid::new_v4(), None, &transcript),
        ),
        (
            "contact-x1",
            new_event(uuid::Uuid::new_v4(), None, &profile),
        ),
        (
            "call-exolve-4413",
            new_event(uuid::Uuid::new_v4(), None, &other),
        ),
    ] {
        store
            .client
            .append(stream, Expected::Any, vec![event])
            .await
            .unwrap();
    }

    // Readers see the data; the disk never holds it in clear.
    let before = everything(&store).await;
    assert_eq!(
        decode::<CallCompleted>(&before[0]).unwrap().client_phone,
        PHONE
    );
    assert_eq!(
        decode::<TranscriptReady>(&before[1]).unwrap().turns[0].text,
        transcript.turns[0].text
    );
    let disk = raw_table(&store).await;
    for secret in ["9161234567", "Соколова", "Анна"] {
        assert!(!contains(&disk, secret), "`{secret}` is readable on disk");
    }

    let forgotten = store
        .client
        .grpc()
        .forget_contact(ForgetContactRequest {
            phone: "8 916 123-45-67".into(),
            requested_by: "dpo@shop".into(),
            reason: "request 2026-117".into(),
            contact_stream: "contact-x1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(forgotten.keys_destroyed >= 1);

    // The log replays: same events, same order; the contact's personal
    // fields read as forgotten, the rest is intact.
    let after = everything(&store).await;
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only ContactForgotten was added"
    );
    assert_eq!(after.last().unwrap().r#type, "ContactForgotten");
    let call_after: CallCompleted = decode(&after[0]).unwrap();
    assert_eq!(call_after.client_phone, "[forgotten]");
    assert_eq!(call_after.from, "[forgotten]");
    assert_eq!(call_after.call_id, "4412");
    assert_eq!(call_after.provider, "exolve");
    let transcript_after: TranscriptReady = decode(&after[1]).unwrap();
    assert!(
        transcript_after.turns.is_empty(),
        "what the client said is gone"
    );
    assert_eq!(
        decode::<ContactProfileUpdated>(&after[2]).unwrap().name,
        "[forgotten]"
    );
    assert_eq!(
        decode::<CallCompleted>(&after[3]).unwrap().client_phone,
        OTHER,
        "other contacts are untouched"
    );
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (a.position, &a.event_id, &a.stream),
            (b.position, &b.event_id, &b.stream)
        );
    }

    // Nothing readable anywhere: not in the table, and no key to decrypt it.
    let disk = raw_table(&store).await;
    for secret in ["9161234567", "Соколова"] {
        assert!(!contains(&disk, secret), "`{secret}` is readable on disk");
    }
    let client = store.db.connect().await;
    let keys: i64 = client
        .query_one(
            "SELECT count(*) FROM eventlog.contact_keys WHERE encode(contact_ref, 'hex') = $1",
            &[&forgotten.contact_ref],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 0);

    // New events about the same number are readable again (a new key).
    let again = CallCompleted {
        call_id: "5000".into(),
        client_phone: PHONE.into(),
        ..Default::default()
    };
    store
        .client
        .append(
            "call-exolve-5000",
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &again)],
        )
        .await
        .unwrap();
    let latest = everything(&store).await;
    assert_eq!(
        decode::<CallCompleted>(latest.last().unwrap())
            .unwrap()
            .client_phone,
        PHONE
    );
    assert_eq!(
        decode::<CallCompleted>(&latest[0]).unwrap().client_phone,
        "[forgotten]",
        "old ones stay forgotten"
    );

    let bad = store
        .client
        .grpc()
        .forget_contact(ForgetContactRequest {
            phone: "nope".into(),
            requested_by: "x".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// A reader that has never seen the keys (another replica, or one started
/// after the appends) opens a whole page of different contacts at once —
/// fetching their keys in one go — and still redacts the forgotten one.
#[tokio::test]
async fn a_fresh_reader_opens_a_page_of_many_contacts_and_redacts_the_forgotten() {
    let store = TestStore::start(false).await;
    let phones: Vec<String> = (0..30).map(|n| format!("+7916555{n:04}")).collect();
    for (n, phone) in phones.iter().enumerate() {
        let call = CallCompleted {
            call_id: format!("page-{n}"),
            client_phone: phone.clone(),
            from: phone.clone(),
            ..Default::default()
        };
        store
            .client
            .append(
                &format!("call-page-{n}"),
                Expected::Any,
                vec![new_event(uuid::Uuid::new_v4(), None, &call)],
            )
            .await
            .unwrap();
    }
    store
        .client
        .grpc()
        .forget_contact(ForgetContactRequest {
            phone: phones[7].clone(),
            requested_by: "dpo@shop".into(),
            reason: "request 2026-118".into(),
            contact_stream: String::new(),
        })
        .await
        .unwrap();

    let reader = event_store::testing::reader(&store.db.url);
    let head = reader.head().await.unwrap();
    let page = reader
        .page(0, head, &event_store::read::Criteria::default(), 100)
        .await
        .unwrap();
    let calls: Vec<CallCompleted> = page
        .events
        .iter()
        .filter(|e| e.r#type == "CallCompleted")
        .map(|e| decode(e).unwrap())
        .collect();
    assert_eq!(calls.len(), phones.len());
    for (n, call) in calls.iter().enumerate() {
        let expected = if n == 7 {
            event_store::privacy::FORGOTTEN
        } else {
            phones[n].as_str()
        };
        assert_eq!(call.client_phone, expected, "call {n}");
        assert_eq!(call.from, expected, "call {n}");
    }
}
