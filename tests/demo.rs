//! `callflow demo` keeps working: the day it plays meets every expectation.

use callflow_e2e::config;
use kit::testing::{TestBus, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_day_meets_every_expectation() {
    kit::telemetry::init_for_tests();
    // Only for the server URLs; the demo makes its own database and stream.
    let db = TestDb::create().await;
    let bus = TestBus::new();
    let name = format!("cf_demo_{:08x}", rand::random::<u32>());
    let result = callflow::demo::run_named(config(&db, &bus), &name).await;
    let admin = db.connect().await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    let nats = kit::bus::Bus::connect(&kit::testing::common(&db.url, &bus), "test")
        .await
        .unwrap();
    let _ = nats.jetstream.delete_stream(name.to_uppercase()).await;
    result.expect("every expectation held");
}
