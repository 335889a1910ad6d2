//! `callflow events`: export to JSON Lines and CSV with payloads decoded,
//! resuming an interrupted export, filters, and the chain check.

use callflow::events::{EventsArgs, EventsCommand, FilterArgs, Format, RangeArgs};
use event_store::testing::TestStore;
use kit::events::new_event;
use kit::proto::events::v1::{CallCompleted, ConsentAnalyzed, ConsentDecision};
use kit::store_client::Expected;

fn args(store: &TestStore, command: EventsCommand) -> EventsArgs {
    let mut common = store.common.clone();
    common.event_store_url = store.url();
    EventsArgs { common, command }
}

async fn seed(store: &TestStore) -> Vec<u64> {
    let mut positions = Vec::new();
    for n in 0..30 {
        let call = CallCompleted {
            call_id: format!("{n}"),
            client_phone: "+79161234567".into(),
            manager_id: "m, \"17\"".into(),
            ..Default::default()
        };
        let consent = ConsentAnalyzed {
            call_id: format!("{n}"),
            decision: ConsentDecision::Agreed as i32,
            remind_after: "P1M".into(),
            ..Default::default()
        };
        let appended = store
            .client
            .append(
                &format!("call-exolve-{n}"),
                Expected::Any,
                vec![
                    new_event(uuid::Uuid::new_v4(), None, &call),
                    new_event(uuid::Uuid::new_v4(), None, &consent),
                ],
            )
            .await
            .unwrap();
        positions.extend(appended.positions);
    }
    positions
}

#[tokio::test]
async fn exports_decode_payloads_and_resume_where_they_stopped() {
    let store = TestStore::start(false).await;
    let positions = seed(&store).await;
    let dir = std::env::temp_dir().join(format!("cf-export-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();

    let full = dir.join("full.jsonl");
    let export = |output: std::path::PathBuf,
                  format: Format,
                  range: RangeArgs,
                  filter: FilterArgs,
                  append: bool| {
        callflow::events::run(args(
            &store,
            EventsCommand::Export {
                filter,
                range,
                output,
                format,
                append,
            },
        ))
    };
    export(
        full.clone(),
        Format::Jsonl,
        RangeArgs::default(),
        FilterArgs::default(),
        false,
    )
    .await
    .unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&full)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 60);
    assert_eq!(lines[0]["type"], "CallCompleted");
    assert_eq!(lines[0]["payload"]["call_id"], "0");
    assert_eq!(lines[1]["payload"]["decision"], "CONSENT_DECISION_AGREED");
    assert_eq!(lines[1]["payload"]["remind_after"], "P1M");

    // Stopped half-way at position p, resumed with --after-position p --append:
    // the same file as in one go.
    let parts = dir.join("parts.jsonl");
    let cut = positions[29];
    export(
        parts.clone(),
        Format::Jsonl,
        RangeArgs {
            to_position: cut,
            ..Default::default()
        },
        FilterArgs::default(),
        false,
    )
    .await
    .unwrap();
    export(
        parts.clone(),
        Format::Jsonl,
        RangeArgs {
            after_position: cut,
            ..Default::default()
        },
        FilterArgs::default(),
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&parts).unwrap(),
        std::fs::read_to_string(&full).unwrap()
    );

    // CSV: a header, one row per event, quoted where needed, payload as JSON.
    let csv = dir.join("consents.csv");
    let only_consents = FilterArgs {
        types: vec!["ConsentAnalyzed".into()],
        ..Default::default()
    };
    export(
        csv.clone(),
        Format::Csv,
        RangeArgs::default(),
        only_consents,
        false,
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 31);
    assert_eq!(rows[0], callflow::events::CSV_HEADER);
    assert!(
        rows[1].contains("ConsentAnalyzed") && rows[1].contains("\"{\"\"analyzer_version\"\""),
        "{}",
        rows[1]
    );

    let calls = dir.join("calls.csv");
    let only_calls = FilterArgs {
        types: vec!["CallCompleted".into()],
        ..Default::default()
    };
    export(
        calls.clone(),
        Format::Csv,
        RangeArgs::default(),
        only_calls,
        false,
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&calls).unwrap();
    // JSON `"manager_id":"m, \"17\""` with every quote doubled for CSV.
    assert!(
        text.contains(r#"""manager_id"":""m, \""17\"""""#),
        "{text:.400}"
    );

    callflow::events::run(args(
        &store,
        EventsCommand::Verify {
            after_position: 0,
            to_position: 0,
        },
    ))
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
