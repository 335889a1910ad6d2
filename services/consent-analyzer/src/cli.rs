//! The command line: `classify` (JSON lines in, verdicts out) and `eval`
//! (score against a labeled corpus, next to the naive keyword rule).
//!
//! `main.rs` only parses [`Cli`] and calls [`run`]. To add a subcommand
//! (such as the service's `serve`), add a variant to [`Command`] and an arm
//! to [`run`].

use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ANALYZER_VERSION;
use crate::baseline::naive_analyze;
use crate::decision::{Consent, Evidence, Reason};
use crate::engine::analyze_turns;
use crate::eval::{evaluate, load_corpus};
use crate::period::Period;
use crate::transcript::Turn;

/// Decides from call transcripts whether the client agreed to be reminded.
#[derive(Debug, Parser)]
#[command(name = "consent-analyzer", version, about, long_version = ANALYZER_VERSION)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    Classify(ClassifyArgs),
    Eval(EvalArgs),
    Serve(Box<ServeArgs>),
}

/// Run the service: consume `TranscriptReady` events, append verdicts.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: kit::config::Common,
    #[command(flatten)]
    pub config: crate::service::Config,
}

/// Classify transcripts read as JSON lines from standard input.
///
/// Each input line is `{"id": ..., "turns": [{"speaker": "manager"|"client",
/// "text": "..."}], ...}` (other keys are ignored). Each output line is
/// `{"id", "consent", "remind_after", "opt_out", "confidence", "evidence",
/// "reason"}`, in input order; blank lines are skipped. A line without an
/// `id` gets `"line": N` (1-based) instead.
///
/// A malformed line gets `{"id": ..., "line": N, "error": "..."}` on
/// standard output (the `id` when one could be read) and a message on
/// standard error, and the rest is still processed.
///
/// Exit status: 0 when every line was classified, 2 when at least one line
/// was malformed, 1 when standard input or output failed.
#[derive(Debug, Args)]
pub struct ClassifyArgs {}

/// Score the engine on a labeled corpus, next to the naive keyword rule.
///
/// The corpus has the format of shared/consent-corpus/dev.jsonl: one call per
/// line with `id`, `lang`, `turns`, `expected` {consent, remind_after,
/// opt_out} and `tags`. Prints accuracy per expected class and overall,
/// remind_after exact match on the calls labeled agreed, opt-out
/// precision/recall/F1 and every miss with its tags, then the naive keyword
/// rule's headline figures on the same file.
///
/// Exit status: 0 when the corpus was read, 1 when it could not be.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The labeled corpus (JSON lines).
    pub file: PathBuf,
    /// Report the naive keyword rule in full instead of the engine.
    #[arg(long)]
    pub baseline: bool,
    /// Print the figures as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run a subcommand.
pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Classify(_) => {
            let stdin = io::stdin().lock();
            let stdout = io::stdout().lock();
            classify(stdin, stdout, &mut io::stderr())
        }
        Command::Eval(args) => eval(&args),
        Command::Serve(args) => serve(*args),
    }
}

/// The `serve` command: runs the service until SIGTERM.
fn serve(args: ServeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("consent-analyzer: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let _telemetry = kit::telemetry::init(crate::service::NAME);
        let shutdown = kit::shutdown::on_signal();
        let drain = args.common.drain_timeout;
        let service = crate::service::run(args.common, args.config, shutdown.clone());
        match kit::shutdown::drain_within(service, &shutdown, drain).await {
            Some(Err(e)) => {
                tracing::error!(error = %e, "consent-analyzer stopped");
                ExitCode::from(1)
            }
            _ => ExitCode::SUCCESS,
        }
    })
}

/// One input line.
#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    id: Option<Value>,
    turns: Vec<Turn>,
}

/// One verdict line.
#[derive(Serialize)]
struct Output<'a> {
    id: &'a Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    consent: Consent,
    remind_after: Option<Period>,
    opt_out: bool,
    confidence: f64,
    evidence: &'a [Evidence],
    reason: Reason,
}

/// One error line.
#[derive(Serialize)]
struct ErrorLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    line: usize,
    error: String,
}

/// The `classify` command over any reader and writers (testable).
pub fn classify(mut input: impl BufRead, output: impl Write, errors: &mut impl Write) -> ExitCode {
    let mut out = BufWriter::new(output);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let mut malformed = 0usize;
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(errors, "consent-analyzer: reading standard input: {e}");
                let _ = out.flush();
                return ExitCode::from(1);
            }
        }
        line_no += 1;
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(e) => {
                malformed += 1;
                let msg = format!("not UTF-8: {e}");
                let _ = writeln!(errors, "consent-analyzer: line {line_no}: {msg}");
                if write_json(
                    &mut out,
                    &ErrorLine {
                        id: None,
                        line: line_no,
                        error: msg,
                    },
                )
                .is_err()
                {
                    return ExitCode::from(1);
                }
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let written = match serde_json::from_str::<Input>(text) {
            Ok(call) => {
                let a = analyze_turns(&call.turns);
                write_json(
                    &mut out,
                    &Output {
                        id: &call.id,
                        line: call.id.is_none().then_some(line_no),
                        consent: a.consent,
                        remind_after: a.remind_after,
                        opt_out: a.opt_out,
                        confidence: a.confidence,
                        evidence: &a.evidence,
                        reason: a.reason,
                    },
                )
            }
            Err(e) => {
                malformed += 1;
                // Recover the id, if the line is JSON at all, so the error
                // can be matched to its record.
                let id = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                let _ = writeln!(errors, "consent-analyzer: line {line_no}: {e}");
                write_json(
                    &mut out,
                    &ErrorLine {
                        id: id.as_ref(),
                        line: line_no,
                        error: e.to_string(),
                    },
                )
            }
        };
        if let Err(e) = written {
            let _ = writeln!(errors, "consent-analyzer: writing standard output: {e}");
            return ExitCode::from(1);
        }
    }
    if let Err(e) = out.flush() {
        let _ = writeln!(errors, "consent-analyzer: writing standard output: {e}");
        return ExitCode::from(1);
    }
    if malformed > 0 {
        let _ = writeln!(errors, "consent-analyzer: {malformed} malformed line(s)");
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn write_json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// The `eval` command.
fn eval(args: &EvalArgs) -> ExitCode {
    let calls = match load_corpus(&args.file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consent-analyzer: {e}");
            return ExitCode::from(1);
        }
    };
    let engine = evaluate(&calls, analyze_turns);
    let naive = evaluate(&calls, naive_analyze);
    if args.json {
        let doc = serde_json::json!({
            "file": args.file.display().to_string(),
            "analyzer_version": ANALYZER_VERSION,
            "calls": calls.len(),
            "engine": figures(&engine),
            "baseline": figures(&naive),
        });
        println!("{doc}");
        return ExitCode::SUCCESS;
    }
    let file = args.file.display();
    if args.baseline {
        print!("{}", naive.render(&format!("naive keyword rule on {file}")));
        println!("engine ({ANALYZER_VERSION}): {}", engine.summary());
    } else {
        print!(
            "{}",
            engine.render(&format!("{ANALYZER_VERSION} on {file}"))
        );
        println!("baseline (naive keyword rule): {}", naive.summary());
    }
    ExitCode::SUCCESS
}

fn figures(r: &crate::eval::Report) -> Value {
    serde_json::json!({
        "consent_accuracy": r.consent_accuracy(),
        "accuracy_agreed": r.agreed.rate(),
        "accuracy_declined": r.declined.rate(),
        "accuracy_unclear": r.unclear.rate(),
        "remind_after_exact": r.remind_after_exact(),
        "opt_out_precision": r.opt_out_precision(),
        "opt_out_recall": r.opt_out_recall(),
        "opt_out_f1": r.opt_out_f1(),
        "misses": r.misses.iter().map(|m| &m.id).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_classify(input: &str) -> (String, String, ExitCode) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = classify(input.as_bytes(), &mut out, &mut err);
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            code,
        )
    }

    #[test]
    fn classifies_each_line_and_reports_bad_ones() {
        let input = concat!(
            r#"{"id": "x1", "turns": [{"speaker": "manager", "text": "Перезвонить вам через неделю?"}, {"speaker": "client", "text": "Да, наберите."}], "extra": 1}"#,
            "\n\n",
            "not json\n",
            r#"{"id": 7, "turns": [{"speaker": "boss", "text": "hi"}]}"#,
            "\n",
            r#"{"turns": []}"#,
            "\n",
        );
        let (out, err, code) = run_classify(input);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["id"], "x1");
        assert_eq!(lines[0]["consent"], "agreed");
        assert_eq!(lines[0]["remind_after"], "P7D");
        assert_eq!(lines[0]["opt_out"], false);
        assert!(
            lines[0]["evidence"][0]["text"]
                .as_str()
                .unwrap()
                .contains("наберите")
        );
        assert_eq!(lines[1]["line"], 3);
        assert!(lines[1]["error"].is_string());
        assert!(lines[1].get("id").is_none());
        assert_eq!(lines[2]["id"], 7);
        assert_eq!(lines[2]["line"], 4);
        assert_eq!(lines[3]["consent"], "unclear");
        assert_eq!(lines[3]["reason"], "no_client_turns");
        assert_eq!(lines[3]["line"], 5);
        assert!(err.contains("line 3"));
        assert_eq!(code, ExitCode::from(2));
    }

    #[test]
    fn clean_input_exits_zero() {
        let (out, err, code) = run_classify(
            r#"{"id": 1, "turns": [{"speaker": "client", "text": "stop calling me"}]}"#,
        );
        assert!(out.contains(r#""opt_out":true"#), "{out}");
        assert!(err.is_empty());
        assert_eq!(code, ExitCode::SUCCESS);
    }

    #[test]
    fn invalid_utf8_is_a_malformed_line() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = classify(&b"\xff\xfe\n"[..], &mut out, &mut err);
        assert_eq!(code, ExitCode::from(2));
        assert!(String::from_utf8(out).unwrap().contains("not UTF-8"));
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["consent-analyzer", "eval", "x.jsonl", "--baseline"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Eval(EvalArgs { baseline: true, .. })
        ));
    }
}
