//! The manual queue: leads that need a person, oldest first, from the lead
//! dialer's dashboard; an operator marks one handled (the dialer records
//! `LeadManuallyHandled` naming them).

use axum::extract::{Path, Query, State};
use axum::response::{Html, Response};
use serde::Deserialize;

use kit::proto::leads::v1::{ManualQueueRequest, MarkHandledRequest};

use crate::auth::User;
use crate::page::{PageError, age, back, esc, frame, from_status, notice, url, when_proto};
use crate::personal::{name_for, phone_for};

#[derive(Deserialize, Default)]
pub struct QueueQuery {
    done: Option<String>,
    failed: Option<String>,
}

/// GET /manual
pub async fn page(
    user: User,
    State(state): State<crate::State>,
    Query(query): Query<QueueQuery>,
) -> Result<Html<String>, PageError> {
    let request = ManualQueueRequest {
        limit: 500,
        ..Default::default()
    };
    let leads = state
        .leads
        .clone()
        .manual_queue(request)
        .await
        .map_err(|s| PageError::upstream("the lead dashboard", s.message()))?
        .into_inner()
        .leads;
    let rows: String = leads
        .iter()
        .map(|lead| {
            let action = if user.can_change() {
                format!(
                    "<form method=\"post\" action=\"/manual/{}/handled\" class=\"inline\">\
                     <input name=\"note\" placeholder=\"what was done\" aria-label=\"note\">\
                     <button type=\"submit\" data-action=\"handled\">Mark handled</button></form>",
                    url(&lead.lead_id)
                )
            } else {
                String::new()
            };
            format!(
                "<tr data-lead=\"{id}\"><td>{age}<br><span class=\"muted\">since {since}</span></td>\
                 <td>{name}<br>{phone}</td><td>{site}<br><span class=\"muted\">partner {partner}</span></td>\
                 <td>{order} · {amount}</td><td><strong>{reason}</strong><br>{detail}{stopped}</td>\
                 <td><a href=\"/search?q={id_url}\">timeline</a></td><td>{action}</td></tr>",
                id = esc(&lead.lead_id),
                id_url = url(&lead.lead_id),
                age = age(lead.age_seconds),
                since = when_proto(&lead.since),
                name = esc(&name_for(&user, &lead.name)),
                phone = esc(&phone_for(&user, &lead.phone)),
                site = esc(&lead.site),
                partner = esc(&lead.partner_id),
                order = esc(&lead.order_id),
                amount = format_args!(
                    "{}.{:02} {}",
                    lead.amount_minor / 100,
                    (lead.amount_minor % 100).abs(),
                    esc(&lead.currency)
                ),
                reason = esc(&lead.reason),
                detail = esc(&lead.detail),
                stopped = if lead.calls_stopped {
                    "<br><span class=\"muted\">calls stopped</span>"
                } else {
                    ""
                },
            )
        })
        .collect();
    let table = if rows.is_empty() {
        "<p class=\"empty\">No lead waits for a person.</p>".to_owned()
    } else {
        format!(
            "<table data-testid=\"manual-queue\"><thead><tr><th>Waiting</th><th>Client</th><th>Site</th><th>Order</th><th>Why</th><th></th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    let body = format!(
        "{}<p>{} leads, oldest first.</p>{table}",
        notice(query.done.as_deref(), query.failed.as_deref()),
        leads.len()
    );
    Ok(frame(&user, "Manual queue", "/manual", &body))
}

#[derive(Deserialize)]
pub struct HandledForm {
    #[serde(default)]
    note: String,
}

/// POST /manual/{lead_id}/handled
pub async fn handled(
    user: User,
    State(state): State<crate::State>,
    Path(lead_id): Path<String>,
    axum::Form(form): axum::Form<HandledForm>,
) -> Result<Response, PageError> {
    user.must_change()?;
    let request = MarkHandledRequest {
        lead_id: lead_id.clone(),
        handled_by: user.name.clone(),
        note: form.note.trim().to_owned(),
    };
    state
        .leads
        .clone()
        .mark_handled(request)
        .await
        .map_err(|s| from_status(&format!("lead {lead_id}"), "the lead dialer", s))?;
    Ok(back(
        "/manual",
        Ok(format!("Lead {lead_id} marked handled.")),
    ))
}
