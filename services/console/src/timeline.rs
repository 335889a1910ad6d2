//! Search and the timeline of one flow.
//!
//! Search takes what a manager has at hand — a phone number in any
//! spelling, a call, order, lead or reminder id, a stream name — and finds
//! the flows it appears in through the console's [`crate::index`]. A
//! flow's timeline is every event sharing its correlation id, read from the
//! event store in log order across services: the transcript with the
//! consent decision's evidence highlighted, the reminder, the SMS, each
//! with a link to its trace.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use kit::phone::{DefaultRegion, PhoneNumber};
use kit::proto::events::v1::Event;
use kit::proto::eventstore::v1::{Filter, ReadAllRequest};

use crate::auth::User;
use crate::index::contact_key;
use crate::page::{PageError, esc, frame, url, when_proto};
use crate::personal::{WITHHELD, mask_payload};

/// Most flows a search lists.
const MAX_RESULTS: i64 = 50;
/// Most events a timeline shows (a flow is a call or a lead: tens of events).
const MAX_EVENTS: usize = 1_000;

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    q: Option<String>,
}

/// The keys `q` may be.
fn keys_for(salt: &str, q: &str) -> Vec<String> {
    let mut keys: Vec<String> = ["call", "order", "lead", "reminder", "stream"]
        .iter()
        .map(|kind| format!("{kind}:{q}"))
        .collect();
    if let Ok(phone) = PhoneNumber::parse(q, DefaultRegion::default()) {
        keys.push(contact_key(salt, &phone));
    }
    keys
}

fn search_form(q: &str) -> String {
    format!(
        "<form method=\"get\" action=\"/search\" class=\"inline\" role=\"search\">
<label>Phone, call id, order, lead or reminder <input name=\"q\" value=\"{}\" size=\"40\" required></label>
<button type=\"submit\">Search</button></form>",
        esc(q)
    )
}

/// GET /search?q=
pub async fn search(
    user: User,
    State(state): State<crate::State>,
    Query(query): Query<SearchQuery>,
) -> Result<Response, PageError> {
    let q = query.q.unwrap_or_default().trim().to_owned();
    if q.is_empty() {
        return Ok(frame(&user, "Timeline", "/search", &search_form("")).into_response());
    }
    if q.len() > 200 {
        return Err(PageError::bad_request("a search of at most 200 characters"));
    }
    let rows = state
        .pool
        .get()
        .await?
        .query(
            "SELECT f.correlation_id, f.first_type, f.first_stream, f.started_at, f.last_at
               FROM console.flows f
              WHERE f.correlation_id IN (SELECT correlation_id FROM console.search_keys WHERE key = ANY($1))
              ORDER BY f.started_at DESC NULLS LAST LIMIT $2",
            &[&keys_for(&state.contact_salt, &q), &MAX_RESULTS],
        )
        .await?;
    if rows.len() == 1 {
        let id: Uuid = rows[0].get(0);
        return Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/timeline/{id}"))],
        )
            .into_response());
    }
    let list = if rows.is_empty() {
        format!(
            "<p class=\"empty\" role=\"status\">Nothing found for “{}”.</p>",
            esc(&q)
        )
    } else {
        let items: String = rows
            .iter()
            .map(|r| {
                let id: Uuid = r.get(0);
                let started: Option<std::time::SystemTime> = r.get(3);
                format!(
                    "<tr><td><a href=\"/timeline/{id}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                    esc(r.get::<_, &str>(1)),
                    esc(r.get::<_, &str>(2)),
                    crate::page::when(started.and_then(|s| jiff::Timestamp::try_from(s).ok())),
                )
            })
            .collect();
        format!(
            "<table><thead><tr><th>Began with</th><th>Stream</th><th>At</th></tr></thead><tbody>{items}</tbody></table>"
        )
    };
    Ok(frame(
        &user,
        "Timeline",
        "/search",
        &format!("{}{list}", search_form(&q)),
    )
    .into_response())
}

/// The events of a flow, in log order.
async fn flow_events(state: &crate::State, flow: Uuid) -> Result<Vec<Event>, PageError> {
    let first: Option<i64> = state
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT first_position FROM console.flows WHERE correlation_id = $1",
            &[&flow],
        )
        .await?
        .map(|r| r.get(0));
    let Some(first) = first else {
        return Err(PageError::not_found(format!(
            "no flow {flow} in the log (yet)"
        )));
    };
    let request = ReadAllRequest {
        after_position: (first as u64).saturating_sub(1),
        filter: Some(Filter {
            correlation_ids: vec![flow.to_string()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut reads = state
        .store
        .grpc()
        .read_all(request)
        .await
        .map_err(|e| PageError::upstream("the event store", e.message()))?
        .into_inner();
    let mut events = Vec::new();
    while let Some(batch) = reads.next().await {
        let batch = batch.map_err(|e| PageError::upstream("the event store", e.message()))?;
        events.extend(
            batch
                .events
                .into_iter()
                .map(|e| kit::upcast::registry().upcast(e)),
        );
        if events.len() >= MAX_EVENTS {
            events.truncate(MAX_EVENTS);
            break;
        }
    }
    Ok(events)
}

/// `00-<trace id>-<span id>-<flags>` → the trace id.
fn trace_id(event: &Event) -> Option<String> {
    let parent = &event.trace.as_ref()?.traceparent;
    let id = parent.split('-').nth(1)?;
    (id.len() == 32 && id != "0".repeat(32)).then(|| id.to_owned())
}

/// `text` with every piece of `evidence` found in it marked.
fn highlight(text: &str, evidence: &[String]) -> String {
    let lower = text.to_lowercase();
    // Byte ranges of `text` to mark; lowercase may change byte lengths, so
    // only ranges that are character boundaries in both are used.
    let mut ranges: Vec<(usize, usize)> = evidence
        .iter()
        .filter(|e| e.trim().chars().count() >= 2)
        .filter_map(|e| {
            let needle = e.trim().to_lowercase();
            let start = lower.find(&needle)?;
            let end = start + needle.len();
            (text.is_char_boundary(start)
                && text.is_char_boundary(end)
                && lower.len() == text.len())
            .then_some((start, end))
        })
        .collect();
    ranges.sort();
    let mut out = String::new();
    let mut at = 0;
    for (start, end) in ranges {
        if start < at {
            continue;
        }
        out.push_str(&esc(&text[at..start]));
        out.push_str(&format!("<mark>{}</mark>", esc(&text[start..end])));
        at = end;
    }
    out.push_str(&esc(&text[at..]));
    out
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn transcript(payload: &Value, evidence: &[String]) -> String {
    let turns = payload
        .get("turns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let lines: String = turns
        .iter()
        .map(|turn| {
            let who = match turn.get("role").and_then(Value::as_str) {
                Some("SPEAKER_ROLE_CLIENT") => "Client",
                Some("SPEAKER_ROLE_MANAGER") => "Manager",
                _ => "Speaker",
            };
            let text = turn.get("text").and_then(Value::as_str).unwrap_or("");
            format!(
                "<li><span class=\"speaker\">{who}</span> {}</li>",
                if text == WITHHELD {
                    esc(text)
                } else {
                    highlight(text, evidence)
                }
            )
        })
        .collect();
    format!("<ol class=\"transcript\" data-testid=\"transcript\">{lines}</ol>")
}

fn consent(payload: &Value) -> String {
    let decision = payload
        .get("decision")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim_start_matches("CONSENT_DECISION_")
        .to_lowercase();
    let evidence: String = strings(payload.get("evidence"))
        .iter()
        .map(|e| format!("<li><mark>{}</mark></li>", esc(e)))
        .collect();
    let text = |f: &str| esc(payload.get(f).and_then(Value::as_str).unwrap_or(""));
    format!(
        "<div class=\"consent\" data-testid=\"consent\"><p>Decision: <strong class=\"decision {decision}\" data-decision=\"{decision}\">{decision}</strong>\
         · confidence {:.2} · remind after {} · opt-out {}</p><p>Reason: {}</p>\
         <p>Evidence:</p><ul class=\"evidence\" data-testid=\"evidence\">{evidence}</ul></div>",
        payload
            .get("confidence")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        text("remind_after"),
        payload
            .get("opt_out")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        text("reason"),
    )
}

/// The fields of a payload worth showing: set ones, as `name: value`.
fn fields(payload: &Value) -> String {
    let Value::Object(map) = payload else {
        return String::new();
    };
    let items: String = map
        .iter()
        .filter(|(_, v)| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty() && s != "0",
            Value::Array(a) => !a.is_empty(),
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::Object(o) => !o.is_empty(),
        })
        .map(|(k, v)| {
            let shown = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("<dt>{}</dt><dd>{}</dd>", esc(k), esc(&shown))
        })
        .collect();
    format!("<dl class=\"fields\">{items}</dl>")
}

/// GET /timeline/{correlation_id}
pub async fn page(
    user: User,
    State(state): State<crate::State>,
    Path(flow): Path<String>,
) -> Result<Html<String>, PageError> {
    let flow: Uuid = flow
        .parse()
        .map_err(|_| PageError::bad_request(format!("`{flow}` is not a flow id (a UUID)")))?;
    let events = flow_events(&state, flow).await?;
    let mut payloads: Vec<Option<Value>> = events
        .iter()
        .map(|e| {
            let mut payload = kit::json::payload(e)?;
            if !user.can_change() {
                mask_payload(&e.r#type, &mut payload);
            }
            Some(payload)
        })
        .collect();
    // The consent decision's evidence, to mark in the transcript.
    let evidence: Vec<String> = events
        .iter()
        .zip(&payloads)
        .filter(|(e, _)| e.r#type == "ConsentAnalyzed")
        .flat_map(|(_, p)| strings(p.as_ref().and_then(|p| p.get("evidence"))))
        .filter(|e| e != WITHHELD)
        .collect();
    let rows: String = events
        .iter()
        .zip(payloads.iter_mut())
        .map(|(event, payload)| {
            let detail = match (event.r#type.as_str(), payload.as_ref()) {
                ("TranscriptReady", Some(p)) => {
                    let mut rest = p.clone();
                    if let Value::Object(m) = &mut rest {
                        m.remove("turns");
                    }
                    format!("{}{}", transcript(p, &evidence), fields(&rest))
                }
                ("ConsentAnalyzed", Some(p)) => consent(p),
                (_, Some(p)) => fields(p),
                (_, None) => "<em>payload of a type this console does not know</em>".into(),
            };
            let trace = match (trace_id(event), state.trace_url.is_empty()) {
                (Some(id), false) => format!(
                    "<a href=\"{}\" class=\"trace\">trace</a>",
                    esc(&state.trace_url.replace("{trace_id}", &id))
                ),
                (Some(id), true) => format!("<code class=\"trace\">{}</code>", &id[..8]),
                (None, _) => String::new(),
            };
            format!(
                "<tr data-type=\"{ty}\"><td class=\"at\">{at}<br><span class=\"muted\">#{pos}</span></td>\
                 <td><strong>{ty}</strong><br><span class=\"muted\">{stream} · {producer}</span><br>{trace}</td><td>{detail}</td></tr>",
                ty = esc(&event.r#type),
                at = when_proto(&event.occurred_at),
                pos = event.position,
                stream = esc(&event.stream),
                producer = esc(&event.producer),
            )
        })
        .collect();
    let masked = if user.can_change() {
        ""
    } else {
        "<p class=\"notice\">Personal data is masked for viewers.</p>"
    };
    let body = format!(
        "{}{masked}<p>Flow <code>{flow}</code> · {} events · <a href=\"/live?correlation={}\">follow live</a></p>
<table class=\"timeline\"><thead><tr><th>When</th><th>Event</th><th>Details</th></tr></thead><tbody>{rows}</tbody></table>",
        search_form(""),
        events.len(),
        url(&flow.to_string()),
    );
    Ok(frame(&user, "Timeline", "/search", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_marked_in_the_transcript_case_blind() {
        let marked = highlight(
            "Хорошо, напомните через месяц <пожалуйста>",
            &["Напомните через месяц".into()],
        );
        assert_eq!(
            marked,
            "Хорошо, <mark>напомните через месяц</mark> &lt;пожалуйста&gt;"
        );
    }

    #[test]
    fn a_phone_searches_by_its_contact_in_any_spelling() {
        let a = keys_for("salt", "8 (916) 123-45-67");
        let b = keys_for("salt", "+79161234567");
        assert_eq!(a.last(), b.last());
        assert!(a.last().unwrap().starts_with("contact:contact-"));
        assert!(a.contains(&"call:8 (916) 123-45-67".to_owned()));
    }
}
