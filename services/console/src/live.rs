//! Live events: a tail of the log, filtered by category, type, stream or
//! flow. The page opens a server-sent event stream fed by the event
//! store's `Subscribe`, starting a little before the head so the page is
//! never empty; personal data is masked for viewers as everywhere.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Html;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use kit::proto::eventstore::v1::{Filter, SubscribeRequest};

use crate::auth::User;
use crate::page::{PageError, esc, frame, url};
use crate::personal::mask_payload;

/// How far back the tail starts.
const BACKLOG: u64 = 50;

#[derive(Deserialize, Default, Clone)]
pub struct LiveQuery {
    category: Option<String>,
    r#type: Option<String>,
    stream: Option<String>,
    correlation: Option<String>,
}

fn list(value: &Option<String>) -> Vec<String> {
    value
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl LiveQuery {
    fn filter(&self) -> Result<Filter, PageError> {
        let correlation_ids = list(&self.correlation);
        if let Some(bad) = correlation_ids
            .iter()
            .find(|c| uuid::Uuid::parse_str(c).is_err())
        {
            return Err(PageError::bad_request(format!(
                "correlation `{bad}` is not a UUID"
            )));
        }
        Ok(Filter {
            categories: list(&self.category),
            types: list(&self.r#type),
            stream_prefixes: list(&self.stream),
            correlation_ids,
            ..Default::default()
        })
    }

    fn query_string(&self) -> String {
        [
            ("category", &self.category),
            ("type", &self.r#type),
            ("stream", &self.stream),
            ("correlation", &self.correlation),
        ]
        .iter()
        .filter_map(|(k, v)| {
            v.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", url(v)))
        })
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// GET /live
pub async fn page(user: User, Query(query): Query<LiveQuery>) -> Result<Html<String>, PageError> {
    query.filter()?;
    let field = |name: &str, label: &str, value: &Option<String>, hint: &str| {
        format!(
            "<label>{label} <input name=\"{name}\" value=\"{}\" placeholder=\"{hint}\"></label>",
            esc(value.as_deref().unwrap_or(""))
        )
    };
    let body = format!(
        "<form method=\"get\" action=\"/live\" class=\"inline\">{}{}{}{}<button type=\"submit\">Filter</button></form>
<p class=\"muted\" id=\"live-status\" role=\"status\">connecting…</p>
<table class=\"live\"><thead><tr><th>#</th><th>Recorded</th><th>Type</th><th>Stream</th><th>Producer</th><th>Payload</th></tr></thead>
<tbody id=\"live-events\" data-testid=\"live-events\"></tbody></table>
<script>
// Newest first; older rows fall off so a long-open page stays light.
const body = document.getElementById('live-events');
const status = document.getElementById('live-status');
const source = new EventSource('/live/events?{qs}');
source.onopen = () => {{ status.textContent = 'live'; }};
source.onerror = () => {{ status.textContent = 'reconnecting…'; }};
source.onmessage = (m) => {{
  const e = JSON.parse(m.data);
  const row = document.createElement('tr');
  row.dataset.type = e.type;
  for (const v of [e.position, e.recorded_at, e.type, e.stream, e.producer, e.payload]) {{
    const cell = document.createElement('td');
    cell.textContent = v;
    row.appendChild(cell);
  }}
  body.prepend(row);
  while (body.rows.length > 300) body.deleteRow(-1);
}};
</script>",
        field("category", "Category", &query.category, "call, lead, reminder"),
        field("type", "Type", &query.r#type, "CallCompleted, SmsSent"),
        field("stream", "Stream prefix", &query.stream, "call-exolve-"),
        field("correlation", "Flow", &query.correlation, "correlation id"),
        qs = esc(&query.query_string()),
    );
    Ok(frame(&user, "Live events", "/live", &body))
}

/// GET /live/events — the server-sent event stream.
pub async fn events(
    user: User,
    State(state): State<crate::State>,
    Query(query): Query<LiveQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, PageError> {
    let filter = query.filter()?;
    let mut store = state.store.grpc();
    // A browser that reconnects names the last event it got: go on from there.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let after = match resume {
        Some(position) => position,
        None => store
            .head(())
            .await
            .map_err(|e| PageError::upstream("the event store", e.message()))?
            .into_inner()
            .position
            .saturating_sub(BACKLOG),
    };
    let request = SubscribeRequest {
        after_position: after,
        filter: Some(filter),
        batch_size: 100,
    };
    let subscription = store
        .subscribe(request)
        .await
        .map_err(|e| PageError::upstream("the event store", e.message()))?
        .into_inner();
    let viewer = !user.can_change();
    let stopping = state.stopping.clone().cancelled_owned();
    let stream = subscription
        // An open page must not hold the server up when it stops.
        .take_until(stopping)
        .take_while(|m| futures::future::ready(m.is_ok()))
        .flat_map(move |message| {
            let events = message.map(|m| m.events).unwrap_or_default();
            futures::stream::iter(events.into_iter().map(move |event| {
                let event = kit::upcast::registry().upcast(event);
                let mut payload = kit::json::payload(&event).unwrap_or_default();
                if viewer {
                    mask_payload(&event.r#type, &mut payload);
                }
                let data = json!({
                    "position": event.position,
                    "recorded_at": crate::page::when_proto(&event.recorded_at),
                    "type": event.r#type,
                    "stream": event.stream,
                    "producer": event.producer,
                    "payload": payload.to_string(),
                });
                Ok(SseEvent::default()
                    .id(event.position.to_string())
                    .data(data.to_string()))
            }))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
