//! consent-analyzer: decides from a call transcript whether the client
//! agreed to be reminded, after which period, and whether they asked never
//! to be called again.
//!
//! The engine is a pure function of the transcript ([`analyze`]); the
//! service around it (NATS, the event store) and the CLI ([`cli`]) only
//! move transcripts in and verdicts out.
//!
//! ```
//! use consent_analyzer::{analyze, Consent, Period, Transcript, Turn};
//!
//! let call = Transcript::new(vec![
//!     Turn::manager("Напомнить вам через месяц?"),
//!     Turn::client("Нет, не надо. Лучше через две недели позвоните."),
//! ]);
//! let verdict = analyze(&call);
//! assert_eq!(verdict.consent, Consent::Agreed);
//! assert_eq!(verdict.remind_after, Some(Period::days(14)));
//! assert_eq!(verdict.remind_after.unwrap().to_string(), "P14D");
//! ```
//!
//! How it works, module by module:
//! * [`tokens`] — normalising, tokenising, Snowball stemming;
//! * [`lexicon`] — the words the rules know, by meaning;
//! * [`period`] — spoken periods and the typed ISO-8601 [`Period`];
//! * [`signals`] — what one client utterance says (negation scope,
//!   requests, hedges, conditions, asides, counter-proposals);
//! * [`offer`] — what a manager turn offered or asked;
//! * [`decision`] — folding the client turns into one verdict;
//! * [`engine`] — [`analyze`], period choice, evidence, confidence;
//! * [`baseline`] — the naive keyword rule, for comparison;
//! * [`eval`] — scoring against a labeled corpus;
//! * [`cli`] — the `classify`, `eval` and `serve` commands;
//! * [`service`] — the service: `TranscriptReady` in, `ConsentAnalyzed`
//!   (and `ContactOptedOut`) out.

pub mod baseline;
pub mod cli;
pub mod decision;
pub mod engine;
pub mod eval;
pub mod lexicon;
pub mod offer;
pub mod period;
pub mod service;
pub mod signals;
pub mod tokens;
pub mod transcript;

pub use decision::{Analysis, Consent, Evidence, Reason};
pub use engine::{analyze, analyze_turns};
pub use period::{Period, PeriodParseError, PeriodUnit};
pub use transcript::{Speaker, Transcript, Turn};

/// Version of the decision rules. Recorded with every verdict so a replay
/// can tell which engine decided; bump it whenever a rule or a lexicon
/// changes what the engine returns.
pub const ANALYZER_VERSION: &str = "consent-analyzer/1.0.0";
