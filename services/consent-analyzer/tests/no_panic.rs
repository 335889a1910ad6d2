//! Property tests: the engine never panics, whatever the transcript, and its
//! output keeps its invariants.

use consent_analyzer::{Consent, Speaker, Turn, analyze_turns};
use proptest::prelude::*;

fn speaker() -> impl Strategy<Value = Speaker> {
    prop_oneof![Just(Speaker::Manager), Just(Speaker::Client)]
}

/// Text mixing arbitrary UTF-8 with the words and punctuation the rules
/// react to, so the property reaches deep into the rules, not just the
/// tokenizer.
fn text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        any::<String>(),
        "\\PC{0,12}",
        Just("да".to_owned()),
        Just("нет".to_owned()),
        Just("не".to_owned()),
        Just("через".to_owned()),
        Just("две".to_owned()),
        Just("недели".to_owned()),
        Just("полтора".to_owned()),
        Just("in".to_owned()),
        Just("a".to_owned()),
        Just("couple".to_owned()),
        Just("of".to_owned()),
        Just("weeks".to_owned()),
        Just("4294967295".to_owned()),
        Just("call".to_owned()),
        Just("me".to_owned()),
        Just("напомните".to_owned()),
        Just("если".to_owned()),
        Just("больше".to_owned()),
        Just("звоните".to_owned()),
        Just("это я".to_owned()),
        Just("Коля,".to_owned()),
        Just("!..".to_owned()),
        Just("?".to_owned()),
        Just("—".to_owned()),
        Just("Ёлки-палки".to_owned()),
        Just("don't".to_owned()),
    ];
    prop::collection::vec(word, 0..24).prop_map(|w| w.join(" "))
}

fn turns() -> impl Strategy<Value = Vec<Turn>> {
    prop::collection::vec(
        (speaker(), text()).prop_map(|(speaker, text)| Turn { speaker, text }),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn never_panics_and_keeps_invariants(turns in turns()) {
        let a = analyze_turns(&turns);
        prop_assert!((0.0..=1.0).contains(&a.confidence));
        prop_assert_eq!(a.remind_after.is_some(), a.consent == Consent::Agreed);
        if a.opt_out {
            prop_assert_eq!(a.consent, Consent::Declined);
        }
        let client_texts: Vec<&str> = turns
            .iter()
            .filter(|t| t.speaker == Speaker::Client)
            .map(|t| t.text.as_str())
            .collect();
        for e in &a.evidence {
            prop_assert_eq!(turns[e.turn].speaker, Speaker::Client);
            prop_assert!(client_texts.iter().any(|t| t.contains(e.text.as_str())));
        }
        // The wire form always serialises.
        prop_assert!(serde_json::to_string(&a).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = analyze_turns(&[Turn::manager(text.clone()), Turn::client(text)]);
    }
}
