//! Bitrix24 REST through an inbound webhook:
//! `POST /rest/<user_id>/<secret>/<method>` with a JSON body, for
//! `crm.lead.add`, `crm.lead.update`, `crm.lead.list` and
//! `crm.company.list` (with or without the `.json` suffix). Other methods
//! are answered "method not found". Companies are seeded by tests
//! ([`crate::SimHandle::add_company`]); callflow only looks them up.
//!
//! Answers are `{"result": ..., "time": {...}}`; refusals are
//! `{"error": "<CODE>", "error_description": "..."}`. Every call, whatever
//! its method, first passes the portal's leaky bucket (50 requests, drained
//! at 2 a second, both configurable); overflow is HTTP 503
//! `QUERY_LIMIT_EXCEEDED`, as on a real portal.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::faults::Target;
use crate::pipeline::{Incoming, flexible_u64, json as json_response};
use crate::state::{BitrixLead, digits};

/// The field whose filter matches phone numbers by their digits.
const PHONE: &str = "PHONE";

/// `crm.*.list` pages hold 50 items, as in Bitrix24.
const PAGE: usize = 50;

struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl Refusal {
    fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        failure(self.status, self.error, &self.description)
    }
}

fn failure(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({ "error": error, "error_description": description }),
    )
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    failure(status, "INTERNAL_SERVER_ERROR", "Internal server error")
}

/// Bitrix24's answer to a request that overflows the bucket. It names no
/// retry time: the caller backs off on its own.
pub(crate) fn query_limit_exceeded() -> Response {
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "QUERY_LIMIT_EXCEEDED",
        "Too many requests",
    )
}

/// A method name as Bitrix24 matches it: case-insensitive, `.json` optional.
fn method_name(method: &str) -> String {
    let method = method.to_ascii_lowercase();
    method
        .strip_suffix(".json")
        .map(str::to_owned)
        .unwrap_or(method)
}

/// Which target a call of `method` is recorded and faulted under.
pub(crate) fn target_for(method: &str) -> Target {
    match method_name(method).as_str() {
        "crm.lead.add" => Target::BitrixLeadAdd,
        "crm.lead.update" => Target::BitrixLeadUpdate,
        "crm.lead.list" => Target::BitrixLeadList,
        "crm.company.list" => Target::BitrixCompanyList,
        _ => Target::BitrixOther,
    }
}

/// The `time` block every answer carries.
fn time_block(start: Timestamp, finish: Timestamp) -> Value {
    let seconds = |t: Timestamp| t.as_millisecond() as f64 / 1000.0;
    let local = |t: Timestamp| {
        t.in_tz("Europe/Moscow")
            .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    let duration = (seconds(finish) - seconds(start)).max(0.0);
    json!({
        "start": seconds(start),
        "finish": seconds(finish),
        "duration": duration,
        "processing": duration,
        "date_start": local(start),
        "date_finish": local(finish),
        "operating_reset_at": start.as_second() + 600,
        "operating": 0,
    })
}

/// `/rest/{user_id}/{secret}/{method}`.
pub(crate) fn call(sim: &Shared, incoming: &Incoming) -> Response {
    let started = sim.now();
    let answer = || -> Result<Value, Refusal> {
        let config = &sim.config;
        let admitted = sim.records().bitrix_bucket.admit(
            started,
            config.bitrix_bucket_size,
            config.bitrix_refill_per_second,
        );
        if !admitted {
            return Err(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "QUERY_LIMIT_EXCEEDED",
                description: "Too many requests".into(),
            });
        }
        let segments = incoming.segments();
        let (user_id, secret, method) = match segments.as_slice() {
            ["rest", user_id, secret, method] => (*user_id, *secret, *method),
            _ => {
                return Err(Refusal::bad_request(
                    "ERROR_METHOD_NOT_FOUND",
                    "Method not found!",
                ));
            }
        };
        let user_ok = !user_id.is_empty() && user_id.bytes().all(|b| b.is_ascii_digit());
        if !user_ok || secret != config.bitrix_secret {
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                error: "INVALID_CREDENTIALS",
                description: "Invalid request credentials".into(),
            });
        }
        let target = target_for(method);
        if target == Target::BitrixOther {
            return Err(Refusal {
                status: StatusCode::NOT_FOUND,
                error: "ERROR_METHOD_NOT_FOUND",
                description: "Method not found!".into(),
            });
        }
        let body = match incoming.json_or_empty() {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(Refusal::bad_request(
                    "INVALID_REQUEST",
                    "the body must be a JSON object (form-encoded calls are not simulated)",
                ));
            }
        };
        match target {
            Target::BitrixLeadAdd => lead_add(sim, &body),
            Target::BitrixLeadUpdate => lead_update(sim, &body),
            Target::BitrixCompanyList => company_list(sim, &body),
            _ => lead_list(sim, &body),
        }
    };
    match answer() {
        Ok(mut body) => {
            body["time"] = time_block(started, sim.now());
            json_response(StatusCode::OK, body)
        }
        Err(refusal) => refusal.into_response(),
    }
}

fn fields(body: &Map<String, Value>) -> Result<Map<String, Value>, Refusal> {
    match body.get("fields") {
        Some(Value::Object(fields)) => Ok(fields.clone()),
        _ => Err(Refusal::bad_request(
            "",
            "Parameter 'fields' must be array.",
        )),
    }
}

fn lead_add(sim: &Shared, body: &Map<String, Value>) -> Result<Value, Refusal> {
    let fields = fields(body)?;
    let mut records = sim.records();
    let id = records.ids.lead();
    records.leads.insert(
        id,
        BitrixLead {
            id,
            fields,
            params: body.get("params").cloned(),
            updates: 0,
        },
    );
    tracing::info!(lead = id, "Bitrix24 lead added");
    Ok(json!({ "result": id }))
}

fn lead_update(sim: &Shared, body: &Map<String, Value>) -> Result<Value, Refusal> {
    let id = body
        .get("id")
        .and_then(flexible_u64)
        .ok_or_else(|| Refusal::bad_request("", "ID is not defined or invalid."))?;
    let fields = fields(body)?;
    let mut records = sim.records();
    let lead = records
        .leads
        .get_mut(&id)
        .ok_or_else(|| Refusal::bad_request("", "Not found"))?;
    lead.fields.extend(fields);
    lead.updates += 1;
    Ok(json!({ "result": true }))
}

/// Whether a stored field value matches a filter value. Multi-fields
/// (`PHONE`, `EMAIL`: arrays of `{"VALUE": ...}`) match on any value. Only
/// phone numbers (`phone`) match on their digits: elsewhere `web-12345`
/// and `app-12345` are different values, which matters for `ORIGIN_ID`,
/// the key callflow finds its own leads by.
fn field_matches(stored: &Value, wanted: &Value, phone: bool) -> bool {
    fn text(value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "Y" } else { "N" }.to_owned()),
            _ => None,
        }
    }
    let wanted: Vec<String> = match wanted {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    };
    let same = |have: &str| {
        wanted.iter().any(|w| {
            w == have
                || (phone
                    && !digits(w).is_empty()
                    && digits(w) == digits(have)
                    && digits(w).len() >= 5)
        })
    };
    match stored {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.get("VALUE").and_then(text).or_else(|| text(item)))
            .any(|v| same(&v)),
        other => text(other).is_some_and(|v| same(&v)),
    }
}

/// One page of `items` (id and fields) that pass the request's `filter`,
/// as `crm.*.list` answers: equality filters only (`=FIELD` is the same as
/// `FIELD`), every filter must match, pages of 50 from `start`, ids as
/// strings. `select` is ignored: every field is listed.
fn list<'a>(
    body: &Map<String, Value>,
    items: impl Iterator<Item = (u64, &'a Map<String, Value>)>,
) -> Result<Value, Refusal> {
    let filter = match body.get("filter") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(filter)) => filter.clone(),
        Some(_) => {
            return Err(Refusal::bad_request(
                "",
                "Parameter 'filter' must be array.",
            ));
        }
    };
    let start = body.get("start").and_then(flexible_u64).unwrap_or(0) as usize;
    let matching: Vec<(u64, &Map<String, Value>)> = items
        .filter(|(id, fields)| {
            filter.iter().all(|(key, wanted)| {
                let key = key.trim_start_matches('=');
                if key.eq_ignore_ascii_case("ID") {
                    return field_matches(&Value::from(*id), wanted, false);
                }
                fields.get(key).is_some_and(|stored| {
                    field_matches(stored, wanted, key.eq_ignore_ascii_case(PHONE))
                })
            })
        })
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(PAGE)
        .map(|(id, fields)| {
            let mut item = (*fields).clone();
            // Bitrix24 lists ids as strings.
            item.insert("ID".into(), Value::String(id.to_string()));
            Value::Object(item)
        })
        .collect();
    let mut answer = json!({ "result": page, "total": total });
    if start + PAGE < total {
        answer["next"] = json!(start + PAGE);
    }
    Ok(answer)
}

fn lead_list(sim: &Shared, body: &Map<String, Value>) -> Result<Value, Refusal> {
    let records = sim.records();
    list(
        body,
        records.leads.values().map(|lead| (lead.id, &lead.fields)),
    )
}

fn company_list(sim: &Shared, body: &Map<String, Value>) -> Result<Value, Refusal> {
    let records = sim.records();
    list(
        body,
        records
            .companies
            .values()
            .map(|company| (company.id, &company.fields)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_match_with_or_without_json_suffix() {
        assert_eq!(target_for("crm.lead.add.json"), Target::BitrixLeadAdd);
        assert_eq!(target_for("CRM.LEAD.UPDATE"), Target::BitrixLeadUpdate);
        assert_eq!(target_for("crm.lead.list"), Target::BitrixLeadList);
        assert_eq!(
            target_for("crm.company.list.json"),
            Target::BitrixCompanyList
        );
        assert_eq!(target_for("crm.contact.list.json"), Target::BitrixOther);
    }

    #[test]
    fn phone_filters_match_multi_fields_by_digits() {
        let stored = json!([{ "VALUE": "+7 999 111-22-33", "VALUE_TYPE": "WORK" }]);
        assert!(field_matches(&stored, &json!("79991112233"), true));
        assert!(!field_matches(&stored, &json!("79990000000"), true));
        assert!(field_matches(&json!("WEB"), &json!(["CALL", "WEB"]), false));
        assert!(!field_matches(&json!("WEB"), &json!("CALL"), false));
    }

    #[test]
    fn other_fields_match_exactly_not_by_digits() {
        assert!(field_matches(&json!("cf-12345"), &json!("cf-12345"), false));
        assert!(!field_matches(&json!("cf-12345"), &json!("x-12345"), false));
        assert!(field_matches(&json!(42), &json!("42"), false));
    }
}
