//! provider-sim: one HTTP server that speaks the wire formats of the
//! external providers callflow talks to — MTS Exolve, the Telegram Bot API,
//! Slack incoming webhooks, Bitrix24 REST and the Voximplant Management API
//! — for the tests and the demo. Tests script it, inject faults, and read
//! back what it received; adapters point their base URL at it instead of
//! the provider's.
//!
//! # Running it
//!
//! In a test, in-process:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use provider_sim::{CallOutcome, Fault, ProviderSim, SimConfig, Target};
//! use tokio_util::sync::CancellationToken;
//!
//! let sim = ProviderSim::bind("127.0.0.1:0", SimConfig::default()).await?;
//! let handle = sim.handle();
//! let base_url = sim.base_url(); // point the adapter here
//! let shutdown = CancellationToken::new();
//! sim.spawn(shutdown.clone());
//!
//! handle.script_transcript_chunks("123456789", 2, &[("1", "Здравствуйте"), ("2", "Да, напомните")]);
//! handle.inject(Target::Telegram, Fault::rate_limited(3), 1);
//! handle.set_call_events(Some("http://127.0.0.1:8080/hooks/voximplant".into()), None, None);
//! handle.script_calls("+79161234567", &[CallOutcome::NoAnswer, CallOutcome::Human], Duration::ZERO);
//! // ... exercise the code under test against `base_url` ...
//! assert_eq!(handle.requests_to(Target::Telegram).len(), 2);
//! shutdown.cancel();
//! # Ok(()) }
//! ```
//!
//! As a process: the `provider-sim` binary, configured from the environment
//! ([`Config`]): `PROVIDER_SIM_ADDR` (default `127.0.0.1:9900`),
//! `PROVIDER_SIM_EXOLVE_API_KEY` (`sim-exolve-key`),
//! `PROVIDER_SIM_TELEGRAM_TOKEN` (`sim-telegram-token`),
//! `PROVIDER_SIM_BITRIX_SECRET` (`sim-bitrix-secret`),
//! `PROVIDER_SIM_SMS_DELIVERY_DELAY` (`0s`), `PROVIDER_SIM_BITRIX_BUCKET_SIZE`
//! (`50`), `PROVIDER_SIM_BITRIX_REFILL_PER_SECOND` (`2`),
//! `PROVIDER_SIM_HANG_FOR` (`120s`), and where placed calls are reported
//! ([calls](#calls-scripts-and-outcome-reports)):
//! `PROVIDER_SIM_VOXIMPLANT_EVENTS_URL`, `PROVIDER_SIM_EXOLVE_CALL_EVENTS_URL`
//! and `PROVIDER_SIM_CALL_EVENTS_TOKEN` (all unset by default: calls are
//! played but not reported, and reports carry no `Authorization`).
//!
//! # The providers
//!
//! Paths are the real ones, under the simulator's base URL.
//!
//! ## MTS Exolve ([`exolve`])
//!
//! `POST`, JSON, `Authorization: Bearer <key>` (wrong or missing: 401).
//! Errors are `{"error": {"message": "..."}}`.
//!
//! | path | request | answer |
//! |---|---|---|
//! | `/messaging/v1/SendSMS` | `{"number", "destination", "text"}` | `{"message_id": "<18 digits>"}`; destination not 11–15 digits: 400 `invalid destination` |
//! | `/messaging/v1/GetList` | filters, see below | `{"messages": [...]}` |
//! | `/statistics/call-record/v1/GetTranscribation` | `{"uid": 123}` (or `"123"`) | the scripted transcript; 404 `not found` while not ready, and forever for an unscripted uid |
//! | `/number/v1/SetCallTranscribationState` | `{"number_code": 7999…, "call_transcribation": true}` | `{}` |
//! | `/call/v1/MakeVoiceMessage` | `{"source", "destination", "service_id"?, "tts": {"text", "voice"}}`; `destination` 11–15 digits, a leading `+` allowed | `{"call_id": <number>}`; the call is [played and reported](#calls-scripts-and-outcome-reports) |
//! | `/number/v1/SetAmdState` | `{"number_code", "amd": true}` | `{}`; calls from that number report `amd_result` |
//!
//! Numeric request fields (`uid`, `number_code`, `message_id`) are read as
//! JSON numbers or digit strings, as Exolve's gRPC-gateway front does.
//!
//! An accepted SMS is `sent`; once the configured delivery delay has passed
//! (default 0: at once) it is `delivered`, or `undelivered` if its
//! destination was marked unreachable ([`SimHandle::mark_undeliverable`]) by
//! then. Delivery time is read from the simulator's clock
//! ([`SimConfig::clock`]), so a test clock makes it move only when told.
//!
//! ### `GetList`: what was chosen, and why
//!
//! `PROVIDERS.md` names `GetList` but not its shape. What could be found:
//!
//! - Exolve's documentation page for the method
//!   (`docs.exolve.ru/docs/ru/api-reference/sms-api/getting-messages-list`)
//!   gives the request: `POST /messaging/v1/GetList`, Bearer key, a JSON
//!   body that may be empty ("all SMS of the application"), with the
//!   filters `message_id`, `limit` (default 100, at most 2000), `offset`,
//!   `number` ("phone number / sender name"), `direction`,
//!   `delivery_status`, `billing_status` and `status` (each an enum, or an
//!   array of them), and a date range. The stored copy was cut before the
//!   response section and the enum tables.
//! - Third-party clients show the rest: a Go client's model of the answer
//!   is `{"messages": [{"message_id" (string), "application_uuid", "date"
//!   (RFC 3339), "number", "sender", "receiver", "text", "direction",
//!   "segments_count", "billing_status", "delivery_status", "channel",
//!   "status"}]}` with every status an integer, and its requests filter by
//!   `date_gte`/`date_lte`; a Python example asks for incoming SMS with
//!   `"direction": 1`; an MCP server sends `date_from`/`date_to`.
//!
//! So the simulator answers exactly that shape, with integers for the enums.
//! The integer *values* were not found anywhere readable; the simulator's
//! are in [`exolve::codes`]: `direction` 1 incoming / 2 outgoing,
//! `delivery_status` and `status` 1 sent (no report yet) / 2 delivered /
//! 3 undelivered, `billing_status` 1, `channel` 1 (SMS). An adapter should
//! keep its mapping of these codes in one place, to be checked against the
//! real service before production. Requests are read tolerantly: every
//! documented filter works, `date_gte`/`date_lte` and `date_from`/`date_to`
//! both bound the date (RFC 3339), `receiver` (or `destination`) and
//! `sender` filter on one side, enum filters take a number or an array,
//! unknown fields are ignored. The list is oldest first, so that paging
//! with `offset` is stable while new SMS arrive.
//!
//! ## Telegram Bot API ([`telegram`])
//!
//! `POST /bot<token>/sendMessage` `{"chat_id", "text", "parse_mode"?}` →
//! `{"ok": true, "result": {"message_id", "from", "chat": {"id", "type"},
//! "date", "text"}}`. Wrong token: 401 `{"ok": false, "error_code": 401,
//! "description": "Unauthorized"}`. Empty text: 400 `Bad Request: message
//! text is empty`; over 4096 characters: 400 `Bad Request: message is too
//! long`; no chat: 400 `Bad Request: chat_id is empty`; a `parse_mode` other
//! than HTML/Markdown/MarkdownV2: 400 (markup itself is not checked).
//!
//! ## Slack incoming webhooks ([`slack`])
//!
//! `POST /services/<T…>/<B…>/<secret>` (any three segments) with
//! `{"text", "blocks"?}` (or a form with `payload=<json>`) → 200 `ok`
//! (text/plain). No text and no blocks, or a malformed body: 400
//! `invalid_payload`.
//!
//! ## Bitrix24 REST ([`bitrix`])
//!
//! `POST /rest/<user_id>/<secret>/crm.lead.add.json` `{"fields", "params"?}`
//! → `{"result": <id>, "time": {...}}`; `crm.lead.update.json` `{"id",
//! "fields"}` → `{"result": true, ...}` (fields merge into the lead);
//! `crm.lead.list.json` `{"filter"?, "start"?}` → `{"result": [...],
//! "total", "next"?}` (equality filters only, all must match, pages of 50;
//! `PHONE` matches any of the lead's numbers by digits, every other field
//! — `ORIGINATOR_ID`, `ORIGIN_ID`, ... — exactly); `crm.company.list.json`
//! the same over the companies a test seeded ([`SimHandle::add_company`],
//! `POST /_sim/bitrix/companies`), `select` ignored. Wrong secret: 401 `{"error":
//! "INVALID_CREDENTIALS", ...}`; other methods: 404
//! `ERROR_METHOD_NOT_FOUND`. Every call first passes the leaky bucket
//! (size and refill configurable); overflow: 503 `{"error":
//! "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}`.
//!
//! ## Voximplant Management API ([`voximplant`])
//!
//! `POST` (or `GET`) `/platform_api/StartScenarios` with `rule_id` or
//! `rule_name` and `script_custom_data` as query, form or JSON parameters,
//! and any non-empty `Authorization: Bearer` (no bearer: 401) →
//! `{"result": 1, "call_session_history_id", "media_session_access_url",
//! "media_session_access_secure_url"}`. Custom data over 200 bytes, or no
//! rule: HTTP 200 `{"error": {"code": 100, "msg": "..."}}`, as Voximplant
//! reports request errors. When `script_custom_data` is callflow's JSON,
//! `{"phone": "+79161234567", "ref": "<opaque>"}`, the scenario calls that
//! phone and [reports the outcome](#calls-scripts-and-outcome-reports);
//! any other custom data starts a scenario that plays nothing.
//!
//! ## PBX ([`pbx`])
//!
//! The other way round: here the simulator is the client. A PBX that asks
//! an HTTP server what to do next (callflow's `call-router`, the
//! call-control protocol) is played by [`pbx::play_call`]: it posts each
//! step of one call to the router, performs the instructions on a scripted
//! caller and scripted callees ([`pbx::PbxScript`]: the digits typed, how
//! each dialled number answers), checks every answer strictly, and returns
//! the log ([`pbx::PbxCall`]: steps with latencies, what was said and
//! dialled, who answered, fallbacks, late answers, recordings). Over HTTP:
//! `POST /_sim/pbx/calls`. [`pbx::ask_follow_me`] asks an Exolve dynamic
//! forwarding handler (JSON-RPC `getControlCallFollowMe`) where to forward
//! a call. The module docs give the rules.
//!
//! # Calls: scripts and outcome reports
//!
//! Calls placed through Voximplant (`StartScenarios` with callflow's
//! custom data) or Exolve (`MakeVoiceMessage`) are recorded
//! ([`SimHandle::calls`], `GET /_sim/calls`: [`PlacedCall`]s) and played:
//! each call to a number takes the next [`CallOutcome`] scripted for it
//! ([`SimHandle::script_calls`], `POST /_sim/calls/scripts`), the last one
//! repeating once the list is used up; an unscripted number answers
//! `human` at once. Numbers match on their digits, so `+7…` and `7…` are
//! one. Outcomes: `human`, `machine`, `no_answer`, `busy`, `unavailable`,
//! `wrong_number`, `failed`, and `silent` (placed, never reported).
//!
//! After the script's delay (tokio's real time, not the simulator's clock)
//! the provider's report is POSTed as JSON to the URL configured for it
//! ([`SimHandle::set_call_events`], `POST /_sim/calls/webhooks`, or the
//! environment), with `Authorization: Bearer <token>` when a token is set.
//! Connection errors and non-2xx answers — a 404 included, since the
//! report can arrive before the dialer has recorded the call id — are
//! retried up to 20 tries in all, 100 ms apart at first, doubling up to
//! 5 s; each try may take 10 s. Shutdown and reset stop pending reports.
//! With no URL for the provider, the call is recorded and nothing is sent.
//! Each [`PlacedCall`] shows its report body, `delivered` and
//! `delivery_attempts`.
//!
//! **Voximplant** runs no real scenario; the report is what callflow's
//! scenario is to send (its format is ours to define):
//!
//! ```json
//! {"call_session_history_id": 3000000001, "custom_data": "<script_custom_data verbatim>",
//!  "result": "Connected", "code": 0, "result_class": "HUMAN", "confidence": 92, "duration": 25}
//! ```
//!
//! | outcome | `result` | `code` (SIP) | `result_class` | `confidence` | `duration` (s) |
//! |---|---|---|---|---|---|
//! | `human` | `Connected` | 0 | `HUMAN` | 92 | 25 |
//! | `machine` | `Connected` | 0 | `VOICEMAIL` | 88 | 12 |
//! | `no_answer` | `Failed` | 487 | `""` | 0 | 0 |
//! | `busy` | `Failed` | 486 | `""` | 0 | 0 |
//! | `unavailable` | `Failed` | 480 | `""` | 0 | 0 |
//! | `wrong_number` | `Failed` | 404 | `""` | 0 | 0 |
//! | `failed` | `Failed` | 402 | `""` | 0 | 0 |
//!
//! **Exolve** call event (a guess, not checked against the real service —
//! like `GetList` above; `PROVIDERS.md` knows Exolve's call-events webhook
//! only from third-party code, as `type` `b`/`s`/`d`/`e` events with
//! `call_sid`, `from`, `to`, `cause_code`, and the simulator does *not*
//! send that shape: an adapter must be checked against the real service
//! before production):
//!
//! ```json
//! {"call_id": "3000000001", "event": "call_finished", "status": "answered",
//!  "amd_result": "human", "duration": 25, "source": "74951234567", "destination": "79161234567"}
//! ```
//!
//! `status` is `answered` (`human`, `machine`), `no_answer`, `busy`,
//! `unavailable`, `invalid_number` (`wrong_number`) or `failed`;
//! `duration` as for Voximplant; `source` and `destination` as given to
//! `MakeVoiceMessage`. `amd_result` is `human` or `machine` only when
//! answering-machine detection was on (`SetAmdState`) for the `source`
//! number when the call was placed; with it off, a machine answering is
//! just `answered` with `amd_result` `""`.
//!
//! # Faults
//!
//! Each [`Target`] has a queue of [`Fault`]s; each request to the target
//! takes the next one, and a target with none answers normally. Kinds:
//!
//! - `server_error`: a 5xx with the provider's error body (Telegram's `ok:
//!   false` object, Slack's `internal_error`, Exolve's and Voximplant's
//!   `error` objects, Bitrix's `INTERNAL_SERVER_ERROR`).
//! - `rate_limited`: Telegram 429 with `parameters.retry_after`; Slack,
//!   Exolve and Voximplant 429 with a `Retry-After` header; Bitrix 503
//!   `QUERY_LIMIT_EXCEEDED` (Bitrix names no retry time).
//! - `timeout`: the request is held open for [`SimConfig::hang_for`] (120 s)
//!   or until the server shuts down, then answered 504. With `accepted`, the
//!   provider first does the work — for SendSMS the SMS exists and shows in
//!   `GetList`, a lead is created (and `crm.lead.list` finds it), a message
//!   posted, a call placed, played and reported — and only the answer is
//!   lost (the ambiguous outcome); without it, nothing happened.
//! - `slow`: the normal answer after `delay_ms`.
//!
//! Faults come before the provider's own checks (authentication, the
//! Bitrix bucket), as a failing front end would.
//!
//! # The control API
//!
//! Everything a [`SimHandle`] does, as JSON over HTTP under `/_sim/`:
//!
//! | route | body / query | effect |
//! |---|---|---|
//! | `GET /healthz`, `GET /readyz`, `GET /_sim/healthz` | | liveness (ready as soon as it listens) |
//! | `POST /_sim/reset` | | forget records, scripts, placed calls and faults, stop pending call reports (call events URLs stay) |
//! | `POST /_sim/faults` | `{"target", "fault", "times"?}` | queue a fault `times` (1) times |
//! | `GET /_sim/faults` | | queued faults per target |
//! | `DELETE /_sim/faults` | | drop queued faults |
//! | `POST /_sim/exolve/transcripts` | `{"uid", "not_ready_polls"?, "body"}` or `{"uid", "not_ready_polls"?, "chunks": [{"channel_tag", "text"}], "called_number"?, "calling_number"?}` | script a transcript |
//! | `POST /_sim/exolve/undeliverable` | `{"destination"}` or `{"destinations": [...]}` | SMS to it end undelivered |
//! | `GET /_sim/requests` | `?target=<name>` (optional) | [`RecordedRequest`]s |
//! | `GET /_sim/sms` | | [`SentSms`] with statuses |
//! | `GET /_sim/exolve/transcription-states` | | `{"<number_code>": bool}` |
//! | `GET /_sim/exolve/amd-states` | | `{"<number_code>": bool}` |
//! | `GET /_sim/exolve/voice-messages` | | [`VoiceMessage`]s |
//! | `GET /_sim/telegram/messages` | | [`TelegramMessage`]s |
//! | `GET /_sim/slack/messages` | | [`SlackMessage`]s |
//! | `GET /_sim/bitrix/leads` | | [`BitrixLead`]s |
//! | `GET /_sim/voximplant/calls` | | [`VoximplantCall`]s |
//! | `POST /_sim/bitrix/companies` | the company's fields, `{"TITLE": "CPA Net", "UF_CRM_PARTNER_CODE": "cpa-net-7"}` | seed a company; `{"id": n}` |
//! | `GET /_sim/bitrix/companies` | | [`BitrixCompany`]s |
//! | `POST /_sim/calls/scripts` | `{"phone": "+79161234567", "outcomes": ["no_answer", "human"], "delay_ms"?: 0}` | script calls to a number (11–15 digits; outcomes non-empty; delay at most an hour) |
//! | `GET /_sim/calls` | | [`PlacedCall`]s |
//! | `POST /_sim/calls/webhooks` | `{"voximplant": url\|null, "exolve": url\|null, "token": "..."\|null}` | where reports go (a missing field is null; unknown fields, relative or non-http URLs and an empty token are refused) |
//! | `POST /_sim/pbx/calls` | `{"url": "<router endpoint>", "script": <PbxScript>}` | play one call against a call-control server; the [`pbx::PbxCall`] log, or 502 `{"error"}` when the router broke the protocol or could not be reached |
//!
//! Target names are snake case: `exolve_send_sms`, `exolve_get_list`,
//! `exolve_transcription`, `exolve_transcription_state`,
//! `exolve_voice_message`, `exolve_amd_state`, `telegram`, `slack`,
//! `bitrix_lead_add`, `bitrix_lead_update`, `bitrix_lead_list`,
//! `bitrix_company_list`, `bitrix_other`, `voximplant`. Faults are `{"kind": "server_error",
//! "status": 503}`, `{"kind": "rate_limited", "retry_after_secs": 3}`,
//! `{"kind": "timeout", "accepted": true}`, `{"kind": "slow", "delay_ms":
//! 500}`. Bad control requests get 400 `{"error": "..."}`.
//!
//! ```text
//! curl -XPOST localhost:9900/_sim/exolve/transcripts -d '{"uid": 123, "not_ready_polls": 1,
//!      "chunks": [{"channel_tag": "1", "text": "Напомнить вам через месяц?"},
//!                 {"channel_tag": "2", "text": "Да, давайте"}]}'
//! curl -XPOST localhost:9900/_sim/faults -d '{"target": "exolve_send_sms",
//!      "fault": {"kind": "timeout", "accepted": true}}'
//! curl -XPOST localhost:9900/_sim/exolve/undeliverable -d '{"destination": "79990000000"}'
//! curl 'localhost:9900/_sim/requests?target=telegram'
//! curl localhost:9900/_sim/sms
//! curl -XPOST localhost:9900/_sim/calls/webhooks -d '{"voximplant": "http://localhost:8080/hooks/voximplant",
//!      "exolve": "http://localhost:8080/hooks/exolve", "token": "sim-call-events"}'
//! curl -XPOST localhost:9900/_sim/calls/scripts -d '{"phone": "+79161234567",
//!      "outcomes": ["no_answer", "no_answer", "human"], "delay_ms": 2000}'
//! curl localhost:9900/_sim/calls
//! curl -XPOST localhost:9900/_sim/pbx/calls -d '{"url": "http://localhost:8080/pbx/v1/calls",
//!      "script": {"call_id": "demo-1", "numa": "+79161234567", "numb": "+74951110000",
//!                 "digits": ["1"], "answers": {"+74951110001": {"human": {"after_ms": 3000}}}}}'
//! curl -XPOST localhost:9900/_sim/bitrix/companies -d '{"TITLE": "CPA Net", "UF_CRM_PARTNER_CODE": "cpa-net-7"}'
//! curl -XPOST localhost:9900/_sim/reset
//! ```

pub mod bitrix;
pub mod calls;
mod control;
pub mod exolve;
pub mod faults;
pub mod pbx;
mod pipeline;
pub mod slack;
pub mod state;
pub mod telegram;
pub mod voximplant;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{MethodFilter, on};
use jiff::Timestamp;
use kit::clock::SharedClock;
use kit::config::parse_duration;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use calls::{CallOutcome, CallProvider, PlacedCall};
pub use faults::{Fault, Provider, Target, UnknownTarget};
pub use state::{
    BitrixCompany, BitrixLead, RecordedRequest, SentSms, SlackMessage, SmsStatus, TelegramMessage,
    VoiceMessage, VoximplantCall,
};

use faults::FaultQueues;
use pipeline::{endpoint, serve};
use state::Records;

/// How the simulated providers behave.
#[derive(Clone)]
pub struct SimConfig {
    /// Exolve's application API key (`Authorization: Bearer`).
    pub exolve_api_key: String,
    /// The Telegram bot token of `/bot<token>/`.
    pub telegram_token: String,
    /// The Bitrix24 inbound webhook secret of `/rest/<user>/<secret>/`.
    pub bitrix_secret: String,
    /// How long after acceptance an SMS is delivered (or undelivered).
    pub sms_delivery_delay: Duration,
    /// Bitrix24's leaky bucket: how many requests it holds...
    pub bitrix_bucket_size: u32,
    /// ...and how many it drains a second.
    pub bitrix_refill_per_second: f64,
    /// How long a `timeout` fault holds a request open.
    pub hang_for: Duration,
    /// Where the outcomes of calls placed through Voximplant are POSTed
    /// (none: they are not reported).
    pub voximplant_events_url: Option<String>,
    /// Where the outcomes of calls placed through Exolve are POSTed.
    pub exolve_call_events_url: Option<String>,
    /// Sent as `Authorization: Bearer <token>` with every outcome report.
    pub call_events_token: Option<String>,
    /// Where "now" comes from: SMS dates and delivery, transcript dates,
    /// the Bitrix bucket, request times.
    pub clock: SharedClock,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            exolve_api_key: "sim-exolve-key".into(),
            telegram_token: "sim-telegram-token".into(),
            bitrix_secret: "sim-bitrix-secret".into(),
            sms_delivery_delay: Duration::ZERO,
            bitrix_bucket_size: 50,
            bitrix_refill_per_second: 2.0,
            hang_for: Duration::from_secs(120),
            voximplant_events_url: None,
            exolve_call_events_url: None,
            call_events_token: None,
            clock: kit::clock::system(),
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs; the clock has nothing to show.
        f.debug_struct("SimConfig")
            .field("sms_delivery_delay", &self.sms_delivery_delay)
            .field("bitrix_bucket_size", &self.bitrix_bucket_size)
            .field("bitrix_refill_per_second", &self.bitrix_refill_per_second)
            .field("hang_for", &self.hang_for)
            .field("voximplant_events_url", &self.voximplant_events_url)
            .field("exolve_call_events_url", &self.exolve_call_events_url)
            .field("call_events_token", &self.call_events_token.is_some())
            .finish_non_exhaustive()
    }
}

/// The simulator's settings from the environment, for its binary and for
/// the development binary that runs every service in one process.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "provider_sim")]
#[command(next_help_heading = "provider-sim")]
pub struct Config {
    /// Address the provider simulator listens on.
    #[arg(
        id = "provider_sim_addr",
        long = "provider-sim-addr",
        env = "PROVIDER_SIM_ADDR",
        default_value = "127.0.0.1:9900"
    )]
    pub addr: SocketAddr,

    /// Exolve application API key the simulator expects as Bearer token.
    #[arg(
        id = "provider_sim_exolve_api_key",
        long = "provider-sim-exolve-api-key",
        env = "PROVIDER_SIM_EXOLVE_API_KEY",
        default_value = "sim-exolve-key"
    )]
    pub exolve_api_key: String,

    /// Telegram bot token the simulator expects in `/bot<token>/`.
    #[arg(
        id = "provider_sim_telegram_token",
        long = "provider-sim-telegram-token",
        env = "PROVIDER_SIM_TELEGRAM_TOKEN",
        default_value = "sim-telegram-token"
    )]
    pub telegram_token: String,

    /// Bitrix24 inbound webhook secret the simulator expects.
    #[arg(
        id = "provider_sim_bitrix_secret",
        long = "provider-sim-bitrix-secret",
        env = "PROVIDER_SIM_BITRIX_SECRET",
        default_value = "sim-bitrix-secret"
    )]
    pub bitrix_secret: String,

    /// How long after acceptance a simulated SMS is delivered (`0s`: at once).
    #[arg(
        id = "provider_sim_sms_delivery_delay",
        long = "provider-sim-sms-delivery-delay",
        env = "PROVIDER_SIM_SMS_DELIVERY_DELAY",
        default_value = "0s",
        value_parser = parse_duration
    )]
    pub sms_delivery_delay: Duration,

    /// Requests the simulated Bitrix24 leaky bucket holds.
    #[arg(
        id = "provider_sim_bitrix_bucket_size",
        long = "provider-sim-bitrix-bucket-size",
        env = "PROVIDER_SIM_BITRIX_BUCKET_SIZE",
        default_value_t = 50
    )]
    pub bitrix_bucket_size: u32,

    /// Requests a second the simulated Bitrix24 bucket drains.
    #[arg(
        id = "provider_sim_bitrix_refill_per_second",
        long = "provider-sim-bitrix-refill-per-second",
        env = "PROVIDER_SIM_BITRIX_REFILL_PER_SECOND",
        default_value_t = 2.0
    )]
    pub bitrix_refill_per_second: f64,

    /// How long a simulated timeout holds a request open.
    #[arg(
        id = "provider_sim_hang_for",
        long = "provider-sim-hang-for",
        env = "PROVIDER_SIM_HANG_FOR",
        default_value = "120s",
        value_parser = parse_duration
    )]
    pub hang_for: Duration,

    /// URL the simulator POSTs Voximplant call outcome reports to (unset:
    /// calls are played but not reported).
    #[arg(
        id = "provider_sim_voximplant_events_url",
        long = "provider-sim-voximplant-events-url",
        env = "PROVIDER_SIM_VOXIMPLANT_EVENTS_URL",
        value_parser = parse_webhook_url
    )]
    pub voximplant_events_url: Option<String>,

    /// URL the simulator POSTs Exolve call events to (unset: not reported).
    #[arg(
        id = "provider_sim_exolve_call_events_url",
        long = "provider-sim-exolve-call-events-url",
        env = "PROVIDER_SIM_EXOLVE_CALL_EVENTS_URL",
        value_parser = parse_webhook_url
    )]
    pub exolve_call_events_url: Option<String>,

    /// Bearer token the simulator sends with call outcome reports (unset: none).
    #[arg(
        id = "provider_sim_call_events_token",
        long = "provider-sim-call-events-token",
        env = "PROVIDER_SIM_CALL_EVENTS_TOKEN",
        hide_env_values = true
    )]
    pub call_events_token: Option<String>,
}

/// An absolute http(s) URL, or empty (an empty environment variable means
/// "not set").
fn parse_webhook_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || calls::is_webhook_url(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not an absolute http(s) URL"))
    }
}

/// `None` for an unset or empty setting.
fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Config {
    /// The simulator's behaviour from these settings, with `clock`.
    pub fn sim_config(&self, clock: SharedClock) -> SimConfig {
        SimConfig {
            exolve_api_key: self.exolve_api_key.clone(),
            telegram_token: self.telegram_token.clone(),
            bitrix_secret: self.bitrix_secret.clone(),
            sms_delivery_delay: self.sms_delivery_delay,
            bitrix_bucket_size: self.bitrix_bucket_size,
            bitrix_refill_per_second: self.bitrix_refill_per_second.max(0.0),
            hang_for: self.hang_for,
            voximplant_events_url: non_empty(&self.voximplant_events_url),
            exolve_call_events_url: non_empty(&self.exolve_call_events_url),
            call_events_token: non_empty(&self.call_events_token),
            clock,
        }
    }
}

/// Why the simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("serving: {0}")]
    Serve(#[source] io::Error),
}

/// Runs the simulator with `config` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let sim = ProviderSim::bind(config.addr, config.sim_config(clock))
        .await
        .map_err(|source| SimError::Bind {
            addr: config.addr,
            source,
        })?;
    sim.run(shutdown).await.map_err(SimError::Serve)
}

/// What the handlers share.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub base_url: String,
    records: Mutex<Records>,
    faults: Mutex<FaultQueues>,
    /// Placed calls, their scripts and their reports.
    pub calls: Arc<calls::Desk>,
    /// Cancelled when the server shuts down, to release hung requests and
    /// stop pending call reports.
    stopping: CancellationToken,
}

impl Shared {
    pub fn now(&self) -> Timestamp {
        self.config.clock.now()
    }

    pub fn records(&self) -> MutexGuard<'_, Records> {
        // A handler never panics holding the lock on purpose; if one did,
        // the records are still usable for the tests that read them.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, FaultQueues> {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits `duration`; `false` when cut short by shutdown.
    pub async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => true,
            _ = self.stopping.cancelled() => false,
        }
    }
}

/// A bound, not yet running, simulator.
pub struct ProviderSim {
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ProviderSim {
    /// Listens on `addr` (port 0 picks a free one).
    pub async fn bind(addr: impl tokio::net::ToSocketAddrs, config: SimConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        // A wildcard address is reached through loopback.
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let base_url = format!("http://{}", SocketAddr::new(host, addr.port()));
        let stopping = CancellationToken::new();
        let webhooks = calls::Webhooks {
            voximplant: config.voximplant_events_url.clone(),
            exolve: config.exolve_call_events_url.clone(),
            token: config.call_events_token.clone(),
        };
        let calls = Arc::new(calls::Desk::new(webhooks, stopping.clone())?);
        let shared = Arc::new(Shared {
            config,
            base_url,
            records: Mutex::new(Records::new()),
            faults: Mutex::new(FaultQueues::default()),
            calls,
            stopping,
        });
        Ok(Self {
            listener,
            addr,
            shared,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`, with no trailing slash.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// A handle to script and inspect the simulator; it stays valid while
    /// and after it runs.
    pub fn handle(&self) -> SimHandle {
        SimHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` is cancelled; hung requests are then
    /// released and in-flight ones finished.
    pub async fn run(self, shutdown: CancellationToken) -> io::Result<()> {
        let stopping = self.shared.stopping.clone();
        tracing::info!(addr = %self.addr, "provider simulator listening");
        axum::serve(self.listener, router(self.shared))
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                stopping.cancel();
            })
            .await
    }

    /// Runs the simulator on a task of its own.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<io::Result<()>> {
        tokio::spawn(self.run(shutdown))
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let post = MethodFilter::POST;
    Router::new()
        .route(
            "/messaging/v1/SendSMS",
            endpoint(post, Target::ExolveSendSms, exolve::send_sms),
        )
        .route(
            "/messaging/v1/GetList",
            endpoint(post, Target::ExolveGetList, exolve::get_list),
        )
        .route(
            "/statistics/call-record/v1/GetTranscribation",
            endpoint(post, Target::ExolveTranscription, exolve::get_transcription),
        )
        .route(
            "/number/v1/SetCallTranscribationState",
            endpoint(
                post,
                Target::ExolveTranscriptionState,
                exolve::set_transcription_state,
            ),
        )
        .route(
            "/call/v1/MakeVoiceMessage",
            endpoint(post, Target::ExolveVoiceMessage, exolve::make_voice_message),
        )
        .route(
            "/number/v1/SetAmdState",
            endpoint(post, Target::ExolveAmdState, exolve::set_amd_state),
        )
        .route(
            "/{bot}/sendMessage",
            endpoint(post, Target::Telegram, telegram::send_message),
        )
        .route(
            "/services/{team}/{hook}/{secret}",
            endpoint(post, Target::Slack, slack::post_message),
        )
        .route(
            "/rest/{user}/{secret}/{method}",
            on(post.or(MethodFilter::GET), bitrix_route),
        )
        .route(
            "/platform_api/StartScenarios",
            endpoint(
                post.or(MethodFilter::GET),
                Target::Voximplant,
                voximplant::start_scenarios,
            ),
        )
        .merge(control::routes())
        .fallback(not_found)
        .with_state(shared)
}

/// Bitrix24's target depends on the method named in the path.
async fn bitrix_route(
    State(sim): State<Arc<Shared>>,
    Path((_user, _secret, method)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    serve(&sim, bitrix::target_for(&method), request, bitrix::call).await
}

async fn not_found(method: Method, uri: Uri) -> Response {
    pipeline::json(
        StatusCode::NOT_FOUND,
        json!({ "error": format!("the provider simulator has no endpoint {method} {}", uri.path()) }),
    )
}

/// Scripts and inspects a simulator; cheap to clone, all clones share it.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl SimHandle {
    /// `http://host:port` of the simulator.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// Makes `GetTranscribation` of `uid` answer `body` (as is), after
    /// answering 404 "not found" to the first `not_ready_polls` polls.
    /// Scripting a uid again replaces its script and restarts its polls.
    pub fn script_transcript(&self, uid: impl ToString, not_ready_polls: u32, body: Value) {
        let uid = uid.to_string().trim().to_owned();
        self.shared.records().transcripts.insert(
            uid,
            state::ScriptedTranscript {
                not_ready_polls,
                polls: 0,
                body,
            },
        );
    }

    /// [`script_transcript`](Self::script_transcript) with a body built by
    /// [`exolve::transcript_body`] from `(channel_tag, text)` chunks.
    pub fn script_transcript_chunks(
        &self,
        uid: impl ToString,
        not_ready_polls: u32,
        chunks: &[(&str, &str)],
    ) {
        let uid = uid.to_string().trim().to_owned();
        let body = exolve::transcript_body(&uid, chunks, self.shared.now());
        self.script_transcript(uid, not_ready_polls, body);
    }

    /// How many times `GetTranscribation` asked for `uid` (scripted uids only).
    pub fn transcript_polls(&self, uid: impl ToString) -> u32 {
        let uid = uid.to_string();
        self.shared
            .records()
            .transcripts
            .get(uid.trim())
            .map_or(0, |script| script.polls)
    }

    /// Queues `fault` as the next `times` answers of `target`, after any
    /// already queued.
    pub fn inject(&self, target: Target, fault: Fault, times: usize) {
        self.shared.faults().push(target, fault, times);
    }

    /// The faults still queued, per target.
    pub fn pending_faults(&self) -> BTreeMap<Target, Vec<Fault>> {
        self.shared.faults().pending()
    }

    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// SMS to `destination` end undelivered (if still undecided when their
    /// delivery delay passes). Any `+`, spaces or dashes are ignored.
    pub fn mark_undeliverable(&self, destination: &str) {
        self.shared
            .records()
            .undeliverable
            .insert(state::digits(destination));
    }

    /// Every request received, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.records().requests(None)
    }

    /// The requests received for `target`, in order of arrival.
    pub fn requests_to(&self, target: Target) -> Vec<RecordedRequest> {
        self.shared.records().requests(Some(target))
    }

    /// Every SMS accepted, oldest first, with its status as of now.
    pub fn sms(&self) -> Vec<SentSms> {
        let now = self.shared.now();
        let mut records = self.shared.records();
        records.settle_sms(now, self.shared.config.sms_delivery_delay);
        records.sms.iter().map(state::SmsRecord::public).collect()
    }

    /// Transcription switches by `number_code` (digits).
    pub fn transcription_states(&self) -> BTreeMap<String, bool> {
        self.shared.records().transcription_states.clone()
    }

    /// The transcription switch of one number, if it was ever set.
    pub fn transcription_state(&self, number_code: impl ToString) -> Option<bool> {
        let number = state::digits(&number_code.to_string());
        self.shared
            .records()
            .transcription_states
            .get(&number)
            .copied()
    }

    /// Answering-machine detection switches by `number_code` (digits).
    pub fn amd_states(&self) -> BTreeMap<String, bool> {
        self.shared.records().amd_states.clone()
    }

    pub fn voice_messages(&self) -> Vec<VoiceMessage> {
        self.shared.records().voice_messages.clone()
    }

    pub fn telegram_messages(&self) -> Vec<TelegramMessage> {
        self.shared.records().telegram.clone()
    }

    pub fn slack_messages(&self) -> Vec<SlackMessage> {
        self.shared.records().slack.clone()
    }

    /// The portal's leads by id.
    pub fn bitrix_leads(&self) -> Vec<BitrixLead> {
        self.shared.records().leads.values().cloned().collect()
    }

    pub fn voximplant_calls(&self) -> Vec<VoximplantCall> {
        self.shared.records().voximplant.clone()
    }

    /// Seeds a company into the Bitrix24 portal, for `crm.company.list`;
    /// returns its id.
    pub fn add_company(&self, fields: Map<String, Value>) -> u64 {
        let mut records = self.shared.records();
        let id = records.ids.company();
        records
            .companies
            .insert(id, state::BitrixCompany { id, fields });
        id
    }

    /// The portal's companies by id.
    pub fn bitrix_companies(&self) -> Vec<BitrixCompany> {
        self.shared.records().companies.values().cloned().collect()
    }

    /// Scripts how calls to `phone` end: each call placed to it (through
    /// Voximplant or Exolve) takes the next of `outcomes`, the last one
    /// repeating once they are used up, and is reported `delay` after it
    /// was placed. The number is matched on its digits (`+7 916 …` and
    /// `7916…` are one number). Scripting a number again replaces its
    /// script and starts it over; an empty `outcomes` drops it. An
    /// unscripted number answers `human` at once.
    pub fn script_calls(&self, phone: &str, outcomes: &[CallOutcome], delay: Duration) {
        self.shared.calls.script(phone, outcomes, delay);
    }

    /// Every call placed, oldest first, with how its report fared so far.
    pub fn calls(&self) -> Vec<PlacedCall> {
        self.shared.calls.calls()
    }

    /// Where call outcome reports go from now on, per provider (`None`:
    /// not reported), and the bearer token sent with them (`None`: no
    /// `Authorization` header). Replaces all three settings; reports still
    /// waiting for their delay go to the new URLs.
    pub fn set_call_events(
        &self,
        voximplant_url: Option<String>,
        exolve_url: Option<String>,
        token: Option<String>,
    ) {
        self.shared.calls.set_webhooks(calls::Webhooks {
            voximplant: voximplant_url,
            exolve: exolve_url,
            token,
        });
    }

    /// Forgets every record, script, switch, placed call and queued fault,
    /// stops pending call reports, and empties the Bitrix bucket. Ids keep
    /// counting, so none is handed out twice. The call events URLs stay.
    pub fn reset(&self) {
        self.shared.records().reset();
        self.shared.faults().clear();
        self.shared.calls.reset();
    }
}
