//! Scenarios as data: the deployment's TOML file that says, per number
//! called, what the router does with a call — built from a few blocks
//! (identify the caller, a menu, a dial chain with timeouts and business
//! hours per target, a message, number masking).
//!
//! The file is read and checked once at start: every step a scenario names
//! exists, every target is defined, every number is E.164, every duration
//! and hours range parses. A mistake stops the service with a message that
//! names the place, rather than a caller finding it at 3 a.m. See
//! `infra/call-router/scenarios.toml` for a complete example.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Deserialize;

use kit::local_time::SendWindow;
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::proto::events::v1::TargetRole;

/// The step name that ends the call.
pub const HANGUP: &str = "hangup";

/// A target resolved per call from the directory: the shop of the
/// caller's active order.
pub const ORDER_SHOP: &str = "order_shop";
/// A target resolved per call from the directory: the store line of the
/// calling courier.
pub const COURIER_STORE: &str = "courier_store";

/// The whole deployment: targets, lines and their scenarios, the fallback.
#[derive(Debug, Clone)]
pub struct Scenarios {
    pub voice: String,
    pub language: String,
    pub default_zone: TimeZone,
    pub targets: BTreeMap<String, Target>,
    /// Scenario name by the number called (E.164).
    pub lines: BTreeMap<String, String>,
    pub scenarios: BTreeMap<String, Scenario>,
    pub fallback: Fallback,
}

/// A number calls can be put through to.
#[derive(Debug, Clone)]
pub struct Target {
    pub number: PhoneNumber,
    pub role: TargetRole,
    /// When it takes calls; `None`: always.
    pub hours: Option<(SendWindow, TimeZone)>,
}

/// What the router answers when it cannot decide (slow store, error,
/// unknown state, a number with no line).
#[derive(Debug, Clone)]
pub struct Fallback {
    pub say: Option<String>,
    /// Tried in sequence.
    pub targets: Vec<(String, Duration)>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub start: String,
    pub steps: BTreeMap<String, Step>,
}

/// One block of a scenario.
#[derive(Debug, Clone)]
pub enum Step {
    /// Looks the caller up in the directory and goes on by who they are.
    Identify(Routes),
    /// Says something, then goes on.
    Say { text: String, then: String },
    /// Says a prompt and waits for one key; retries a few times.
    Menu {
        say: String,
        options: BTreeMap<String, String>,
        timeout: Duration,
        attempts: u32,
        invalid: Option<String>,
        otherwise: String,
        /// Where the call goes when the PBX cannot ask (Exolve's dynamic
        /// forwarding has no keypad); default `otherwise`.
        without_keypad: String,
    },
    /// Tries targets one after the other until one answers.
    Dial {
        say: Option<String>,
        chain: Vec<ChainEntry>,
        record: bool,
        /// When nobody answered.
        otherwise: String,
    },
    /// The masking line: asks for an order code and bridges the caller to
    /// the session's other party.
    Masking(Box<Masking>),
    /// Ends the call.
    Hangup,
}

/// Where an `identify` step goes, by who calls.
#[derive(Debug, Clone)]
pub struct Routes {
    pub client_with_order: String,
    pub unknown: String,
    pub shop: String,
    pub courier: String,
}

impl Routes {
    pub fn next(&self, kind: kit::proto::events::v1::CallerKind) -> &str {
        use kit::proto::events::v1::CallerKind;
        match kind {
            CallerKind::ClientWithOrder => &self.client_with_order,
            CallerKind::Shop => &self.shop,
            CallerKind::Courier => &self.courier,
            CallerKind::Unknown | CallerKind::Unspecified => &self.unknown,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// A target name, [`ORDER_SHOP`] or [`COURIER_STORE`].
    pub target: String,
    pub timeout: Duration,
    /// Said to the callee before the bridge.
    pub announce: Option<String>,
    /// Where to go when the target is closed (default: the next entry).
    pub when_closed: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Masking {
    pub code_digits: u32,
    pub attempts: u32,
    pub timeout: Duration,
    /// The step `#` leads to.
    pub operator: String,
    /// When the attempts are used up or the counterpart does not answer.
    pub otherwise: String,
    pub record: bool,
    pub dial_timeout: Duration,
    pub prompt: String,
    pub not_found: String,
    pub wrong_phone: String,
    pub announce_courier: String,
    pub announce_client: String,
    pub connecting: String,
}

/// Why the file was refused.
#[derive(Debug, thiserror::Error)]
#[error("scenarios: {0}")]
pub struct ScenarioError(pub String);

fn err(message: impl Into<String>) -> ScenarioError {
    ScenarioError(message.into())
}

// The file as written; `Scenarios` is what it means.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "default_voice")]
    voice: String,
    #[serde(default = "default_language")]
    language: String,
    #[serde(default = "default_zone")]
    default_time_zone: String,
    #[serde(default)]
    targets: BTreeMap<String, TargetFile>,
    #[serde(default)]
    lines: Vec<LineFile>,
    #[serde(default)]
    scenarios: BTreeMap<String, ScenarioFile>,
    fallback: FallbackFile,
}

fn default_voice() -> String {
    "alena".into()
}
fn default_language() -> String {
    "ru-RU".into()
}
fn default_zone() -> String {
    "Europe/Moscow".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    number: String,
    role: String,
    hours: Option<String>,
    time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineFile {
    number: String,
    scenario: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackFile {
    say: Option<String>,
    targets: Vec<String>,
    #[serde(default = "default_fallback_timeout")]
    timeout: String,
}

fn default_fallback_timeout() -> String {
    "30s".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    start: String,
    steps: BTreeMap<String, StepFile>,
}

#[derive(Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
enum StepFile {
    Identify {
        client_with_order: String,
        unknown: String,
        shop: String,
        courier: String,
    },
    Say {
        say: String,
        #[serde(default = "hangup")]
        then: String,
    },
    Menu {
        say: String,
        options: BTreeMap<String, String>,
        #[serde(default = "default_menu_timeout")]
        timeout: String,
        #[serde(default = "default_attempts")]
        attempts: u32,
        invalid: Option<String>,
        otherwise: String,
        without_keypad: Option<String>,
    },
    Dial {
        say: Option<String>,
        chain: Vec<ChainFile>,
        #[serde(default)]
        record: bool,
        #[serde(default = "hangup")]
        otherwise: String,
    },
    Masking {
        #[serde(default = "default_code_digits")]
        code_digits: u32,
        #[serde(default = "default_attempts")]
        attempts: u32,
        #[serde(default = "default_code_timeout")]
        timeout: String,
        operator: String,
        #[serde(default = "hangup")]
        otherwise: String,
        #[serde(default)]
        record: bool,
        #[serde(default = "default_dial_timeout")]
        dial_timeout: String,
        prompt: String,
        not_found: String,
        wrong_phone: String,
        announce_courier: String,
        announce_client: String,
        connecting: String,
    },
    Hangup,
}

fn hangup() -> String {
    HANGUP.into()
}
fn default_menu_timeout() -> String {
    "5s".into()
}
fn default_code_timeout() -> String {
    "10s".into()
}
fn default_dial_timeout() -> String {
    "30s".into()
}
fn default_attempts() -> u32 {
    3
}
fn default_code_digits() -> u32 {
    5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFile {
    target: String,
    #[serde(default = "default_dial_timeout")]
    timeout: String,
    announce: Option<String>,
    when_closed: Option<String>,
}

fn duration(text: &str, place: &str) -> Result<Duration, ScenarioError> {
    let d = kit::config::parse_duration(text).map_err(|e| err(format!("{place}: {e}")))?;
    if d.is_zero() {
        return Err(err(format!("{place}: must be longer than zero")));
    }
    Ok(d)
}

fn zone(name: &str, place: &str) -> Result<TimeZone, ScenarioError> {
    TimeZone::get(name).map_err(|_| err(format!("{place}: `{name}` is not an IANA time zone")))
}

/// A number as the file writes it, E.164 or national (+7 assumed).
pub fn phone(text: &str, place: &str) -> Result<PhoneNumber, ScenarioError> {
    PhoneNumber::parse(text, DefaultRegion::default())
        .map_err(|e| err(format!("{place}: `{text}` is not a phone number ({e})")))
}

/// The role a target's `role` names.
pub fn role(name: &str) -> Option<TargetRole> {
    Some(match name {
        "shop" => TargetRole::Shop,
        "office" => TargetRole::Office,
        "call_centre" => TargetRole::CallCentre,
        "counterpart" => TargetRole::Counterpart,
        "store" => TargetRole::Store,
        "operator" => TargetRole::Operator,
        "fallback" => TargetRole::Fallback,
        _ => return None,
    })
}

/// The name statistics use for a role.
pub fn role_name(role: TargetRole) -> &'static str {
    match role {
        TargetRole::Shop => "shop",
        TargetRole::Office => "office",
        TargetRole::CallCentre => "call_centre",
        TargetRole::Counterpart => "counterpart",
        TargetRole::Store => "store",
        TargetRole::Operator => "operator",
        TargetRole::Fallback => "fallback",
        TargetRole::Unspecified => "",
    }
}

/// Opening hours `HH:MM-HH:MM`.
pub fn hours(text: &str, place: &str) -> Result<SendWindow, ScenarioError> {
    text.parse::<SendWindow>()
        .map_err(|e| err(format!("{place}: `{text}`: {e}")))
}

impl Scenarios {
    /// Reads and checks a scenarios file.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let file: File = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let default_zone = zone(&file.default_time_zone, "default_time_zone")?;

        let mut targets = BTreeMap::new();
        for (name, t) in file.targets {
            let place = format!("targets.{name}");
            if name == ORDER_SHOP || name == COURIER_STORE {
                return Err(err(format!(
                    "{place}: `{name}` is taken by the target the directory gives per call"
                )));
            }
            let number = phone(&t.number, &format!("{place}.number"))?;
            let role = role(&t.role).ok_or_else(|| {
                err(format!(
                    "{place}.role: `{}` is not one of shop, office, call_centre, store, operator, fallback",
                    t.role
                ))
            })?;
            let hours = match &t.hours {
                None => None,
                Some(h) => {
                    let tz = match &t.time_zone {
                        Some(z) => zone(z, &format!("{place}.time_zone"))?,
                        None => default_zone.clone(),
                    };
                    Some((hours(h, &format!("{place}.hours"))?, tz))
                }
            };
            targets.insert(
                name,
                Target {
                    number,
                    role,
                    hours,
                },
            );
        }
        let known_target =
            |name: &str| targets.contains_key(name) || name == ORDER_SHOP || name == COURIER_STORE;

        let mut scenarios = BTreeMap::new();
        for (name, s) in file.scenarios {
            let mut steps = BTreeMap::new();
            for (step_name, step) in s.steps {
                let place = format!("scenarios.{name}.steps.{step_name}");
                if step_name == HANGUP {
                    return Err(err(format!(
                        "{place}: `{HANGUP}` is the built-in end of a call"
                    )));
                }
                let step = convert_step(step, &place, &known_target)?;
                steps.insert(step_name, step);
            }
            steps.insert(HANGUP.to_owned(), Step::Hangup);
            let scenario = Scenario {
                start: s.start,
                steps,
            };
            check_references(&name, &scenario)?;
            scenarios.insert(name, scenario);
        }

        let mut lines = BTreeMap::new();
        for (i, line) in file.lines.into_iter().enumerate() {
            let place = format!("lines[{i}]");
            let number = phone(&line.number, &format!("{place}.number"))?;
            if !scenarios.contains_key(&line.scenario) {
                return Err(err(format!(
                    "{place}.scenario: no scenario named `{}`",
                    line.scenario
                )));
            }
            if lines
                .insert(number.as_str().to_owned(), line.scenario)
                .is_some()
            {
                return Err(err(format!("{place}.number: {} has two lines", number)));
            }
        }

        let fallback_timeout = duration(&file.fallback.timeout, "fallback.timeout")?;
        if file.fallback.targets.is_empty() {
            return Err(err("fallback.targets: name at least one target"));
        }
        let mut fallback_targets = Vec::new();
        for t in &file.fallback.targets {
            if !targets.contains_key(t) {
                return Err(err(format!(
                    "fallback.targets: `{t}` is not a target (the fallback cannot depend on the directory)"
                )));
            }
            fallback_targets.push((t.clone(), fallback_timeout));
        }

        Ok(Self {
            voice: file.voice,
            language: file.language,
            default_zone,
            targets,
            lines,
            scenarios,
            fallback: Fallback {
                say: file.fallback.say,
                targets: fallback_targets,
            },
        })
    }

    /// Reads a scenarios file from disk.
    pub fn load(path: &std::path::Path) -> Result<Self, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| err(format!("{}: {}", path.display(), e.0)))
    }

    /// The scenario of a number called.
    pub fn line(&self, called: &PhoneNumber) -> Option<(&str, &Scenario)> {
        let name = self.lines.get(called.as_str())?;
        Some((name.as_str(), self.scenarios.get(name)?))
    }
}

fn convert_step(
    step: StepFile,
    place: &str,
    known_target: &dyn Fn(&str) -> bool,
) -> Result<Step, ScenarioError> {
    Ok(match step {
        StepFile::Identify {
            client_with_order,
            unknown,
            shop,
            courier,
        } => Step::Identify(Routes {
            client_with_order,
            unknown,
            shop,
            courier,
        }),
        StepFile::Say { say, then } => Step::Say { text: say, then },
        StepFile::Menu {
            say,
            options,
            timeout,
            attempts,
            invalid,
            otherwise,
            without_keypad,
        } => {
            if options.is_empty() {
                return Err(err(format!("{place}.options: a menu needs options")));
            }
            for key in options.keys() {
                if !matches!(key.as_bytes(), [b'0'..=b'9' | b'*' | b'#']) {
                    return Err(err(format!(
                        "{place}.options: `{key}` is not one key (0-9, * or #)"
                    )));
                }
            }
            if attempts == 0 {
                return Err(err(format!("{place}.attempts: at least 1")));
            }
            Step::Menu {
                say,
                options,
                timeout: duration(&timeout, &format!("{place}.timeout"))?,
                attempts,
                invalid,
                without_keypad: without_keypad.unwrap_or_else(|| otherwise.clone()),
                otherwise,
            }
        }
        StepFile::Dial {
            say,
            chain,
            record,
            otherwise,
        } => {
            if chain.is_empty() {
                return Err(err(format!("{place}.chain: name at least one target")));
            }
            let mut entries = Vec::new();
            for (i, c) in chain.into_iter().enumerate() {
                if !known_target(&c.target) {
                    return Err(err(format!(
                        "{place}.chain[{i}].target: no target named `{}`",
                        c.target
                    )));
                }
                entries.push(ChainEntry {
                    timeout: duration(&c.timeout, &format!("{place}.chain[{i}].timeout"))?,
                    target: c.target,
                    announce: c.announce,
                    when_closed: c.when_closed,
                });
            }
            Step::Dial {
                say,
                chain: entries,
                record,
                otherwise,
            }
        }
        StepFile::Masking {
            code_digits,
            attempts,
            timeout,
            operator,
            otherwise,
            record,
            dial_timeout,
            prompt,
            not_found,
            wrong_phone,
            announce_courier,
            announce_client,
            connecting,
        } => {
            if !(1..=12).contains(&code_digits) {
                return Err(err(format!("{place}.code_digits: 1 to 12")));
            }
            if attempts == 0 {
                return Err(err(format!("{place}.attempts: at least 1")));
            }
            Step::Masking(Box::new(Masking {
                code_digits,
                attempts,
                timeout: duration(&timeout, &format!("{place}.timeout"))?,
                operator,
                otherwise,
                record,
                dial_timeout: duration(&dial_timeout, &format!("{place}.dial_timeout"))?,
                prompt,
                not_found,
                wrong_phone,
                announce_courier,
                announce_client,
                connecting,
            }))
        }
        StepFile::Hangup => Step::Hangup,
    })
}

/// Every step a scenario goes to exists.
fn check_references(name: &str, scenario: &Scenario) -> Result<(), ScenarioError> {
    let exists = |to: &str, place: &str| {
        if scenario.steps.contains_key(to) {
            Ok(())
        } else {
            Err(err(format!(
                "scenarios.{name}.{place}: no step named `{to}`"
            )))
        }
    };
    exists(&scenario.start, "start")?;
    for (step_name, step) in &scenario.steps {
        let place = format!("steps.{step_name}");
        match step {
            Step::Identify(Routes {
                client_with_order,
                unknown,
                shop,
                courier,
            }) => {
                for to in [client_with_order, unknown, shop, courier] {
                    exists(to, &place)?;
                }
            }
            Step::Say { then, .. } => exists(then, &format!("{place}.then"))?,
            Step::Menu {
                options,
                otherwise,
                without_keypad,
                ..
            } => {
                for to in options.values() {
                    exists(to, &format!("{place}.options"))?;
                }
                exists(otherwise, &format!("{place}.otherwise"))?;
                exists(without_keypad, &format!("{place}.without_keypad"))?;
            }
            Step::Dial {
                chain, otherwise, ..
            } => {
                for entry in chain {
                    if let Some(to) = &entry.when_closed {
                        exists(to, &format!("{place}.chain.when_closed"))?;
                    }
                }
                exists(otherwise, &format!("{place}.otherwise"))?;
            }
            Step::Masking(m) => {
                exists(&m.operator, &format!("{place}.operator"))?;
                exists(&m.otherwise, &format!("{place}.otherwise"))?;
            }
            Step::Hangup => {}
        }
    }
    Ok(())
}

/// Fills `{name}` placeholders from `fields`; unknown ones stay as written.
pub fn fill(template: &str, fields: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in fields {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = include_str!("../../../infra/call-router/scenarios.toml");

    #[test]
    fn the_example_file_is_valid() {
        let s = Scenarios::parse(EXAMPLE).unwrap();
        assert!(s.scenarios.contains_key("marketplace"));
        assert!(s.scenarios.contains_key("masking"));
        assert_eq!(s.fallback.targets[0].0, "office");
    }

    fn refused(text: &str) -> String {
        Scenarios::parse(text).unwrap_err().0
    }

    const BASE: &str = r#"
        [fallback]
        targets = ["office"]
        [targets.office]
        number = "+74951230000"
        role = "office"
    "#;

    #[test]
    fn mistakes_are_named() {
        let unknown_step = format!(
            "{BASE}\n[[lines]]\nnumber = \"+74951110000\"\nscenario = \"s\"\n[scenarios.s]\nstart = \"menu\"\n[scenarios.s.steps.menu]\ndo = \"menu\"\nsay = \"hi\"\noptions = {{ \"1\" = \"nowhere\" }}\notherwise = \"hangup\"\n"
        );
        assert!(
            refused(&unknown_step)
                .contains("scenarios.s.steps.menu.options: no step named `nowhere`"),
            "{}",
            refused(&unknown_step)
        );
        let bad_target = format!(
            "{BASE}\n[scenarios.s]\nstart = \"d\"\n[scenarios.s.steps.d]\ndo = \"dial\"\nchain = [{{ target = \"shop\" }}]\n"
        );
        assert!(refused(&bad_target).contains("chain[0].target: no target named `shop`"));
        let bad_number = BASE.replace("+74951230000", "12");
        assert!(refused(&bad_number).contains("targets.office.number"));
        let bad_hours = format!("{BASE}hours = \"21:00-09:00\"\n");
        assert!(refused(&bad_hours).contains("targets.office.hours"));
        let bad_key = format!(
            "{BASE}\n[scenarios.s]\nstart = \"m\"\n[scenarios.s.steps.m]\ndo = \"menu\"\nsay = \"hi\"\noptions = {{ \"12\" = \"hangup\" }}\notherwise = \"hangup\"\n"
        );
        assert!(refused(&bad_key).contains("`12` is not one key"));
        let no_line_scenario =
            format!("{BASE}\n[[lines]]\nnumber = \"+74951110000\"\nscenario = \"nope\"\n");
        assert!(refused(&no_line_scenario).contains("lines[0].scenario: no scenario named `nope`"));
        let fallback_on_directory =
            BASE.replace("targets = [\"office\"]", "targets = [\"order_shop\"]");
        assert!(refused(&fallback_on_directory).contains("fallback.targets"));
        let unknown_field = format!("{BASE}colour = \"red\"\n");
        assert!(refused(&unknown_field).contains("colour"));
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(
            fill(
                "Заказ {order_id} для {client_name}, {x}",
                &[("order_id", "A-1"), ("client_name", "Анна")]
            ),
            "Заказ A-1 для Анна, {x}"
        );
    }
}
