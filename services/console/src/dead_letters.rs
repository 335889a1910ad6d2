//! Dead letters: messages a consumer gave up on, with the reason; an
//! operator asks for a retry or discards one. Both are request events in
//! the parked message's stream (`deadletter-<consumer>`) naming the
//! operator; the consumer's own service carries out a retry and records
//! how it went (`DeadLetterRetried`), which the list then shows.

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, Response};
use serde::Deserialize;

use kit::events::new_event;
use kit::proto::events::v1::{DeadLetterDiscarded, DeadLetterRetryRequested};
use kit::store_client::Expected;

use crate::auth::User;
use crate::page::{PageError, back, esc, frame, notice, url, when};

/// Which dead letters a view shows.
const VIEWS: &[(&str, &str, &[&str])] = &[
    (
        "open",
        "needing attention",
        &["parked", "retry_requested", "retry_failed"],
    ),
    ("retried", "retried", &["retried"]),
    ("discarded", "discarded", &["discarded"]),
    (
        "all",
        "all",
        &[
            "parked",
            "retry_requested",
            "retry_failed",
            "retried",
            "discarded",
        ],
    ),
];

#[derive(Deserialize, Default)]
pub struct ListQuery {
    view: Option<String>,
    done: Option<String>,
    failed: Option<String>,
}

fn time(at: Option<SystemTime>) -> String {
    when(at.and_then(|t| jiff::Timestamp::try_from(t).ok()))
}

/// GET /dead-letters
pub async fn page(
    user: User,
    State(state): State<crate::State>,
    Query(query): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let view = query.view.as_deref().unwrap_or("open");
    let Some((_, _, states)) = VIEWS.iter().find(|(name, _, _)| *name == view) else {
        return Err(PageError::bad_request(format!(
            "view `{view}`: one of open, retried, discarded, all"
        )));
    };
    let states: Vec<&str> = states.to_vec();
    let rows = state
        .pool
        .get()
        .await?
        .query(
            "SELECT consumer, event_id, event_type, event_stream, event_position, deliveries,
                    reason, parked_at, state, changed_by, detail, changed_at
               FROM console.dead_letters WHERE state = ANY($1)
              ORDER BY parked_at NULLS LAST, consumer, event_id LIMIT 500",
            &[&states],
        )
        .await?;
    let items: String = rows
        .iter()
        .map(|r| {
            let consumer: &str = r.get(0);
            let event_id: &str = r.get(1);
            let state_name: &str = r.get(8);
            let actionable = matches!(state_name, "parked" | "retry_failed");
            let actions = if user.can_change() && actionable {
                let base = format!("/dead-letters/{}/{}", url(consumer), url(event_id));
                format!(
                    "<form method=\"post\" action=\"{base}/retry\" class=\"inline\">\
                     <button type=\"submit\" data-action=\"retry\">Retry</button></form>\
                     <form method=\"post\" action=\"{base}/discard\" class=\"inline\">\
                     <input name=\"reason\" placeholder=\"why\" aria-label=\"why discard\">\
                     <button type=\"submit\" data-action=\"discard\">Discard</button></form>"
                )
            } else {
                String::new()
            };
            let changed_by: Option<&str> = r.get(9);
            let detail: Option<&str> = r.get(10);
            let outcome = match changed_by.filter(|b| !b.is_empty()) {
                Some(by) => format!(
                    "<br><span class=\"muted\">by {} at {}{}</span>",
                    esc(by),
                    time(r.get(11)),
                    detail
                        .filter(|d| !d.is_empty())
                        .map(|d| format!(": {}", esc(d)))
                        .unwrap_or_default()
                ),
                None => detail
                    .filter(|d| !d.is_empty())
                    .map(|d| format!("<br><span class=\"muted\">{}</span>", esc(d)))
                    .unwrap_or_default(),
            };
            let stream: &str = r.get(3);
            format!(
                "<tr data-dead-letter=\"{event_id}\" data-state=\"{state_name}\"><td>{parked}</td><td>{consumer}</td>\
                 <td>{ty}<br><a href=\"/search?q={stream_url}\" class=\"muted\">{stream}</a> #{position}</td>\
                 <td>{deliveries}</td><td>{reason}</td><td><span class=\"badge {state_name}\">{state_label}</span>{outcome}</td><td>{actions}</td></tr>",
                event_id = esc(event_id),
                parked = time(r.get(7)),
                consumer = esc(consumer),
                ty = esc(r.get::<_, &str>(2)),
                stream_url = url(stream),
                stream = esc(stream),
                position = r.get::<_, i64>(4),
                deliveries = r.get::<_, i64>(5),
                reason = esc(r.get::<_, &str>(6)),
                state_label = state_name.replace('_', " "),
            )
        })
        .collect();
    let tabs: String = VIEWS
        .iter()
        .map(|(name, label, _)| {
            let here = if *name == view {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"/dead-letters?view={name}\"{here}>{label}</a>")
        })
        .collect::<Vec<_>>()
        .join(" · ");
    let table = if items.is_empty() {
        "<p class=\"empty\">No dead letters here.</p>".to_owned()
    } else {
        format!(
            "<table data-testid=\"dead-letters\"><thead><tr><th>Parked</th><th>Consumer</th><th>Message</th><th>Deliveries</th><th>Reason</th><th>State</th><th></th></tr></thead><tbody>{items}</tbody></table>"
        )
    };
    let body = format!(
        "{}<p class=\"tabs\">{tabs}</p>{table}",
        notice(query.done.as_deref(), query.failed.as_deref())
    );
    Ok(frame(&user, "Dead letters", "/dead-letters", &body))
}

/// The state of a dead letter; 404 when there is none.
async fn current_state(
    state: &crate::State,
    consumer: &str,
    event_id: &str,
) -> Result<String, PageError> {
    state
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT state FROM console.dead_letters WHERE consumer = $1 AND event_id = $2",
            &[&consumer, &event_id],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| {
            PageError::not_found(format!("no dead letter {event_id} of consumer {consumer}"))
        })
}

/// Refuses a request on a dead letter that is not waiting for one.
async fn must_be_open(
    state: &crate::State,
    consumer: &str,
    event_id: &str,
) -> Result<(), PageError> {
    let current = current_state(state, consumer, event_id).await?;
    if matches!(current.as_str(), "parked" | "retry_failed") {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::CONFLICT,
            format!(
                "dead letter {event_id} is {}: nothing to do",
                current.replace('_', " ")
            ),
        ))
    }
}

async fn record(
    state: &crate::State,
    consumer: &str,
    event: kit::proto::eventstore::v1::NewEvent,
) -> Result<(), PageError> {
    let appended = state
        .store
        .append(
            &format!("deadletter-{consumer}"),
            Expected::Any,
            vec![event],
        )
        .await
        .map_err(|e| PageError::upstream("the event store", e))?;
    let position = appended.positions.last().copied().unwrap_or(0);
    crate::index::settle(&state.pool, position).await;
    Ok(())
}

/// POST /dead-letters/{consumer}/{event_id}/retry
pub async fn retry(
    user: User,
    State(state): State<crate::State>,
    Path((consumer, event_id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    user.must_change()?;
    must_be_open(&state, &consumer, &event_id).await?;
    let request = DeadLetterRetryRequested {
        consumer: consumer.clone(),
        event_id: event_id.clone(),
        requested_by: user.name.clone(),
        reason: "retry asked in the console".into(),
    };
    record(
        &state,
        &consumer,
        new_event(uuid::Uuid::new_v4(), Some(state.clock.now()), &request),
    )
    .await?;
    Ok(back(
        "/dead-letters",
        Ok(format!(
            "Retry of {event_id} asked of {consumer}; its outcome shows here."
        )),
    ))
}

#[derive(Deserialize)]
pub struct DiscardForm {
    #[serde(default)]
    reason: String,
}

/// POST /dead-letters/{consumer}/{event_id}/discard
pub async fn discard(
    user: User,
    State(state): State<crate::State>,
    Path((consumer, event_id)): Path<(String, String)>,
    axum::Form(form): axum::Form<DiscardForm>,
) -> Result<Response, PageError> {
    user.must_change()?;
    if form.reason.len() > 500 {
        return Err(PageError::bad_request("reason: at most 500 characters"));
    }
    must_be_open(&state, &consumer, &event_id).await?;
    let discarded = DeadLetterDiscarded {
        consumer: consumer.clone(),
        event_id: event_id.clone(),
        requested_by: user.name.clone(),
        reason: if form.reason.trim().is_empty() {
            "discarded in the console".into()
        } else {
            form.reason.trim().to_owned()
        },
    };
    record(
        &state,
        &consumer,
        new_event(uuid::Uuid::new_v4(), Some(state.clock.now()), &discarded),
    )
    .await?;
    Ok(back("/dead-letters", Ok(format!("{event_id} discarded."))))
}
