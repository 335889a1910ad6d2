//! The log's contract through the gRPC API: append, versions, idempotency,
//! validation, reads, and the database's refusal to change history.

use event_store::testing::{TestStore as Store, call_event};
use kit::proto::eventstore::v1::{Filter, ReadAllRequest, ReadStreamRequest, SubscribeRequest};
use kit::store_client::{AppendError, Expected};

#[tokio::test]
async fn append_then_read_back_in_order() {
    let store = Store::start(false).await;
    let first = store
        .client
        .append(
            "call-exolve-1",
            Expected::NoStream,
            vec![call_event("1"), call_event("1")],
        )
        .await
        .unwrap();
    assert_eq!(first.stream_version, 2);
    assert_eq!(first.positions.len(), 2);
    assert!(first.positions[0] < first.positions[1]);
    let second = store
        .client
        .append("call-exolve-1", Expected::Exact(2), vec![call_event("1")])
        .await
        .unwrap();
    assert_eq!(second.stream_version, 3);

    let read = store
        .client
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: "call-exolve-1".into(),
            from_version: 2,
            max_count: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.stream_version, 3);
    let versions: Vec<u64> = read.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [2, 3]);
    let event = &read.events[1];
    assert_eq!(event.category, "call");
    assert_eq!(event.r#type, "CallCompleted");
    assert_eq!(event.producer, "test");
    assert_eq!(
        event.correlation_id, event.event_id,
        "a new flow correlates to itself"
    );
    assert!(event.recorded_at.is_some() && event.occurred_at.is_some());

    // The stream's version comes with every read: a page shorter than the
    // stream, a read past its end, and a stream that does not exist.
    let read = |stream: &str, from_version, max_count| {
        let mut grpc = store.client.grpc();
        let request = ReadStreamRequest {
            stream: stream.into(),
            from_version,
            max_count,
        };
        async move { grpc.read_stream(request).await.unwrap().into_inner() }
    };
    let page = read("call-exolve-1", 1, 1).await;
    assert_eq!((page.events.len(), page.stream_version), (1, 3));
    let past_end = read("call-exolve-1", 9, 0).await;
    assert_eq!((past_end.events.len(), past_end.stream_version), (0, 3));
    let empty = read("call-exolve-none", 1, 0).await;
    assert_eq!((empty.events.len(), empty.stream_version), (0, 0));
}

#[tokio::test]
async fn expected_version_is_checked_and_a_conflict_writes_nothing() {
    let store = Store::start(false).await;
    store
        .client
        .append("order-7", Expected::NoStream, vec![call_event("7")])
        .await
        .unwrap();

    let conflict = store
        .client
        .append("order-7", Expected::NoStream, vec![call_event("7")])
        .await;
    assert!(
        matches!(
            conflict,
            Err(AppendError::WrongExpectedVersion { current: 1, .. })
        ),
        "{conflict:?}"
    );
    let stale = store
        .client
        .append("order-7", Expected::Exact(0), vec![call_event("7")])
        .await;
    assert!(
        matches!(
            stale,
            Err(AppendError::WrongExpectedVersion { current: 1, .. })
        ),
        "{stale:?}"
    );
    let ahead = store
        .client
        .append("order-7", Expected::Exact(5), vec![call_event("7")])
        .await;
    assert!(
        matches!(
            ahead,
            Err(AppendError::WrongExpectedVersion { current: 1, .. })
        ),
        "{ahead:?}"
    );
    assert_eq!(store.count_rows().await, 1);

    store
        .client
        .append("order-7", Expected::Exact(1), vec![call_event("7")])
        .await
        .unwrap();
    store
        .client
        .append("order-7", Expected::Any, vec![call_event("7")])
        .await
        .unwrap();
    assert_eq!(store.count_rows().await, 3);
}

#[tokio::test]
async fn appending_the_same_events_again_returns_their_first_positions_and_writes_nothing() {
    let store = Store::start(false).await;
    let batch = vec![call_event("9"), call_event("9")];
    let first = store
        .client
        .append("call-exolve-9", Expected::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(!first.duplicate);
    store
        .client
        .append("call-exolve-9", Expected::Any, vec![call_event("9")])
        .await
        .unwrap();

    // Same events again, even with an expected version that no longer holds.
    let again = store
        .client
        .append("call-exolve-9", Expected::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.positions, first.positions);
    assert_eq!(
        again.stream_version, 2,
        "the version of the batch's last event"
    );
    assert_eq!(store.count_rows().await, 3);

    // Mixing known and new events, or reusing an id in another stream, is an error.
    let mixed = store
        .client
        .append(
            "call-exolve-9",
            Expected::Any,
            vec![batch[0].clone(), call_event("9")],
        )
        .await;
    assert!(matches!(mixed, Err(AppendError::Invalid(_))), "{mixed:?}");
    let elsewhere = store
        .client
        .append("call-exolve-10", Expected::Any, vec![batch[0].clone()])
        .await;
    assert!(
        matches!(elsewhere, Err(AppendError::Invalid(ref m)) if m.contains("call-exolve-9")),
        "{elsewhere:?}"
    );
    assert_eq!(store.count_rows().await, 3);
}

#[tokio::test]
async fn concurrent_duplicates_in_one_group_are_written_once() {
    let store = Store::start(false).await;
    let event = call_event("11");
    let attempts = (0..20).map(|_| {
        store
            .client
            .append("call-exolve-11", Expected::Any, vec![event.clone()])
    });
    let results = futures::future::join_all(attempts).await;
    let positions: Vec<u64> = results
        .into_iter()
        .map(|r| r.unwrap().positions[0])
        .collect();
    assert!(positions.windows(2).all(|w| w[0] == w[1]), "{positions:?}");
    assert_eq!(store.count_rows().await, 1);
}

#[tokio::test]
async fn malformed_appends_are_refused_with_a_reason_and_write_nothing() {
    let store = Store::start(false).await;
    let mut bad_id = call_event("1");
    bad_id.event_id = "not-a-uuid".into();
    let mut bad_type = call_event("1");
    bad_type.r#type = "call completed".into();
    let mut bad_correlation = call_event("1");
    bad_correlation.correlation_id = "x".into();
    let twice = call_event("1");
    let mut huge = call_event("1");
    huge.payload = vec![0; 600 * 1024];
    let cases = vec![
        ("Call-1", vec![call_event("1")], "stream"),
        ("call", vec![call_event("1")], "stream"),
        ("call-1", vec![], "at least one"),
        ("call-1", vec![bad_id], "events[0].event_id"),
        ("call-1", vec![bad_type], "events[0].type"),
        ("call-1", vec![bad_correlation], "events[0].correlation_id"),
        ("call-1", vec![twice.clone(), twice], "twice"),
        ("call-1", vec![huge], "events[0].payload"),
        (
            "call-1",
            (0..1001).map(|_| call_event("1")).collect(),
            "at most 1000",
        ),
    ];
    for (stream, events, needle) in cases {
        let result = store.client.append(stream, Expected::Any, events).await;
        match result {
            Err(AppendError::Invalid(message)) => assert!(
                message.contains(needle),
                "`{message}` should mention {needle}"
            ),
            other => panic!("{stream}/{needle}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(store.count_rows().await, 0);
}

#[tokio::test]
async fn the_database_refuses_to_change_history() {
    let store = Store::start(false).await;
    store
        .client
        .append("call-exolve-5", Expected::Any, vec![call_event("5")])
        .await
        .unwrap();
    let owner = store.db.connect().await;
    for statement in [
        "UPDATE eventlog.events SET type = 'Forged'",
        "DELETE FROM eventlog.events",
        "TRUNCATE eventlog.events",
        "UPDATE eventlog.events SET type = 'Forged' WHERE false",
    ] {
        let error = owner.batch_execute(statement).await.expect_err(statement);
        assert!(
            error.to_string().contains("append-only")
                || format!("{error:?}").contains("append-only"),
            "{statement}: {error:?}"
        );
    }
    // Replica mode skips ordinary triggers; these fire ALWAYS.
    let error = owner
        .batch_execute("SET session_replication_role = replica; DELETE FROM eventlog.events")
        .await
        .expect_err("delete in replica mode");
    assert!(format!("{error:?}").contains("append-only"), "{error:?}");
    owner
        .batch_execute("RESET session_replication_role")
        .await
        .unwrap();

    // The writer role has no UPDATE/DELETE/TRUNCATE privilege at all.
    owner
        .batch_execute("SET ROLE callflow_eventlog_writer")
        .await
        .unwrap();
    for statement in [
        "UPDATE eventlog.events SET type = 'Forged'",
        "DELETE FROM eventlog.events",
        "TRUNCATE eventlog.events",
    ] {
        let error = owner.batch_execute(statement).await.expect_err(statement);
        assert!(
            format!("{error:?}").contains("permission denied"),
            "{statement}: {error:?}"
        );
    }
    owner.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(store.count_rows().await, 1);
}

#[tokio::test]
async fn read_all_filters_and_reports_checkpoints() {
    let store = Store::start(false).await;
    let mut sms = call_event("x");
    sms.r#type = "SmsSent".into();
    store
        .client
        .append("call-exolve-1", Expected::Any, vec![call_event("1")])
        .await
        .unwrap();
    store
        .client
        .append("sms-1", Expected::Any, vec![sms])
        .await
        .unwrap();
    let last = store
        .client
        .append("call-voximplant-2", Expected::Any, vec![call_event("2")])
        .await
        .unwrap();

    let read = |filter: Filter, after: u64| {
        let mut grpc = store.client.grpc();
        async move {
            let mut stream = grpc
                .read_all(ReadAllRequest {
                    after_position: after,
                    to_position: 0,
                    filter: Some(filter),
                    batch_size: 1,
                })
                .await
                .unwrap()
                .into_inner();
            let mut events = Vec::new();
            let mut checkpoint = 0;
            while let Some(response) = stream.message().await.unwrap() {
                checkpoint = response.checkpoint;
                events.extend(response.events.into_iter().map(|e| e.stream));
            }
            (events, checkpoint)
        }
    };
    let head = last.positions[0];
    assert_eq!(
        read(Filter::default(), 0).await,
        (
            vec![
                "call-exolve-1".into(),
                "sms-1".into(),
                "call-voximplant-2".into()
            ],
            head
        )
    );
    let calls = Filter {
        categories: vec!["call".into()],
        ..Default::default()
    };
    assert_eq!(
        read(calls, 0).await.0,
        ["call-exolve-1", "call-voximplant-2"]
    );
    let sms_type = Filter {
        types: vec!["SmsSent".into()],
        ..Default::default()
    };
    assert_eq!(read(sms_type, 0).await.0, ["sms-1"]);
    let prefix = Filter {
        stream_prefixes: vec!["call-vox".into()],
        ..Default::default()
    };
    assert_eq!(read(prefix, 0).await.0, ["call-voximplant-2"]);
    let future = Filter {
        recorded_from: Some(kit::events::to_proto_time(
            jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        )),
        ..Default::default()
    };
    assert_eq!(read(future, 0).await.0, Vec::<String>::new());
    assert_eq!(read(Filter::default(), head).await.0, Vec::<String>::new());

    let bad = store
        .client
        .grpc()
        .read_all(ReadAllRequest {
            filter: Some(Filter {
                types: vec!["no such type".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn subscribe_catches_up_then_follows_live() {
    let store = Store::start(false).await;
    store
        .client
        .append(
            "call-exolve-1",
            Expected::Any,
            vec![call_event("1"), call_event("1")],
        )
        .await
        .unwrap();
    let mut subscription = store
        .client
        .grpc()
        .subscribe(SubscribeRequest {
            after_position: 0,
            filter: None,
            batch_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let message = subscription.message().await.unwrap().unwrap();
        seen.extend(message.events.iter().map(|e| e.position));
        if message.caught_up {
            break;
        }
    }
    assert_eq!(seen.len(), 2);
    let live = store
        .client
        .append("call-exolve-2", Expected::Any, vec![call_event("2")])
        .await
        .unwrap();
    while seen.len() < 3 {
        let message = subscription.message().await.unwrap().unwrap();
        seen.extend(message.events.iter().map(|e| e.position));
    }
    assert_eq!(seen[2], live.positions[0]);
}

#[tokio::test]
async fn health_endpoints_answer() {
    let store = Store::start(false).await;
    let client = reqwest_like_get(store.http_addr, "/healthz").await;
    assert!(client.starts_with("HTTP/1.1 200"), "{client}");
    let ready =
        kit::testing::eventually("readiness", std::time::Duration::from_secs(30), || async {
            let response = reqwest_like_get(store.http_addr, "/readyz").await;
            response.starts_with("HTTP/1.1 200").then_some(response)
        })
        .await;
    assert!(ready.contains("\"postgres\":true"), "{ready}");
    let metrics = reqwest_like_get(store.http_addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
}

/// A minimal HTTP/1.1 GET, to keep an HTTP client out of the dependencies.
async fn reqwest_like_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn the_hash_chain_shows_where_history_was_changed_behind_the_stores_back() {
    let store = Store::start(false).await;
    let mut positions = Vec::new();
    for n in 0..5 {
        let appended = store
            .client
            .append(
                &format!("call-exolve-{n}"),
                Expected::Any,
                vec![call_event("x"), call_event("x")],
            )
            .await
            .unwrap();
        positions.extend(appended.positions);
    }
    let verify = |after: u64| {
        let mut grpc = store.client.grpc();
        async move {
            grpc.verify(kit::proto::eventstore::v1::VerifyRequest {
                after_position: after,
                to_position: 0,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let intact = verify(0).await;
    assert!(intact.intact, "{intact:?}");
    assert_eq!(intact.checked, 10);

    // A superuser switches the guard off and edits one payload.
    let owner = store.db.connect().await;
    let victim = positions[6] as i64;
    owner
        .batch_execute(&format!(
            "ALTER TABLE eventlog.events DISABLE TRIGGER events_refuse_update_delete;
             UPDATE eventlog.events SET payload = '\\x0a0466616b65' WHERE position = {victim};
             ALTER TABLE eventlog.events ENABLE ALWAYS TRIGGER events_refuse_update_delete;"
        ))
        .await
        .unwrap();
    let broken = verify(0).await;
    assert!(!broken.intact);
    assert_eq!(broken.first_broken_position, positions[6]);
    assert_eq!(broken.checked, 7);
    // Checking only what came before the edit finds nothing wrong.
    assert!(verify(0).await.first_broken_position >= positions[6]);

    // Removing a row breaks the chain at the row after it.
    let other = store.db.connect().await;
    let removed = positions[2] as i64;
    other
        .batch_execute(&format!(
            "ALTER TABLE eventlog.events DISABLE TRIGGER events_refuse_update_delete;
             DELETE FROM eventlog.events WHERE position = {removed};
             ALTER TABLE eventlog.events ENABLE ALWAYS TRIGGER events_refuse_update_delete;"
        ))
        .await
        .unwrap();
    assert_eq!(verify(0).await.first_broken_position, positions[3]);
}

#[tokio::test]
async fn only_services_with_a_valid_token_may_append_and_events_name_them() {
    let store = Store::start(false).await;
    let url = store.url();
    let anonymous = kit::store_client::EventStoreClient::connect_lazy(&url, "call-ingest").unwrap();
    let forged = kit::store_client::EventStoreClient::connect_lazy(&url, "call-ingest")
        .unwrap()
        .authenticated(&store.common.event_store_token_for("sms-sender"));
    let wrong_secret = kit::store_client::EventStoreClient::connect_lazy(&url, "call-ingest")
        .unwrap()
        .authenticated(&kit::store_client::token_for("guessed", "call-ingest"));
    for client in [anonymous, forged, wrong_secret] {
        let refused = client
            .append("call-exolve-1", Expected::Any, vec![call_event("1")])
            .await;
        assert!(
            matches!(refused, Err(AppendError::Invalid(_))),
            "{refused:?}"
        );
        let read = client
            .grpc()
            .read_stream(ReadStreamRequest {
                stream: "call-exolve-1".into(),
                ..Default::default()
            })
            .await;
        assert_eq!(read.unwrap_err().code(), tonic::Code::Unauthenticated);
    }
    assert_eq!(store.count_rows().await, 0);

    let mut common = store.common.clone();
    common.event_store_url = url;
    let ingest = common.event_store("call-ingest").unwrap();
    ingest
        .append("call-exolve-1", Expected::Any, vec![call_event("1")])
        .await
        .unwrap();
    let events = store
        .client
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: "call-exolve-1".into(),
            from_version: 1,
            max_count: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].producer, "call-ingest");
}

#[tokio::test]
async fn append_batch_decides_each_stream_on_its_own() {
    let store = Store::start(false).await;
    let first = call_event("b1");
    store
        .client
        .append("order-b2", Expected::NoStream, vec![call_event("b2")])
        .await
        .unwrap();
    let mut bad = call_event("b3");
    bad.r#type = "not a type".into();
    let outcomes = store
        .client
        .append_batch(vec![
            (
                "order-b1".into(),
                Expected::NoStream,
                vec![first.clone(), call_event("b1")],
            ),
            // Its version is 1: refused, the others still written.
            (
                "order-b2".into(),
                Expected::NoStream,
                vec![call_event("b2")],
            ),
            ("order-b3".into(), Expected::Any, vec![bad]),
            ("order-b4".into(), Expected::Any, vec![call_event("b4")]),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    let written = outcomes[0].as_ref().unwrap();
    assert_eq!(written.stream_version, 2);
    assert!(matches!(
        outcomes[1],
        Err(AppendError::WrongExpectedVersion { current: 1, .. })
    ));
    assert!(matches!(outcomes[2], Err(AppendError::Invalid(_))));
    assert_eq!(outcomes[3].as_ref().unwrap().stream_version, 1);

    // Again: idempotent on event ids, the original positions come back.
    let again = store
        .client
        .append_batch(vec![("order-b1".into(), Expected::Any, vec![first])])
        .await
        .unwrap();
    let again = again[0].as_ref().unwrap();
    assert!(again.duplicate);
    assert_eq!(again.positions[0], written.positions[0]);
}
