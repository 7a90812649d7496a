//! Assertions on the shapes API.md promises: problem+json bodies, timestamps, lists; and raw
//! requests (any method, any body, any content type) for the error-path tests.
#![allow(dead_code)]

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Reply, TestApp};

/// Sends `method url` with an optional content type and body, and returns the reply as the
/// helpers do (the JSON body, or the text as a JSON string).
pub async fn send(
    app: &TestApp,
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> Reply {
    let mut req = app.client.request(method, url);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().await.expect("request");
    into_reply(resp).await
}

pub async fn into_reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        body,
        headers,
    }
}

/// `GET` of a URL outside `/api/v1.0` (service endpoints, unknown routes).
pub async fn get_root(app: &TestApp, path: &str) -> Reply {
    send(app, Method::GET, &format!("{}{path}", app.address), None, None).await
}

/// A body that is not JSON-encoded by the client: sent as is with `application/json`.
pub async fn post_text(app: &TestApp, path: &str, text: &str) -> Reply {
    app.post_raw(path, text.to_string()).await
}

pub fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {:?}", reply.headers))
}

/// Asserts an RFC 9457 problem with `status`: the content type and every member, with the
/// right types, and nothing that looks like a stack trace.
#[track_caller]
pub fn assert_problem(reply: &Reply, status: u16) {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "unexpected status; body: {:#}",
        reply.body
    );
    assert_eq!(
        header(reply, "content-type"),
        "application/problem+json",
        "{:#}",
        reply.body
    );
    let body = reply
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {}", reply.body));
    let keys: BTreeSet<&str> = body.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["type", "title", "status", "detail", "errors"]),
        "{:#}",
        reply.body
    );
    assert!(
        body["type"].as_str().is_some_and(|t| !t.is_empty()),
        "{:#}",
        reply.body
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{:#}",
        reply.body
    );
    assert_eq!(body["status"], status, "{:#}", reply.body);
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{:#}",
        reply.body
    );
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors is not an array: {:#}", reply.body));
    for e in errors {
        let e = e.as_object().expect("error object");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e["path"].is_string() && e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let text = reply.body.to_string();
    for leak in ["panicked", "RUST_BACKTRACE", "src/", ".rs:", "sqlx", "DbErr"] {
        assert!(!text.contains(leak), "internal detail {leak:?} in {text}");
    }
}

/// Asserts a 422 whose `errors[].path` are exactly `paths` (in order), and returns the body.
#[track_caller]
pub fn assert_invalid(reply: &Reply, paths: &[&str]) {
    assert_problem(reply, 422);
    assert_eq!(reply.error_paths(), paths, "{:#}", reply.body);
}

/// The message of the first error at `path`.
#[track_caller]
pub fn message_at<'a>(reply: &'a Reply, path: &str) -> &'a str {
    reply.body["errors"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["path"] == path))
        .and_then(|e| e["message"].as_str())
        .unwrap_or_else(|| panic!("no error at {path}: {:#}", reply.body))
}

/// Every message at `path`.
pub fn messages_at<'a>(reply: &'a Reply, path: &str) -> Vec<&'a str> {
    reply.body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["path"] == path)
                .filter_map(|e| e["message"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts the message at `path` contains every one of `parts`.
#[track_caller]
pub fn assert_message(reply: &Reply, path: &str, parts: &[&str]) {
    let message = message_at(reply, path);
    for part in parts {
        assert!(message.contains(part), "{path}: {message:?} lacks {part:?}");
    }
}

/// Asserts an RFC 3339 UTC timestamp with milliseconds and a `Z`, e.g. `2026-11-23T18:40:00.123Z`.
#[track_caller]
pub fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {value}"));
    let re = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").expect("regex");
    assert!(re.is_match(text), "not RFC 3339 UTC with millis and Z: {text}");
    let parsed = chrono::DateTime::parse_from_rfc3339(text).expect("parses");
    assert_eq!(parsed.offset().local_minus_utc(), 0);
    // Sanity: created within the last hour (catches epoch or far-future values).
    let age = chrono::Utc::now().signed_duration_since(parsed);
    assert!(
        age > chrono::Duration::seconds(-5) && age < chrono::Duration::hours(1),
        "implausible timestamp {text}"
    );
}

/// Asserts `value` is an object whose keys are exactly `keys`.
#[track_caller]
pub fn assert_keys(value: &Value, keys: &[&str]) {
    let have: BTreeSet<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(have, want, "{value:#}");
}

/// The ids of a list reply's items.
pub fn ids(list: &Value) -> Vec<i64> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {list}"))
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect()
}

/// Walks a list endpoint page by page with `limit` (and `extra` query parameters), checking
/// each page's shape, and returns every id in the order served.
pub async fn walk(app: &TestApp, path: &str, extra: &str, limit: u64) -> Vec<i64> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    for _ in 0..10_000 {
        let mut url = format!("{path}?limit={limit}{extra}");
        if let Some(b) = before {
            url.push_str(&format!("&before_id={b}"));
        }
        let page = app.get(&url).await.expect(200);
        assert_keys(&page.body, &["items", "next_before_id"]);
        let page_ids = ids(&page.body);
        assert!(page_ids.len() as u64 <= limit, "{url}: {} items", page_ids.len());
        match page.body["next_before_id"].as_i64() {
            Some(next) => {
                assert_eq!(
                    page_ids.len() as u64,
                    limit,
                    "a page before the last is full: {url}"
                );
                assert_eq!(
                    Some(&next),
                    page_ids.last(),
                    "next_before_id is the last id: {url}"
                );
                all.extend(page_ids);
                before = Some(next);
            }
            None => {
                assert!(page.body["next_before_id"].is_null());
                all.extend(page_ids);
                return all;
            }
        }
    }
    panic!("paging {path} did not end");
}

/// The password (or any secret) must not appear anywhere in `reply`: body or headers.
#[track_caller]
pub fn assert_no_secret(reply: &Reply, secret: &str) {
    let body = match &reply.body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert!(!body.contains(secret), "secret leaked in body: {body}");
    for (name, value) in &reply.headers {
        assert!(
            !value.to_str().unwrap_or_default().contains(secret),
            "secret leaked in header {name}"
        );
    }
}

/// Posts `body` to `endpoint` and asserts a 422 whose errors are exactly `expected`, in order:
/// each `(path, part)` an error at `path` whose message contains `part`.
pub async fn assert_rejected(
    app: &TestApp,
    endpoint: &str,
    body: &Value,
    expected: &[(&str, &str)],
) -> Reply {
    let r = app.post(endpoint, body).await;
    let paths: Vec<&str> = expected.iter().map(|(p, _)| *p).collect();
    assert_problem(&r, 422);
    assert_eq!(r.error_paths(), paths, "request {body}\nreply {:#}", r.body);
    for (i, (path, part)) in expected.iter().enumerate() {
        let message = r.body["errors"][i]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(part),
            "{path}: {message:?} lacks {part:?}\nrequest {body}"
        );
    }
    assert_eq!(
        r.body["detail"],
        format!("{} problem(s) found; see errors", expected.len())
    );
    r
}
