//! The service: reads `TranscriptReady` events from JetStream and appends
//! the engine's verdict as `ConsentAnalyzed` to the call's stream, and a
//! `ContactOptedOut` to the contact's stream when the client asked not to be
//! called again. Ids are derived from the transcript event, so a redelivered
//! transcript appends nothing new.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use kit::bus::Bus;
use kit::config::Common;
use kit::consumer::{self, ConsumerConfig, HandleError, Handler, Input, Output};
use kit::events::decode;
use kit::proto::events::v1::{
    ConsentAnalyzed, ConsentDecision, ContactOptedOut, SpeakerRole, TranscriptReady,
};

use crate::{ANALYZER_VERSION, Analysis, Consent, Turn, analyze_turns};

/// Durable consumer name (and producer name in the log).
pub const NAME: &str = "consent-analyzer";

/// Settings of the service (besides [`Common`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "consent_analyzer")]
#[command(next_help_heading = "consent-analyzer")]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        id = "consent_analyzer_http_addr",
        long = "consent-analyzer-http-addr",
        env = "CONSENT_ANALYZER_HTTP_ADDR",
        default_value = "127.0.0.1:9105"
    )]
    pub http_addr: std::net::SocketAddr,

    /// Transcripts analysed at once.
    #[arg(
        id = "consent_analyzer_concurrency",
        long = "consent-analyzer-concurrency",
        env = "CONSENT_ANALYZER_CONCURRENCY",
        default_value_t = 8
    )]
    pub concurrency: usize,

    /// Deliveries of a failing transcript before it is parked.
    #[arg(
        id = "consent_analyzer_max_deliveries",
        long = "consent-analyzer-max-deliveries",
        env = "CONSENT_ANALYZER_MAX_DELIVERIES",
        default_value_t = 5
    )]
    pub max_deliveries: u64,
}

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bus(#[from] kit::bus::BusError),
    #[error("EVENT_STORE_URL: {0}")]
    Store(#[from] tonic::transport::Error),
    #[error(transparent)]
    Consumer(#[from] consumer::ConsumerError),
    #[error(transparent)]
    Listen(#[from] kit::health::BindError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// Runs the service until `shutdown`.
pub async fn run(common: Common, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let health = kit::health::bind_health(
        config.http_addr,
        kit::health::Health::new(),
        shutdown.clone(),
    )
    .await?;
    let bus = Bus::connect(&common, NAME).await?;
    let store = common.event_store(NAME)?;
    let consumer = ConsumerConfig {
        concurrency: config.concurrency,
        max_deliveries: config.max_deliveries,
        ..ConsumerConfig::new(
            NAME,
            bus.subject("call", kit::events::type_of::<TranscriptReady>()),
        )
    };
    let analyzer = Analyzer {
        contact_salt: common.contact_salt.clone(),
    };
    let (consumed, served) = tokio::join!(
        consumer::run(bus, store, consumer, Arc::new(analyzer), shutdown),
        health
    );
    consumed?;
    served.map_err(Error::Http)?;
    Ok(())
}

/// The handler: transcript in, verdict out.
pub struct Analyzer {
    /// Salt of contact stream names (see kit::contacts).
    pub contact_salt: String,
}

impl Handler for Analyzer {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let transcript: TranscriptReady =
            decode(&input.event).map_err(|e| HandleError::Reject(e.to_string()))?;
        Ok(verdict_events(
            &input.event.stream,
            &transcript,
            &self.contact_salt,
        ))
    }
}

/// The events that record the engine's verdict on `transcript`, appended to
/// the call's stream `call_stream`.
pub fn verdict_events(
    call_stream: &str,
    transcript: &TranscriptReady,
    contact_salt: &str,
) -> Vec<Output> {
    let turns: Vec<Turn> = transcript
        .turns
        .iter()
        .filter_map(|turn| match SpeakerRole::try_from(turn.role) {
            Ok(SpeakerRole::Manager) => Some(Turn::manager(&turn.text)),
            Ok(SpeakerRole::Client) => Some(Turn::client(&turn.text)),
            // A turn nobody can attribute cannot be the client's consent.
            _ => None,
        })
        .collect();
    let analysis = analyze_turns(&turns);
    let mut outputs = vec![Output::new(
        call_stream,
        "consent",
        &consent_analyzed(transcript, &analysis),
    )];
    if analysis.opt_out {
        match contact_stream(contact_salt, &transcript.client_phone) {
            Some(stream) => outputs.push(Output::new(
                stream,
                "opt-out",
                &ContactOptedOut {
                    phone: transcript.client_phone.clone(),
                    channel: "call".into(),
                    evidence: analysis.evidence.iter().map(|e| e.text.clone()).collect(),
                    provider: transcript.provider.clone(),
                    call_id: transcript.call_id.clone(),
                },
            )),
            None => tracing::warn!(
                call_id = %transcript.call_id,
                "client opted out but the call has no client number; recorded in ConsentAnalyzed only"
            ),
        }
    }
    outputs
}

fn consent_analyzed(transcript: &TranscriptReady, analysis: &Analysis) -> ConsentAnalyzed {
    let decision = match analysis.consent {
        Consent::Agreed => ConsentDecision::Agreed,
        Consent::Declined => ConsentDecision::Declined,
        Consent::Unclear => ConsentDecision::Unclear,
    };
    ConsentAnalyzed {
        provider: transcript.provider.clone(),
        call_id: transcript.call_id.clone(),
        decision: decision as i32,
        remind_after: analysis
            .remind_after
            .map(|p| p.to_string())
            .unwrap_or_default(),
        opt_out: analysis.opt_out,
        confidence: analysis.confidence,
        evidence: analysis.evidence.iter().map(|e| e.text.clone()).collect(),
        analyzer_version: ANALYZER_VERSION.into(),
        reason: analysis.reason.as_str().into(),
        client_phone: transcript.client_phone.clone(),
        call_started_at: transcript.call_started_at,
        language: transcript.language.clone(),
    }
}

/// The stream of the contact with number `phone` (see kit::contacts).
pub fn contact_stream(salt: &str, phone: &str) -> Option<String> {
    let phone = kit::phone::PhoneNumber::parse(phone, Default::default()).ok()?;
    Some(kit::contacts::contact_stream(salt, &phone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::proto::events::v1::TranscriptTurn;

    fn turn(role: SpeakerRole, text: &str) -> TranscriptTurn {
        TranscriptTurn {
            role: role as i32,
            text: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_opt_out_also_goes_to_the_contact_stream() {
        let transcript = TranscriptReady {
            provider: "exolve".into(),
            call_id: "1".into(),
            client_phone: "+79161234567".into(),
            turns: vec![
                turn(SpeakerRole::Manager, "Напомнить вам через месяц?"),
                turn(
                    SpeakerRole::Client,
                    "Нет. И больше мне не звоните, удалите мой номер.",
                ),
            ],
            ..Default::default()
        };
        let outputs = verdict_events("call-exolve-1", &transcript, "salt");
        assert_eq!(outputs.len(), 2);
    }

    #[test]
    fn a_transcript_without_client_turns_is_unclear_not_an_error() {
        let transcript = TranscriptReady {
            turns: vec![
                turn(SpeakerRole::Manager, "Алло? Вас не слышно."),
                turn(SpeakerRole::Unspecified, "да"),
            ],
            ..Default::default()
        };
        let analysis = analyze_turns(&[Turn::manager("Алло? Вас не слышно.")]);
        assert_eq!(analysis.consent, Consent::Unclear);
        assert_eq!(verdict_events("call-x-1", &transcript, "salt").len(), 1);
    }

    #[test]
    fn contact_streams_need_an_e164_number() {
        let stream = contact_stream("salt", "+79161234567").unwrap();
        assert!(
            stream.starts_with("contact-") && !stream.contains("9161234567"),
            "{stream}"
        );
        assert_eq!(
            contact_stream("salt", "89161234567").as_deref(),
            Some(stream.as_str())
        );
        assert_ne!(
            contact_stream("other salt", "+79161234567").as_deref(),
            Some(stream.as_str())
        );
        assert_eq!(contact_stream("salt", ""), None);
    }
}
