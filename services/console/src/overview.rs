//! Overview: one day at a glance — the calls funnel (from the analysts'
//! read model), leads by partner with conversion (the lead dashboard), and
//! inbound calls by outcome (the routing statistics). The page refreshes
//! its figures every few seconds; a source that does not answer is shown
//! as such without hiding the others.

use axum::extract::{Query, State};
use axum::response::Html;
use jiff::civil::Date;
use serde::Deserialize;

use kit::proto::leads::v1::SummaryRequest;
use kit::proto::routing::v1::DailyRequest;

use crate::auth::User;
use crate::charts::{Bar, bars};
use crate::page::{PageError, esc, frame};

#[derive(Deserialize, Default)]
pub struct DayQuery {
    day: Option<String>,
}

fn day_of(state: &crate::State, query: &DayQuery) -> Result<Date, PageError> {
    match query.day.as_deref().filter(|d| !d.is_empty()) {
        Some(day) => day
            .parse()
            .map_err(|_| PageError::bad_request(format!("day `{day}`: expected YYYY-MM-DD"))),
        None => Ok(state
            .clock
            .now()
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date()),
    }
}

/// GET /
pub async fn page(
    user: User,
    State(state): State<crate::State>,
    Query(query): Query<DayQuery>,
) -> Result<Html<String>, PageError> {
    let day = day_of(&state, &query)?;
    let figures = figures(&state, day).await;
    let body = format!(
        "<form method=\"get\" action=\"/\" class=\"inline\"><label>Day (UTC) <input type=\"date\" name=\"day\" value=\"{day}\"></label>
<button type=\"submit\">Show</button></form>
<div id=\"overview\" data-day=\"{day}\" aria-live=\"polite\">{figures}</div>
<script>
// Keeps the figures current without reloading the page.
setInterval(async () => {{
  const box = document.getElementById('overview');
  try {{
    const r = await fetch('/overview/live?day=' + box.dataset.day, {{credentials: 'same-origin'}});
    // A session that ended answers with the sign-in page: keep the figures.
    if (r.ok && !r.redirected) box.innerHTML = await r.text();
  }} catch (e) {{}}
}}, 5000);
</script>"
    );
    Ok(frame(&user, "Overview", "/", &body))
}

/// GET /overview/live — the figures alone, for the page's refresh.
pub async fn live(
    _user: User,
    State(state): State<crate::State>,
    Query(query): Query<DayQuery>,
) -> Result<Html<String>, PageError> {
    let day = day_of(&state, &query)?;
    Ok(Html(figures(&state, day).await))
}

/// The calls funnel of a day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Funnel {
    pub calls: u64,
    pub transcribed: u64,
    pub agreed: u64,
    pub reminded: u64,
    pub sms_delivered: u64,
}

/// The funnel of `day` as the analysts' read model has it.
pub async fn funnel(pool: &deadpool_postgres::Pool, day: Date) -> Result<Funnel, PageError> {
    let day = day.to_string();
    let row = pool
        .get()
        .await?
        .query_opt(
            "SELECT calls, transcribed, agreed, reminded, sms_delivered
               FROM analytics.funnel WHERE day = $1::text::date",
            &[&day],
        )
        .await?;
    Ok(row
        .map(|r| Funnel {
            calls: r.get::<_, i64>(0) as u64,
            transcribed: r.get::<_, i64>(1) as u64,
            agreed: r.get::<_, i64>(2) as u64,
            reminded: r.get::<_, i64>(3) as u64,
            sms_delivered: r.get::<_, i64>(4) as u64,
        })
        .unwrap_or_default())
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> String {
    tracing::warn!(%error, "{what} unavailable for the overview");
    format!(
        "<p class=\"notice bad\">{} is not answering: {}</p>",
        esc(what),
        esc(&error.to_string())
    )
}

async fn figures(state: &crate::State, day: Date) -> String {
    let (funnel_html, leads_html, inbound_html) = tokio::join!(
        funnel_section(state, day),
        leads_section(state, day),
        inbound_section(state, day)
    );
    format!(
        "<section><h2>Calls funnel</h2>{funnel_html}</section>
<section><h2>Leads by partner</h2>{leads_html}</section>
<section><h2>Inbound calls by outcome</h2>{inbound_html}</section>"
    )
}

async fn funnel_section(state: &crate::State, day: Date) -> String {
    let f = match funnel(&state.pool, day).await {
        Ok(f) => f,
        Err(e) => return unavailable("The analytics read model", e.message),
    };
    let stages = [
        ("calls", "Calls", f.calls),
        ("transcribed", "Transcribed", f.transcribed),
        ("agreed", "Agreed to a reminder", f.agreed),
        ("reminded", "Reminders due", f.reminded),
        ("sms_delivered", "SMS delivered", f.sms_delivered),
    ];
    let cells: String = stages
        .iter()
        .map(|(key, label, value)| {
            format!("<div class=\"stat\" data-funnel=\"{key}\"><span class=\"figure\">{value}</span><span>{label}</span></div>")
        })
        .collect();
    let chart = bars(
        "funnel",
        &stages
            .iter()
            .map(|(_, label, value)| Bar {
                label: (*label).into(),
                value: *value,
                inner: None,
            })
            .collect::<Vec<_>>(),
        "",
    );
    format!("<div class=\"stats\">{cells}</div>{chart}")
}

fn money(minor: i64, currency: &str) -> String {
    format!(
        "{}.{:02} {}",
        minor / 100,
        (minor % 100).abs(),
        esc(currency)
    )
}

async fn leads_section(state: &crate::State, day: Date) -> String {
    let request = SummaryRequest {
        from_day: day.to_string(),
        to_day: day.to_string(),
        ..Default::default()
    };
    let summary = match state.leads.clone().summary(request).await {
        Ok(r) => r.into_inner(),
        Err(e) => return unavailable("The lead dashboard", e.message()),
    };
    if summary.partners.is_empty() {
        return "<p class=\"empty\">No leads this day.</p>".into();
    }
    let chart = bars(
        "leads",
        &summary
            .partners
            .iter()
            .map(|p| Bar {
                label: if p.partner_id.is_empty() {
                    "(no partner)".into()
                } else {
                    p.partner_id.clone()
                },
                value: p.leads,
                inner: Some(p.confirmed),
            })
            .collect::<Vec<_>>(),
        "confirmed",
    );
    let rows: String = summary
        .partners
        .iter()
        .map(|p| {
            format!(
                "<tr data-partner=\"{partner}\"><td>{partner}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                p.leads,
                p.confirmed,
                p.closed,
                p.conversion * 100.0,
                p.manual,
                money(p.order_total_minor, &p.currency),
                money(p.confirmed_total_minor, &p.currency),
                partner = esc(&p.partner_id),
            )
        })
        .collect();
    format!(
        "{chart}<table><thead><tr><th>Partner</th><th>Leads</th><th>Confirmed</th><th>Closed</th><th>Conversion</th><th>Manual</th><th>Orders</th><th>Confirmed orders</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

async fn inbound_section(state: &crate::State, day: Date) -> String {
    let request = DailyRequest {
        from_day: day.to_string(),
        to_day: day.to_string(),
    };
    let daily = match state.routing.clone().daily(request).await {
        Ok(r) => r.into_inner(),
        Err(e) => return unavailable("The routing statistics", e.message()),
    };
    let Some(row) = daily.days.into_iter().find(|d| d.day == day.to_string()) else {
        return "<p class=\"empty\">No inbound calls this day.</p>".into();
    };
    let mut outcomes: Vec<Bar> = row
        .answered_by
        .iter()
        .map(|(by, n)| Bar {
            label: format!("answered by {by}"),
            value: *n,
            inner: None,
        })
        .collect();
    outcomes.sort_by(|a, b| a.label.cmp(&b.label));
    outcomes.push(Bar {
        label: "unanswered".into(),
        value: row.unanswered,
        inner: None,
    });
    let mut callers: Vec<String> = row
        .by_caller
        .iter()
        .map(|(kind, n)| format!("{}: {n}", esc(kind)))
        .collect();
    callers.sort();
    format!(
        "<div class=\"stats\"><div class=\"stat\" data-inbound=\"calls\"><span class=\"figure\">{}</span><span>Calls</span></div>\
<div class=\"stat\" data-inbound=\"escalations\"><span class=\"figure\">{}</span><span>Escalations</span></div>\
<div class=\"stat\" data-inbound=\"fallbacks\"><span class=\"figure\">{}</span><span>Fallbacks</span></div>\
<div class=\"stat\" data-inbound=\"masking\"><span class=\"figure\">{}</span><span>Masked calls bridged</span></div>\
<div class=\"stat\"><span class=\"figure\">{:.1} s</span><span>Average time to answer</span></div></div>\
{}<p>Callers: {}</p>",
        row.calls,
        row.escalations,
        row.fallbacks,
        row.masking_bridged,
        row.time_to_answer_avg_ms as f64 / 1000.0,
        bars("inbound", &outcomes, ""),
        callers.join(", ")
    )
}
