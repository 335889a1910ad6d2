//! Reminders: pending, due, sent, failed, cancelled — filtered by state and
//! phone — and, for operators, cancel or move one. Reminders and changes
//! go through the scheduler's gRPC API (which records each change as an
//! event naming the operator); whether a due reminder's SMS went out comes
//! from the analysts' read model.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{Html, Response};
use serde::Deserialize;

use kit::proto::reminders::v1::{
    CancelRequest, ListRequest, Reminder, ReminderState, RescheduleRequest,
};

use crate::auth::User;
use crate::page::{PageError, back, esc, frame, notice, url, when_proto};
use crate::personal::phone_for;

/// Reminders a page shows.
const PAGE_SIZE: u32 = 200;

/// What the filter offers: the scheduler's states, and for due reminders
/// what became of their SMS.
const FILTERS: &[(&str, &str)] = &[
    ("", "all"),
    ("pending", "pending"),
    ("due", "due"),
    ("sent", "SMS sent"),
    ("failed", "SMS failed"),
    ("cancelled", "cancelled"),
    ("expired", "expired"),
];

#[derive(Deserialize, Default)]
pub struct ListQuery {
    state: Option<String>,
    phone: Option<String>,
    done: Option<String>,
    failed: Option<String>,
}

fn states_for(filter: &str) -> Result<Vec<i32>, PageError> {
    let state = match filter {
        "" => return Ok(Vec::new()),
        "pending" => ReminderState::Pending,
        "due" | "sent" | "failed" => ReminderState::Due,
        "cancelled" => ReminderState::Cancelled,
        "expired" => ReminderState::Expired,
        other => {
            return Err(PageError::bad_request(format!(
                "state `{other}`: one of pending, due, sent, failed, cancelled, expired"
            )));
        }
    };
    Ok(vec![state as i32])
}

fn state_name(reminder: &Reminder) -> &'static str {
    match ReminderState::try_from(reminder.state).unwrap_or(ReminderState::Unspecified) {
        ReminderState::Pending => "pending",
        ReminderState::Due => "due",
        ReminderState::Cancelled => "cancelled",
        ReminderState::Expired => "expired",
        ReminderState::Unspecified => "unknown",
    }
}

/// The latest SMS status of each reminder (`requested`, `sent`,
/// `delivered`, `undelivered`, `failed`).
async fn sms_status(
    pool: &deadpool_postgres::Pool,
    ids: &[String],
) -> Result<HashMap<String, String>, PageError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT DISTINCT ON (reminder_id) reminder_id, status FROM analytics.sms
              WHERE reminder_id = ANY($1) ORDER BY reminder_id, requested_at DESC NULLS LAST",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn sms_matches(filter: &str, status: Option<&str>) -> bool {
    match filter {
        "sent" => matches!(status, Some("sent" | "delivered")),
        "failed" => matches!(status, Some("failed" | "undelivered")),
        _ => true,
    }
}

/// GET /reminders
pub async fn page(
    user: User,
    State(state): State<crate::State>,
    Query(query): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let filter = query.state.clone().unwrap_or_default();
    let phone = query.phone.clone().unwrap_or_default().trim().to_owned();
    let request = ListRequest {
        phone: phone.clone(),
        states: states_for(&filter)?,
        page_size: PAGE_SIZE,
        ..Default::default()
    };
    let reminders = match state.reminders.clone().list(request).await {
        Ok(r) => r.into_inner().reminders,
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            return Err(PageError::bad_request(status.message().to_owned()));
        }
        Err(status) => {
            return Err(PageError::upstream(
                "the reminder scheduler",
                status.message(),
            ));
        }
    };
    let ids: Vec<String> = reminders.iter().map(|r| r.reminder_id.clone()).collect();
    let sms = sms_status(&state.pool, &ids).await?;
    let rows: String = reminders
        .iter()
        .filter(|r| sms_matches(&filter, sms.get(&r.reminder_id).map(String::as_str)))
        .map(|r| row(&user, r, sms.get(&r.reminder_id).map(String::as_str)))
        .collect();
    let options: String = FILTERS
        .iter()
        .map(|(value, label)| {
            let selected = if *value == filter { " selected" } else { "" };
            format!("<option value=\"{value}\"{selected}>{label}</option>")
        })
        .collect();
    let table = if rows.is_empty() {
        "<p class=\"empty\">No reminders match.</p>".to_owned()
    } else {
        format!(
            "<table data-testid=\"reminders\"><thead><tr><th>Due</th><th>Phone</th><th>State</th><th>SMS</th><th>From</th><th>Text</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    let body = format!(
        "{}<form method=\"get\" action=\"/reminders\" class=\"inline\">
<label>State <select name=\"state\">{options}</select></label>
<label>Phone <input name=\"phone\" value=\"{}\"></label>
<button type=\"submit\">Filter</button></form>{table}",
        notice(query.done.as_deref(), query.failed.as_deref()),
        esc(&phone),
    );
    Ok(frame(&user, "Reminders", "/reminders", &body))
}

fn row(user: &User, r: &Reminder, sms: Option<&str>) -> String {
    let state = state_name(r);
    let from = if r.call_id.is_empty() {
        format!("{} by {}", esc(&r.source), esc(&r.scheduled_by))
    } else {
        format!(
            "<a href=\"/search?q={}\">call {}</a>",
            url(&r.call_id),
            esc(&r.call_id)
        )
    };
    let text = if user.can_change() {
        esc(&r.text)
    } else {
        crate::personal::WITHHELD.into()
    };
    let actions = if user.can_change() && state == "pending" {
        let id = url(&r.reminder_id);
        format!(
            "<form method=\"post\" action=\"/reminders/{id}/cancel\" class=\"inline\">\
             <input name=\"reason\" placeholder=\"why\" aria-label=\"why cancel\">\
             <button type=\"submit\" data-action=\"cancel\">Cancel</button></form>\
             <form method=\"post\" action=\"/reminders/{id}/reschedule\" class=\"inline\">\
             <input type=\"datetime-local\" name=\"due_at\" required aria-label=\"new time (UTC)\">\
             <button type=\"submit\" data-action=\"reschedule\">Move</button></form>"
        )
    } else {
        String::new()
    };
    format!(
        "<tr data-reminder=\"{id}\" data-state=\"{state}\"><td>{due}<br><span class=\"muted\">{zone}</span></td><td>{phone}</td>\
         <td><span class=\"badge {state}\">{state}</span></td><td>{sms}</td><td>{from}</td><td>{text}</td><td>{actions}</td></tr>",
        id = esc(&r.reminder_id),
        due = when_proto(&r.due_at),
        zone = esc(&r.time_zone),
        phone = esc(&phone_for(user, &r.phone)),
        sms = esc(sms.unwrap_or("—")),
    )
}

#[derive(Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    reason: String,
}

/// POST /reminders/{id}/cancel
pub async fn cancel(
    user: User,
    State(state): State<crate::State>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CancelForm>,
) -> Result<Response, PageError> {
    user.must_change()?;
    let reason = if form.reason.trim().is_empty() {
        "cancelled in the console".to_owned()
    } else {
        form.reason.trim().to_owned()
    };
    let request = CancelRequest {
        reminder_id: id.clone(),
        requested_by: user.name.clone(),
        reason,
    };
    let outcome = match state.reminders.clone().cancel(request).await {
        Ok(_) => Ok(format!("Reminder {id} cancelled.")),
        Err(status) => return Err(refusal(&id, status)),
    };
    Ok(back("/reminders", outcome))
}

#[derive(Deserialize)]
pub struct RescheduleForm {
    /// `YYYY-MM-DDTHH:MM` (a `datetime-local` field), read as UTC.
    due_at: String,
    #[serde(default)]
    reason: String,
}

/// POST /reminders/{id}/reschedule
pub async fn reschedule(
    user: User,
    State(state): State<crate::State>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<RescheduleForm>,
) -> Result<Response, PageError> {
    user.must_change()?;
    let due: jiff::civil::DateTime = form.due_at.trim().parse().map_err(|_| {
        PageError::bad_request(format!(
            "due_at `{}`: expected YYYY-MM-DDTHH:MM (UTC)",
            form.due_at
        ))
    })?;
    let due = due
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .map_err(|e| PageError::bad_request(e.to_string()))?
        .timestamp();
    let request = RescheduleRequest {
        reminder_id: id.clone(),
        due_at: Some(kit::events::to_proto_time(due)),
        requested_by: user.name.clone(),
        reason: if form.reason.trim().is_empty() {
            "moved in the console".into()
        } else {
            form.reason.trim().to_owned()
        },
    };
    let outcome = match state.reminders.clone().reschedule(request).await {
        Ok(r) => Ok(format!(
            "Reminder {id} moved to {}.",
            when_proto(&r.into_inner().due_at)
        )),
        Err(status) => return Err(refusal(&id, status)),
    };
    Ok(back("/reminders", outcome))
}

/// The scheduler's refusal as the page's answer.
pub fn refusal(id: &str, status: tonic::Status) -> PageError {
    crate::page::from_status(&format!("reminder {id}"), "the reminder scheduler", status)
}
