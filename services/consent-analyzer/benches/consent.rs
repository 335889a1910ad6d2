//! Throughput of the consent engine: dialogs per second on one core.
//!
//! Runs the engine single-threaded over the labeled dev corpus
//! (tests/data/dev.jsonl), repeated to at least 100,000 dialogs, per case
//! (all calls, Russian only, English only), and the naive keyword rule over
//! the same dialogs in the same run as the baseline. Writes
//! `target/bench/consent.json` and prints the same as a table (kit::bench).
//!
//! `cargo bench -p consent-analyzer --bench consent`

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use consent_analyzer::baseline::naive_analyze;
use consent_analyzer::eval::{LabeledCall, load_corpus};
use consent_analyzer::{Turn, analyze_turns};
use kit::bench::{BenchResult, report};

const MIN_DIALOGS: usize = 100_000;
const TARGET: f64 = 20_000.0;

/// Dialogs per second of `f` over `dialogs`, repeated to `MIN_DIALOGS`.
fn throughput(dialogs: &[&[Turn]], f: impl Fn(&[Turn]) -> bool) -> f64 {
    // Warm up: lexicons, stemmers and caches are built on first use.
    for d in dialogs {
        black_box(f(black_box(d)));
    }
    let rounds = MIN_DIALOGS.div_ceil(dialogs.len());
    let start = Instant::now();
    for _ in 0..rounds {
        for d in dialogs {
            black_box(f(black_box(d)));
        }
    }
    (rounds * dialogs.len()) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let corpus_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dev.jsonl");
    let calls: Vec<LabeledCall> = load_corpus(&corpus_path).expect("dev corpus");
    type Filter = fn(&LabeledCall) -> bool;
    let cases: [(&str, Filter); 3] = [
        ("dev corpus, all calls", |_| true),
        ("dev corpus, Russian calls", |c| {
            c.lang.as_deref() == Some("ru")
        }),
        ("dev corpus, English calls", |c| {
            c.lang.as_deref() == Some("en")
        }),
    ];
    let mut results = Vec::new();
    for (name, keep) in &cases {
        let dialogs: Vec<&[Turn]> = calls
            .iter()
            .filter(|c| keep(c))
            .map(|c| &c.turns[..])
            .collect();
        if dialogs.is_empty() {
            continue;
        }
        let engine = throughput(&dialogs, |d| analyze_turns(d).opt_out);
        let naive = throughput(&dialogs, |d| naive_analyze(d).opt_out);
        results.push(BenchResult {
            bench: "consent".into(),
            case: format!(
                "{name} ({} dialogs x{}), one thread",
                dialogs.len(),
                MIN_DIALOGS.div_ceil(dialogs.len())
            ),
            value: engine.round(),
            unit: "dialogs/s".into(),
            baseline: Some("naive keyword rule".to_owned()),
            baseline_value: Some(naive.round()),
            ratio: Some((engine / naive * 1000.0).round() / 1000.0),
            target: ">= 20000 dialogs/s".into(),
            met: engine >= TARGET,
        });
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    report(&root, "consent", &results).expect("write bench results");
}
