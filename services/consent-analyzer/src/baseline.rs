//! The naive keyword rule the engine replaces, kept to measure against:
//! "the call is agreed if its text contains да / согласен / конечно" (and,
//! for English calls, yes / agree / of course / sure), a month by default,
//! never an opt-out.
//!
//! It looks at every speaker and at substrings, exactly as the rule it
//! stands for did, so "когда", "никогда" and the manager's own "да" all
//! count.

use crate::decision::{Analysis, Consent, Reason};
use crate::period::Period;
use crate::transcript::Turn;

const KEYWORDS: &[&str] = &[
    "да",
    "согласен",
    "конечно",
    "yes",
    "agree",
    "of course",
    "sure",
];

/// Classify a call with the naive keyword rule.
pub fn naive_analyze(turns: &[Turn]) -> Analysis {
    let hit = turns.iter().any(|t| {
        let lower = t.text.to_lowercase();
        KEYWORDS.iter().any(|k| lower.contains(k))
    });
    let (consent, remind_after, reason) = if hit {
        (Consent::Agreed, Some(Period::DEFAULT), Reason::Agreed)
    } else {
        (Consent::Declined, None, Reason::Declined)
    };
    Analysis {
        consent,
        remind_after,
        opt_out: false,
        confidence: 0.5,
        evidence: Vec::new(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_naive_rule_falls_for_substrings() {
        let a = naive_analyze(&[Turn::client("Никогда не звоните")]);
        assert_eq!(a.consent, Consent::Agreed);
        let a = naive_analyze(&[Turn::client("Нет")]);
        assert_eq!(a.consent, Consent::Declined);
    }
}
