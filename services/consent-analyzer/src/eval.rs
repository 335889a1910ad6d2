//! Scoring a classifier against a labeled corpus.
//!
//! The corpus format is JSON lines, one call per line:
//! `{"id", "lang", "turns": [...], "expected": {"consent", "remind_after",
//! "opt_out"}, "tags": [...]}`. The report gives consent accuracy per
//! expected class and overall, exact `remind_after` matches on the calls
//! labeled `agreed`, opt-out precision/recall/F1, and every miss with its
//! tags.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decision::{Analysis, Consent};
use crate::period::Period;
use crate::transcript::Turn;

/// The labels of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    pub consent: Consent,
    #[serde(default)]
    pub remind_after: Option<Period>,
    #[serde(default)]
    pub opt_out: bool,
}

/// One labeled call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabeledCall {
    pub id: String,
    #[serde(default)]
    pub lang: Option<String>,
    pub turns: Vec<Turn>,
    pub expected: Expected,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The corpus could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
}

/// Parse a labeled corpus from JSON lines (blank lines are skipped).
pub fn parse_corpus(text: &str) -> Result<Vec<LabeledCall>, CorpusError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| CorpusError::Parse {
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// Read a labeled corpus file.
pub fn load_corpus(path: &Path) -> Result<Vec<LabeledCall>, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(|source| CorpusError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_corpus(&text)
}

/// A call the classifier got wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub id: String,
    pub tags: Vec<String>,
    pub expected: Expected,
    pub got: Expected,
    /// The client words the classifier relied on.
    pub evidence: Vec<String>,
    pub reason: String,
}

/// Count of right answers out of a total.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tally {
    pub correct: usize,
    pub total: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        self.correct += usize::from(ok);
    }

    /// Share right (1.0 for an empty tally: nothing was missed).
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Scores of one classifier on one corpus.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub calls: usize,
    pub consent: Tally,
    pub agreed: Tally,
    pub declined: Tally,
    pub unclear: Tally,
    /// `remind_after` exact, over the calls labeled `agreed`.
    pub remind_after: Tally,
    pub opt_out_tp: usize,
    pub opt_out_fp: usize,
    pub opt_out_fn: usize,
    pub misses: Vec<Miss>,
}

impl Report {
    pub fn consent_accuracy(&self) -> f64 {
        self.consent.rate()
    }

    pub fn remind_after_exact(&self) -> f64 {
        self.remind_after.rate()
    }

    pub fn opt_out_precision(&self) -> f64 {
        ratio(self.opt_out_tp, self.opt_out_tp + self.opt_out_fp)
    }

    pub fn opt_out_recall(&self) -> f64 {
        ratio(self.opt_out_tp, self.opt_out_tp + self.opt_out_fn)
    }

    pub fn opt_out_f1(&self) -> f64 {
        let (p, r) = (self.opt_out_precision(), self.opt_out_recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// The report as text: figures, then misses.
    pub fn render(&self, title: &str) -> String {
        let mut s = String::new();
        let t = |t: &Tally| format!("{:.3}  ({}/{})", t.rate(), t.correct, t.total);
        let _ = writeln!(s, "{title} ({} calls)", self.calls);
        let _ = writeln!(s, "  consent accuracy     {}", t(&self.consent));
        let _ = writeln!(s, "    agreed             {}", t(&self.agreed));
        let _ = writeln!(s, "    declined           {}", t(&self.declined));
        let _ = writeln!(s, "    unclear            {}", t(&self.unclear));
        let _ = writeln!(
            s,
            "  remind_after exact   {}  of calls labeled agreed",
            t(&self.remind_after)
        );
        let _ = writeln!(
            s,
            "  opt-out              P {:.3}  R {:.3}  F1 {:.3}  (tp {}, fp {}, fn {})",
            self.opt_out_precision(),
            self.opt_out_recall(),
            self.opt_out_f1(),
            self.opt_out_tp,
            self.opt_out_fp,
            self.opt_out_fn
        );
        let _ = writeln!(s, "  misses: {}", self.misses.len());
        for m in &self.misses {
            let _ = writeln!(
                s,
                "    {} [{}]: expected {} got {} ({})",
                m.id,
                m.tags.join(", "),
                describe(&m.expected),
                describe(&m.got),
                m.reason
            );
            for e in &m.evidence {
                let _ = writeln!(s, "      > {e}");
            }
        }
        s
    }

    /// One line of headline figures.
    pub fn summary(&self) -> String {
        format!(
            "consent accuracy {:.3} ({}/{}), remind_after exact {:.3} ({}/{}), opt-out P {:.3} R {:.3} F1 {:.3}",
            self.consent_accuracy(),
            self.consent.correct,
            self.consent.total,
            self.remind_after_exact(),
            self.remind_after.correct,
            self.remind_after.total,
            self.opt_out_precision(),
            self.opt_out_recall(),
            self.opt_out_f1()
        )
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn describe(e: &Expected) -> String {
    let mut s = e.consent.to_string();
    if let Some(p) = e.remind_after {
        let _ = write!(s, " {p}");
    }
    if e.opt_out {
        s.push_str(" opt-out");
    }
    s
}

/// Score `classify` on `calls`.
pub fn evaluate(calls: &[LabeledCall], classify: impl Fn(&[Turn]) -> Analysis) -> Report {
    let mut r = Report {
        calls: calls.len(),
        ..Report::default()
    };
    for call in calls {
        let a = classify(&call.turns);
        let exp = &call.expected;
        let consent_ok = a.consent == exp.consent;
        r.consent.add(consent_ok);
        match exp.consent {
            Consent::Agreed => r.agreed.add(consent_ok),
            Consent::Declined => r.declined.add(consent_ok),
            Consent::Unclear => r.unclear.add(consent_ok),
        }
        let mut remind_ok = true;
        if exp.consent == Consent::Agreed {
            remind_ok = a.remind_after == exp.remind_after;
            r.remind_after.add(remind_ok);
        }
        match (exp.opt_out, a.opt_out) {
            (true, true) => r.opt_out_tp += 1,
            (false, true) => r.opt_out_fp += 1,
            (true, false) => r.opt_out_fn += 1,
            (false, false) => {}
        }
        if !consent_ok || !remind_ok || exp.opt_out != a.opt_out {
            r.misses.push(Miss {
                id: call.id.clone(),
                tags: call.tags.clone(),
                expected: exp.clone(),
                got: Expected {
                    consent: a.consent,
                    remind_after: a.remind_after,
                    opt_out: a.opt_out,
                },
                evidence: a.evidence.iter().map(|e| e.text.clone()).collect(),
                reason: a.reason.as_str().to_owned(),
            });
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::naive_analyze;

    const CORPUS: &str = r#"
{"id": "a", "turns": [{"speaker": "manager", "text": "Напомнить через неделю?"}, {"speaker": "client", "text": "Нет, никогда."}], "expected": {"consent": "declined", "remind_after": null, "opt_out": false}, "tags": ["t"]}
{"id": "b", "turns": [{"speaker": "manager", "text": "Remind you in 2 weeks?"}, {"speaker": "client", "text": "Yes."}], "expected": {"consent": "agreed", "remind_after": "P14D", "opt_out": false}, "tags": []}
"#;

    #[test]
    fn scores_and_misses() {
        let calls = parse_corpus(CORPUS).unwrap();
        let r = evaluate(&calls, naive_analyze);
        assert_eq!(r.consent.total, 2);
        assert_eq!(r.consent.correct, 1); // "никогда" contains "да"
        assert_eq!(r.remind_after.correct, 0); // naive says P1M
        assert_eq!(r.misses.len(), 2);
        assert!(r.render("naive").contains("a [t]"));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse_corpus("\n{\"id\": 1}\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }
}
