//! A small HTTP client for the REST API: JSON in, JSON out, problem+json errors turned into
//! readable messages, and the events stream as parsed Server-Sent Events.

use std::fmt;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::sse::{SseEvent, SseParser};

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// The server could not be reached, or the connection broke.
    Network(String),
    /// The server answered with an error status (a problem document, when it sent one).
    Status { status: StatusCode, problem: Value },
    /// A local problem: an unreadable file, bad JSON.
    Input(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Network(e) => write!(f, "{e}"),
            ClientError::Input(e) => write!(f, "{e}"),
            ClientError::Status { status, problem } => {
                let title = problem["title"]
                    .as_str()
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or(""));
                write!(f, "{} {title}", status.as_u16())?;
                if let Some(detail) = problem["detail"].as_str() {
                    write!(f, ": {detail}")?;
                }
                for e in problem["errors"].as_array().into_iter().flatten() {
                    write!(
                        f,
                        "\n  {}: {}",
                        e["path"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ClientError {}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for the server at `url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Network(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1.0{path}", self.base)
    }

    fn builder(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    fn network(&self, e: reqwest::Error) -> ClientError {
        // reqwest's message names the URL, which holds no credentials (the token is a header).
        ClientError::Network(format!("cannot reach {}: {e}", self.base))
    }

    /// Sends a request and returns the JSON body of a success.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let mut req = self
            .builder(method, path)
            .timeout(std::time::Duration::from_secs(60));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.network(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.network(e))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            Err(ClientError::Status {
                status,
                problem: value,
            })
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Opens a flow's events stream and calls `on_event` for each event until the stream ends.
    /// Returns whether an `end` event was seen.
    pub async fn events(
        &self,
        flow_id: i64,
        mut on_event: impl FnMut(SseEvent),
    ) -> Result<bool, ClientError> {
        let resp = self
            .builder(Method::GET, &format!("/flows/{flow_id}/events"))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| self.network(e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                status,
                problem: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            });
        }
        let mut parser = SseParser::default();
        let mut chunks = resp.bytes_stream();
        let mut ended = false;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.network(e))?;
            for event in parser.push(&chunk) {
                ended |= event.event == "end";
                on_event(event);
            }
            if ended {
                break;
            }
        }
        Ok(ended)
    }
}
