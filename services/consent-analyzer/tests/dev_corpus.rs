//! The labeled corpora as tests: the engine must keep its quality bar.
//!
//! The corpus is a copy of shared/consent-corpus/dev.jsonl kept in the crate
//! (tests/data/dev.jsonl) so the test runs wherever the repository is
//! cloned. It is a sample, not the specification: the engine's rules are
//! general and each has unit tests of its own on other sentences.

use std::path::Path;

use consent_analyzer::analyze_turns;
use consent_analyzer::baseline::naive_analyze;
use consent_analyzer::eval::{evaluate, load_corpus};

#[test]
fn engine_meets_the_quality_bar_on_the_dev_corpus() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dev.jsonl");
    let calls = load_corpus(&path).expect("read the dev corpus");
    assert!(calls.len() >= 100, "corpus too small: {}", calls.len());

    let report = evaluate(&calls, analyze_turns);
    let text = report.render("engine on dev.jsonl");
    println!("{text}");
    assert!(
        report.consent_accuracy() >= 0.97,
        "consent accuracy below 0.97\n{text}"
    );
    assert!(
        report.remind_after_exact() >= 0.95,
        "remind_after exact below 0.95\n{text}"
    );
    assert!(report.opt_out_f1() >= 0.95, "opt-out F1 below 0.95\n{text}");

    // The engine must beat the rule it replaces by a wide margin.
    let naive = evaluate(&calls, naive_analyze);
    println!("baseline: {}", naive.summary());
    assert!(report.consent_accuracy() > naive.consent_accuracy() + 0.2);
}

/// Calls written for this crate (tests/data/own.jsonl), in the corpus
/// format: a second sample, by another hand, held to the same bar.
#[test]
fn engine_meets_the_quality_bar_on_its_own_calls() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/own.jsonl");
    let calls = load_corpus(&path).expect("read tests/data/own.jsonl");
    let report = evaluate(&calls, analyze_turns);
    let text = report.render("engine on own.jsonl");
    println!("{text}");
    assert!(report.consent_accuracy() >= 0.97, "{text}");
    assert!(report.remind_after_exact() >= 0.95, "{text}");
    assert!(report.opt_out_f1() >= 0.95, "{text}");
}
