//! Schema evolution through the replay path: events appended in a type's
//! first shape are read back in its second once an upcaster is registered,
//! while the log itself keeps what was written.

use prost::Message;
use uuid::Uuid;

use callflow::events::{FilterArgs, RangeArgs, for_each_upcast};
use event_store::testing::TestStore;
use kit::proto::eventstore::v1::{NewEvent, ReadStreamRequest};
use kit::store_client::Expected;
use kit::upcast::Upcasters;

/// The first shape of a note.
#[derive(Clone, PartialEq, Message)]
struct NoteV1 {
    #[prost(string, tag = "1")]
    text: String,
}

/// The second: the language is now explicit, and the text became `body`
/// (same field number, so only the meaning is new).
#[derive(Clone, PartialEq, Message)]
struct NoteV2 {
    #[prost(string, tag = "1")]
    body: String,
    #[prost(string, tag = "2")]
    language: String,
}

/// NoteV1 → NoteV2: notes written before languages were recorded are Russian.
fn note_v1_to_v2(mut event: kit::proto::events::v1::Event) -> kit::proto::events::v1::Event {
    let old = NoteV1::decode(event.payload.as_slice()).expect("a NoteV1 payload");
    event.r#type = "NoteV2".into();
    event.payload = NoteV2 {
        body: old.text,
        language: "ru".into(),
    }
    .encode_to_vec();
    event
}

fn new_event(r#type: &str, payload: Vec<u8>) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4().to_string(),
        r#type: r#type.into(),
        payload,
        ..Default::default()
    }
}

async fn replay(store: &TestStore, upcasters: &Upcasters) -> Vec<kit::proto::events::v1::Event> {
    let filter = FilterArgs {
        stream_prefixes: vec!["note-".into()],
        ..Default::default()
    };
    let mut events = Vec::new();
    for_each_upcast(
        &store.client,
        upcasters,
        &filter,
        &RangeArgs::default(),
        |event| {
            events.push(event);
            Ok(())
        },
    )
    .await
    .unwrap();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_replay_as_v2_once_the_upcaster_is_registered() {
    let store = TestStore::start(false).await;
    let v1: Vec<NewEvent> = ["первая", "вторая", "третья"]
        .iter()
        .map(|text| {
            new_event(
                "NoteV1",
                NoteV1 {
                    text: (*text).into(),
                }
                .encode_to_vec(),
            )
        })
        .collect();
    store
        .client
        .append("note-1", Expected::NoStream, v1.clone())
        .await
        .unwrap();

    // Before v2 exists, replay shows what was written.
    let before = replay(&store, &Upcasters::new()).await;
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|e| e.r#type == "NoteV1"));

    // v2 arrives: producers write it, and the upcaster reads old events in it.
    let mut upcasters = Upcasters::new();
    upcasters.register("NoteV1", note_v1_to_v2);
    let v2 = NoteV2 {
        body: "четвёртая".into(),
        language: "en".into(),
    };
    store
        .client
        .append(
            "note-1",
            Expected::Exact(3),
            vec![new_event("NoteV2", v2.encode_to_vec())],
        )
        .await
        .unwrap();
    let after = replay(&store, &upcasters).await;
    assert_eq!(after.len(), 4);
    let notes: Vec<(String, String)> = after
        .iter()
        .map(|e| {
            assert_eq!(e.r#type, "NoteV2");
            let note = NoteV2::decode(e.payload.as_slice()).unwrap();
            (note.body, note.language)
        })
        .collect();
    assert_eq!(
        notes,
        [
            ("первая".into(), "ru".into()),
            ("вторая".into(), "ru".into()),
            ("третья".into(), "ru".into()),
            ("четвёртая".into(), "en".into()),
        ]
    );
    // The envelope is untouched: same ids, positions and versions.
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(
            (&old.event_id, old.position, old.version),
            (&new.event_id, new.position, new.version)
        );
    }
    assert_eq!(
        after
            .iter()
            .map(|e| e.event_id.clone())
            .take(3)
            .collect::<Vec<_>>(),
        v1.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>()
    );

    // The log itself still holds the first shape.
    let raw = store
        .client
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: "note-1".into(),
            from_version: 1,
            max_count: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let types: Vec<&str> = raw.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["NoteV1", "NoteV1", "NoteV1", "NoteV2"]);
}
