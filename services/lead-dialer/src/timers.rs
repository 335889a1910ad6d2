//! The dialer's durable timers, kept by the reminder-scheduler's
//! TimerService: "dial attempt 2 at 09:00 Vladivostok time", "give up on
//! attempt 1's result at 12:15". A timer survives restarts of either
//! service and fires once; its `TimerFired` comes back on JetStream and
//! [`crate::callback::OnTimer`] takes it from there.

use jiff::Timestamp;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use kit::events::to_proto_time;
use kit::proto::timers::v1::SetTimerRequest;
use kit::proto::timers::v1::timer_service_client::TimerServiceClient;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Place the planned call.
    Dial,
    /// Stop waiting for a placed call's result.
    ResultDeadline,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Dial => "dial",
            Purpose::ResultDeadline => "result_deadline",
        }
    }
}

/// A client of the scheduler's TimerService.
#[derive(Clone)]
pub struct Timers {
    client: TimerServiceClient<Channel>,
}

impl Timers {
    /// Connects on first use, so the dialer starts while the scheduler is
    /// still starting.
    pub fn connect_lazy(url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(Self {
            client: TimerServiceClient::new(channel),
        })
    }

    /// Sets the timer of `lead_id`'s attempt for `purpose` at `at`.
    /// Idempotent: the key names the lead, the attempt, the purpose and the
    /// time, so asking again (a redelivery) changes nothing, and a moved
    /// call gets a timer of its own.
    pub async fn set(
        &self,
        lead_id: &str,
        attempt: u32,
        purpose: Purpose,
        at: Timestamp,
    ) -> Result<(), tonic::Status> {
        let request = SetTimerRequest {
            owner: crate::NAME.into(),
            key: format!(
                "lead/{lead_id}/{}/{attempt}/{}",
                purpose.as_str(),
                at.as_second()
            ),
            purpose: purpose.as_str().into(),
            subject: format!("lead-{lead_id}"),
            due_at: Some(to_proto_time(at)),
            data: attempt.to_string(),
            correlation_id: lead_id.into(),
            requested_by: crate::NAME.into(),
        };
        self.client.clone().set(request).await.map(|_| ())
    }
}
