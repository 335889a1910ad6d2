//! A simulator per test, on a free port, stopped when the test ends.

#![allow(dead_code)]

use std::sync::Arc;

use jiff::Timestamp;
use kit::clock::{SharedClock, TestClock};
use provider_sim::{ProviderSim, SimConfig, SimHandle};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const EXOLVE_KEY: &str = "sim-exolve-key";
pub const TELEGRAM_TOKEN: &str = "sim-telegram-token";
pub const BITRIX_SECRET: &str = "sim-bitrix-secret";

pub struct Sim {
    pub handle: SimHandle,
    pub base: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start(config: SimConfig) -> Sim {
    let sim = ProviderSim::bind("127.0.0.1:0", config)
        .await
        .expect("bind");
    let handle = sim.handle();
    let base = sim.base_url();
    let shutdown = CancellationToken::new();
    let task = sim.spawn(shutdown.clone());
    Sim {
        handle,
        base,
        http: reqwest::Client::new(),
        shutdown,
        task: Some(task),
    }
}

pub async fn start_default() -> Sim {
    start(SimConfig::default()).await
}

/// A config whose clock only moves when the test moves it.
pub fn with_test_clock() -> (SimConfig, Arc<TestClock>) {
    let clock = TestClock::new("2026-03-02T09:00:00Z".parse::<Timestamp>().unwrap());
    let config = SimConfig {
        clock: clock.clone() as SharedClock,
        ..SimConfig::default()
    };
    (config, clock)
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON to an Exolve path with the right key.
    pub async fn exolve(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(EXOLVE_KEY)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn telegram(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/bot{TELEGRAM_TOKEN}/sendMessage")))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn slack(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/services/T0001/B0001/abcdefsecret"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn bitrix(&self, method: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/rest/1/{BITRIX_SECRET}/{method}")))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn voximplant_form(&self, form: &str) -> reqwest::Response {
        self.http
            .post(self.url("/platform_api/StartScenarios"))
            .bearer_auth("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .expect("request")
    }
}

/// The status and JSON body of a response.
pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// The status, `Retry-After` and text body of a response.
pub async fn text_of(response: reqwest::Response) -> (u16, Option<String>, String) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.text().await.expect("body"))
}
