//! The frame every page shares (navigation, who is signed in, messages),
//! HTML escaping, and the answers for errors. Pages are plain strings of
//! HTML: every value that did not come from this crate goes through
//! [`esc`].

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::auth::User;

/// `text` safe inside HTML text and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a URL path segment or query value.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/search", "Timeline"),
    ("/reminders", "Reminders"),
    ("/manual", "Manual queue"),
    ("/dead-letters", "Dead letters"),
    ("/live", "Live events"),
];

/// A whole page: `body` inside the frame, for `user`, with `current` (a
/// path of [`NAV`]) marked.
pub fn frame(user: &User, title: &str, current: &str, body: &str) -> Html<String> {
    let nav: String = NAV
        .iter()
        .map(|(href, label)| {
            let here = if *href == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{href}\"{here}>{label}</a>")
        })
        .collect();
    Html(format!(
        "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>{title} · callflow</title>
<link rel=\"stylesheet\" href=\"/static/console.css\">
</head><body>
<header><strong class=\"brand\">callflow</strong><nav>{nav}</nav>
<form method=\"post\" action=\"/logout\" class=\"who\"><span data-testid=\"who\">{name} · {role}</span>
<button type=\"submit\">Sign out</button></form></header>
<main><h1>{title}</h1>
{body}
</main></body></html>",
        title = esc(title),
        name = esc(&user.name),
        role = user.role.as_str(),
    ))
}

/// A page without the frame (sign-in).
pub fn bare(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>{title} · callflow</title>
<link rel=\"stylesheet\" href=\"/static/console.css\">
</head><body><main class=\"narrow\"><h1>{title}</h1>
{body}
</main></body></html>",
        title = esc(title)
    ))
}

/// The outcome of a change, shown on the page it returns to (`?done=` or
/// `?failed=` in the redirect).
pub fn notice(done: Option<&str>, failed: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(done) = done.filter(|d| !d.is_empty()) {
        out.push_str(&format!(
            "<p class=\"notice ok\" role=\"status\">{}</p>",
            esc(done)
        ));
    }
    if let Some(failed) = failed.filter(|f| !f.is_empty()) {
        out.push_str(&format!(
            "<p class=\"notice bad\" role=\"alert\">{}</p>",
            esc(failed)
        ));
    }
    out
}

/// Where a change sends the browser back to, with its outcome.
pub fn back(to: &str, outcome: Result<String, String>) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    let location = match outcome {
        Ok(done) => format!("{to}{sep}done={}", url(&done)),
        Err(failed) => format!("{to}{sep}failed={}", url(&failed)),
    };
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// An error page (or message) with its status.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A service behind the page failed.
    pub fn upstream(what: &str, error: impl std::fmt::Display) -> Self {
        tracing::warn!(%error, "{what} failed");
        Self::new(
            StatusCode::BAD_GATEWAY,
            format!("{what} is not answering: {error}"),
        )
    }
}

/// A service's gRPC refusal of a change to `what`, as the page's answer:
/// the caller's mistakes are 4xx, an outage is 502.
pub fn from_status(what: &str, service: &str, status: tonic::Status) -> PageError {
    let message = format!("{what}: {}", status.message());
    match status.code() {
        tonic::Code::InvalidArgument => PageError::bad_request(message),
        tonic::Code::NotFound => PageError::not_found(message),
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists | tonic::Code::Aborted => {
            PageError::new(StatusCode::CONFLICT, message)
        }
        tonic::Code::PermissionDenied => PageError::forbidden(message),
        _ => PageError::upstream(service, status.message()),
    }
}

impl From<tokio_postgres::Error> for PageError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::upstream("the database", error)
    }
}

impl From<deadpool_postgres::PoolError> for PageError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::upstream("the database", error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = bare(
            self.status.canonical_reason().unwrap_or("Error"),
            &format!(
                "<p class=\"notice bad\" role=\"alert\">{}</p><p><a href=\"/\">Back to the console</a></p>",
                esc(&self.message)
            ),
        );
        (self.status, body).into_response()
    }
}

/// A timestamp as people read it (UTC, to the second).
pub fn when(ts: Option<jiff::Timestamp>) -> String {
    match ts {
        Some(ts) => ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "—".into(),
    }
}

/// A protobuf timestamp as people read it.
pub fn when_proto(ts: &Option<prost_types::Timestamp>) -> String {
    when(ts.as_ref().and_then(kit::events::from_proto_time))
}

/// An age in the largest units that matter (`3 h 05 min`).
pub fn age(seconds: u64) -> String {
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    if d > 0 {
        format!("{d} d {h:02} h")
    } else if h > 0 {
        format!("{h} h {m:02} min")
    } else {
        format!("{m} min")
    }
}

/// GET /static/console.css
pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../static/console.css"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn encodes_url_values() {
        assert_eq!(url("+7 912/ü"), "%2B7%20912%2F%C3%BC");
    }

    #[test]
    fn ages_read_in_the_largest_units() {
        assert_eq!(age(59), "0 min");
        assert_eq!(age(3 * 3600 + 5 * 60), "3 h 05 min");
        assert_eq!(age(2 * 86_400 + 3600), "2 d 01 h");
    }
}
