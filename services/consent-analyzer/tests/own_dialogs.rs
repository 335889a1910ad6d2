//! Dialogs written for this crate (none taken from the labeled corpus), one
//! or more per rule, in Russian and English: who speaks, negation scope,
//! words that merely contain a keyword, soft agreement, hedges and
//! conditions, a yes that answers another question, changes of mind, email
//! instead, dropped calls, ASR text, counter-proposals and opt-outs.

use consent_analyzer::{Consent, Period, Reason, Turn, analyze_turns};

/// `"M: ... | C: ... | M: ..."` → turns.
fn dialog(script: &str) -> Vec<Turn> {
    script
        .split(" | ")
        .map(|part| {
            let (who, text) = part.split_once(": ").expect("speaker prefix");
            match who {
                "M" => Turn::manager(text),
                "C" => Turn::client(text),
                _ => panic!("unknown speaker {who}"),
            }
        })
        .collect()
}

#[track_caller]
fn check(script: &str, consent: Consent, remind: Option<&str>, opt_out: bool) {
    let a = analyze_turns(&dialog(script));
    let remind = remind.map(|r| Period::parse_iso(r).unwrap());
    assert_eq!(
        (a.consent, a.remind_after, a.opt_out),
        (consent, remind, opt_out),
        "\n{script}\n→ {a:#?}"
    );
}

use Consent::{Agreed, Declined, Unclear};

#[test]
fn plain_and_soft_agreement() {
    check(
        "M: Добрый день! Напомнить вам о записи через неделю? | C: Да, пожалуйста.",
        Agreed,
        Some("P7D"),
        false,
    );
    check(
        "M: Могу перезвонить вам через три дня. | C: Ну давай.",
        Agreed,
        Some("P3D"),
        false,
    );
    check(
        "M: Поставить вам напоминание на следующей неделе? | C: Не возражаю.",
        Agreed,
        Some("P7D"),
        false,
    );
    check(
        "M: Хотите, я вам напомню? | C: Было бы неплохо, спасибо.",
        Agreed,
        Some("P1M"),
        false,
    );
    check(
        "M: Перезвоним вам через пару месяцев, хорошо? | C: Угу. Жду звонка.",
        Agreed,
        Some("P2M"),
        false,
    );
    check(
        "M: Would you like a reminder call next month? | C: That'd be great, thank you.",
        Agreed,
        Some("P1M"),
        false,
    );
    check(
        "M: Can I ping you again in ten days? | C: Yep, works for me.",
        Agreed,
        Some("P10D"),
        false,
    );
    check(
        "M: Should I reach out in a couple of weeks? | C: I guess so, sure.",
        Agreed,
        Some("P14D"),
        false,
    );
    check(
        "M: Mind if I follow up in a month? | C: Not a problem.",
        Agreed,
        Some("P1M"),
        false,
    );
    check(
        "M: Do you want me to call you in two months? | C: Sounds like a plan.",
        Agreed,
        Some("P2M"),
        false,
    );
}

#[test]
fn plain_refusals() {
    check(
        "M: Напомнить вам через месяц? | C: Нет, конечно. Зачем?",
        Declined,
        None,
        false,
    );
    check(
        "M: Перезвонить вам через неделю? | C: Спасибо, не нужно.",
        Declined,
        None,
        false,
    );
    check(
        "M: Позвоним вам через две недели? | C: Я откажусь, спасибо.",
        Declined,
        None,
        false,
    );
    check(
        "M: Напомнить про акцию? | C: Ни в коем случае.",
        Declined,
        None,
        false,
    );
    check(
        "M: Want me to give you a call next week? | C: No, that's fine, I'm all set.",
        Declined,
        None,
        false,
    );
    check(
        "M: Shall we remind you in a month? | C: I don't think so.",
        Declined,
        None,
        false,
    );
    check(
        "M: Can I call you back in a few days? | C: I'd rather not.",
        Declined,
        None,
        false,
    );
    check(
        "M: Would a reminder help? | C: Nope.",
        Declined,
        None,
        false,
    );
}

#[test]
fn only_the_clients_words_decide() {
    check(
        "M: Да, конечно, согласен с вами. Напомнить вам через неделю? | C: Нет, спасибо.",
        Declined,
        None,
        false,
    );
    check(
        "M: Yes, absolutely, I agree. So, a call in two weeks? | C: No thanks.",
        Declined,
        None,
        false,
    );
    check(
        "M: Отлично, да-да, конечно! Напомнить? | C: Не надо.",
        Declined,
        None,
        false,
    );
}

#[test]
fn negation_scope() {
    check(
        "M: Напомнить вам через неделю? | C: Да нет, не стоит.",
        Declined,
        None,
        false,
    );
    check(
        "M: Перезвонить вам? | C: Ну конечно нет!",
        Declined,
        None,
        false,
    );
    check(
        "M: Should I remind you next week? | C: Of course not.",
        Declined,
        None,
        false,
    );
    check(
        "M: Напомнить через месяц? | C: Я не против.",
        Agreed,
        Some("P1M"),
        false,
    );
    check(
        "M: A reminder in three weeks? | C: I don't mind, sure.",
        Agreed,
        Some("P21D"),
        false,
    );
    check(
        "M: Можно позвонить вам через неделю? | C: Почему бы и нет.",
        Agreed,
        Some("P7D"),
        false,
    );
    check(
        "M: Напомнить о продлении? | C: Нет, не согласен.",
        Declined,
        None,
        false,
    );
    check(
        "M: Напомнить вам? | C: Не откажусь.",
        Agreed,
        Some("P1M"),
        false,
    );
    check(
        "M: Can I call you next week? | C: Not really, no.",
        Declined,
        None,
        false,
    );
}

#[test]
fn words_that_merely_contain_a_keyword() {
    check(
        "M: Напомнить вам через неделю? | C: Я никогда ничего такого не заказываю.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Напомнить через месяц? | C: Когда будет нужно, я сама приду. Напоминать не надо.",
        Declined,
        None,
        false,
    );
    check(
        "M: Перезвонить вам? | C: Я давно уехала, мне это не нужно.",
        Declined,
        None,
        false,
    );
    check(
        "M: A call next month? | C: I already did it yesterday, so no need.",
        Declined,
        None,
        false,
    );
}

#[test]
fn hedges_and_conditions_are_unclear() {
    check(
        "M: Напомнить вам через неделю? | C: Даже не знаю... Посмотрим.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Перезвонить через месяц? | C: Мне надо посоветоваться с женой.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Can I remind you in a week? | C: Let me think about it.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Shall I call back in two weeks? | C: Maybe. I'm not sure yet.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Напомнить про скидку через неделю? | C: Если цена будет ниже, тогда да.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Want a call when the sale starts? | C: If it's under a hundred dollars, sure.",
        Unclear,
        None,
        false,
    );
    let a = analyze_turns(&dialog(
        "M: Напомнить через неделю? | C: Если будет рассрочка — звоните.",
    ));
    assert_eq!(a.reason, Reason::Conditional);
    // A condition met later in the call turns into agreement.
    check(
        "M: Перезвонить вам через две недели? | C: Если будет скидка, то да. | M: Скидка будет, десять процентов. | C: Тогда звоните.",
        Agreed,
        Some("P14D"),
        false,
    );
    // Politeness is no condition.
    check(
        "M: Can I call you in a week? | C: Sure, call me in a week if that's okay.",
        Agreed,
        Some("P7D"),
        false,
    );
    // A condition on something else leaves the no standing.
    check(
        "M: Перезвонить вам через неделю? | C: Нет, я сам позвоню, если надо будет.",
        Declined,
        None,
        false,
    );
}

#[test]
fn a_yes_to_another_question_is_not_consent() {
    check(
        "M: Здравствуйте, это Ольга Петровна? | C: Да, я. | M: Вам положен бонус.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Hi, is this Ivan? | C: Yes, this is Ivan.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Вы меня хорошо слышите? | C: Да-да.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Hello, can you hear me? | C: Yeah, loud and clear.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Как вам наш сервис? | C: Хорошо, спасибо.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Добрый день, Сергей? | C: Да. | M: Напомнить вам о ТО через полгода? | C: Да, напомните.",
        Agreed,
        Some("P6M"),
        false,
    );
    // The offer is asked, then the line is checked: the yes answers the check.
    check(
        "M: Напомнить через неделю? Алло, вы меня слышите? | C: Да, слышу.",
        Unclear,
        None,
        false,
    );
}

#[test]
fn changes_of_mind_last_decision_wins() {
    check(
        "M: Напомнить о записи через неделю? | C: Давайте. | M: Отлично. | C: Ой, нет, подождите, я же уезжаю. Не надо.",
        Declined,
        None,
        false,
    );
    check(
        "M: Call you back in a month? | C: No, I don't think so. | M: We'll have a 30% discount then. | C: Oh really? Okay then, call me.",
        Agreed,
        Some("P1M"),
        false,
    );
    check(
        "M: Перезвонить через неделю? | C: Нет... хотя давайте, наберите.",
        Agreed,
        Some("P7D"),
        false,
    );
    check(
        "M: Remind you in two weeks? | C: Sure. Actually, wait, no, don't bother.",
        Declined,
        None,
        false,
    );
    check(
        "M: Напомнить через неделю? | C: Да, давайте... хотя подождите.",
        Unclear,
        None,
        false,
    );
}

#[test]
fn email_instead() {
    check(
        "M: Напомнить вам через неделю? | C: Лучше пришлите всё на почту.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Can I call you in a week to discuss? | C: Just send it to my email. | M: Sure. And the call? | C: I'll read it first.",
        Unclear,
        None,
        false,
    );
    check(
        "M: Отправлю вам КП на почту, и созвонимся через неделю? | C: Да, присылайте, и через неделю наберите.",
        Agreed,
        Some("P7D"),
        false,
    );
}

#[test]
fn dropped_calls() {
    let a = analyze_turns(&dialog(
        "M: Напомнить вам через две недели? | C: Что? Плохо слышно, вы пропада... | M: Алло? Алло?",
    ));
    assert_eq!((a.consent, a.reason), (Unclear, Reason::CallDropped));
    let a = analyze_turns(&dialog(
        "M: Should I call you in a week? | C: Sorry, you're breaking up, I ca... | M: Hello? Hello?",
    ));
    assert_eq!((a.consent, a.reason), (Unclear, Reason::CallDropped));
    // Agreement before the drop stands.
    check(
        "M: Перезвонить вам через неделю? | C: Да, наберите через неделю, только ве... | M: Алло?",
        Agreed,
        Some("P7D"),
        false,
    );
    let a = analyze_turns(&dialog("M: Напомнить вам через неделю?"));
    assert_eq!((a.consent, a.reason), (Unclear, Reason::NoClientTurns));
}

#[test]
fn asr_text() {
    check(
        "M: алло здравствуйте напомнить вам через две недели про замену масла | C: ну да да напомните через две недели",
        Agreed,
        Some("P14D"),
        false,
    );
    check(
        "M: добрый день перезвонить вам через месяц | C: не не надо спасибо до свидания",
        Declined,
        None,
        false,
    );
    check(
        "M: hi there can i call you back next week | C: uh yeah sure call me next week",
        Agreed,
        Some("P7D"),
        false,
    );
    check(
        "M: want me to call you in a couple weeks | C: um nah im good",
        Declined,
        None,
        false,
    );
    check(
        "M: напомнить вам через неделю | C: ну я не знаю надо подумать",
        Unclear,
        None,
        false,
    );
    // Split words are repaired in periods.
    check(
        "M: напомнить вам позже | C: давайте через три не дели",
        Agreed,
        Some("P21D"),
        false,
    );
}

#[test]
fn counter_proposals_and_periods() {
    check(
        "M: Напомнить вам через неделю? | C: Неделя — это рано. Давайте через месяц.",
        Agreed,
        Some("P1M"),
        false,
    );
    check(
        "M: Напомнить через месяц? | C: Лучше через полтора.",
        Agreed,
        Some("P45D"),
        false,
    );
    check(
        "M: Перезвонить через месяц? | C: Да, только не через месяц, а через три.",
        Agreed,
        Some("P3M"),
        false,
    );
    check(
        "M: Перезвонить вам через две недели? | C: Наберите минут через двадцать, я сейчас за рулём.",
        Agreed,
        Some("PT20M"),
        false,
    );
    check(
        "M: Напомнить послезавтра? | C: Да, давайте лучше завтра.",
        Agreed,
        Some("P1D"),
        false,
    );
    check(
        "M: Can I call you back in a month? | C: How about two weeks instead?",
        Agreed,
        Some("P14D"),
        false,
    );
    check(
        "M: Shall I follow up in a week? | C: Make it ten days.",
        Agreed,
        Some("P10D"),
        false,
    );
    check(
        "M: A reminder in 3 months? | C: Yes, please, in 3 months.",
        Agreed,
        Some("P3M"),
        false,
    );
    check(
        "M: Should I remind you in two weeks? | C: Sure, but not in two weeks.",
        Agreed,
        Some("P1M"),
        false,
    );
    check(
        "M: Перезвонить вам попозже? | C: Давайте через 2 часа.",
        Agreed,
        Some("PT2H"),
        false,
    );
    check(
        "M: Мы можем напомнить вам через год. | C: Ну напомните.",
        Agreed,
        Some("P1Y"),
        false,
    );
}

#[test]
fn opt_outs() {
    check(
        "M: Напомнить вам через неделю? | C: Больше не беспокойте меня.",
        Declined,
        None,
        true,
    );
    check(
        "M: Перезвонить? | C: Хватит мне названивать!",
        Declined,
        None,
        true,
    );
    check(
        "M: Напомнить про акцию? | C: Уберите меня из вашей базы.",
        Declined,
        None,
        true,
    );
    check(
        "M: Can I call you next week? | C: Please stop calling this number.",
        Declined,
        None,
        true,
    );
    check(
        "M: A reminder in a month? | C: No. Put me on your do not call list.",
        Declined,
        None,
        true,
    );
    check(
        "M: Should I call back later? | C: Don't ever call me again.",
        Declined,
        None,
        true,
    );
    check(
        "M: Want a reminder? | C: Forget my number, seriously.",
        Declined,
        None,
        true,
    );
    // Refusing a reminder is not an opt-out.
    check(
        "M: Напомнить через месяц? | C: Не напоминайте, я сам.",
        Declined,
        None,
        false,
    );
    check(
        "M: Can I remind you in a week? | C: Don't remind me, thanks.",
        Declined,
        None,
        false,
    );
    // An opt-out is final.
    check(
        "M: Напомнить через месяц? | C: Не звоните мне больше. | M: Даже про скидку? | C: Ну ладно, про скидку можно.",
        Declined,
        None,
        true,
    );
}

#[test]
fn someone_else_in_the_room() {
    check(
        "M: Напомнить вам о записи через неделю? | C: Да, Маш, сейчас! Извините, это я дочке. Нет, спасибо, не надо.",
        Declined,
        None,
        false,
    );
    check(
        "M: Should I remind you next week? | C: Yes, sweetie, in a minute! Sorry about that. Yes, please do.",
        Agreed,
        Some("P7D"),
        false,
    );
    check(
        "M: Напомнить вам через месяц? | C: Да иду я, иду! Простите, это я не вам.",
        Unclear,
        None,
        false,
    );
}

#[test]
fn evidence_quotes_the_client() {
    let a = analyze_turns(&dialog(
        "M: Напомнить через неделю? | C: Эээ... Ну ладно. Только лучше через две недели.",
    ));
    assert_eq!(a.remind_after, Some(Period::days(14)));
    assert!(a.evidence.iter().all(|e| e.turn == 1));
    assert!(
        a.evidence
            .iter()
            .any(|e| e.text.contains("через две недели"))
    );
    assert!(a.confidence > 0.5 && a.confidence <= 1.0);
}

#[test]
fn implicit_and_polite_answers() {
    // The need is gone: an answer of no.
    check(
        "M: Напомнить о распродаже обуви через неделю? | C: Да мы уже всё купили.",
        Declined,
        None,
        false,
    );
    check(
        "M: Can I remind you about the vaccine next month? | C: I already had it, thanks.",
        Declined,
        None,
        false,
    );
    // "That's okay" opening an answer declines; after a yes it agrees.
    check(
        "M: Would you like a reminder call in two weeks? | C: That's okay, I'll remember.",
        Declined,
        None,
        false,
    );
    check(
        "M: Would you like a reminder call in two weeks? | C: Yes, that's okay.",
        Agreed,
        Some("P14D"),
        false,
    );
    // Object pronouns inside set phrases.
    check(
        "M: Shall we keep you posted when it's back? | C: Yes, keep me posted.",
        Agreed,
        Some("P1M"),
        false,
    );
    // A yes followed by the client's own question still answers.
    check(
        "M: Can I call you in a week? | C: Sure, what time?",
        Agreed,
        Some("P7D"),
        false,
    );
    check(
        "M: Напомнить через неделю? | C: Да? А сколько это стоит?",
        Unclear,
        None,
        false,
    );
    // "Можно" as a modal is no yes.
    check(
        "M: Перезвонить через неделю? | C: А можно всё письмом?",
        Unclear,
        None,
        false,
    );
    check(
        "M: Перезвонить вам? | C: Можно через недели две.",
        Agreed,
        Some("P14D"),
        false,
    );
    check(
        "M: Добрый день, «Кредит-Сервис». | C: Я запрещаю вам звонить сюда.",
        Declined,
        None,
        true,
    );
}
