//! Live events (`GET /flows/{id}/events`): a snapshot first, then state, progress, task, log
//! and error events in order, `end` after the final state; several followers at once; late
//! followers; unknown flows.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use sluice::cli::sse::SseParser;

use crate::helpers::*;

/// One received event: its name and JSON payload.
#[derive(Debug, Clone)]
pub struct Ev {
    pub name: String,
    pub data: Value,
}

/// An open events stream.
pub struct Stream {
    inner: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    parser: SseParser,
    queue: std::collections::VecDeque<Ev>,
    pub raw: String,
}

impl Stream {
    pub async fn open(app: &Api, flow: i64) -> Stream {
        // A stream lives as long as its flow: no whole-request timeout (the shared client's 30 s
        // would cut a long stream on a busy machine); `next` catches hangs.
        let streaming = reqwest::Client::builder()
            .read_timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let resp = streaming
            .get(app.api(&format!("/flows/{flow}/events")))
            .send()
            .await
            .expect("events request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream {
            inner: Box::pin(resp.bytes_stream()),
            parser: SseParser::default(),
            queue: Default::default(),
            raw: String::new(),
        }
    }

    /// The next event, or `None` when the stream ended. Panics after `timeout` without one.
    pub async fn next(&mut self, timeout: Duration) -> Option<Ev> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(ev);
            }
            let chunk = tokio::time::timeout_at(deadline, self.inner.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {timeout:?}; got so far:\n{}", self.raw));
            match chunk {
                None => return None,
                Some(chunk) => {
                    let chunk = chunk.expect("stream chunk");
                    self.raw.push_str(&String::from_utf8_lossy(&chunk));
                    for e in self.parser.push(&chunk) {
                        let data = serde_json::from_str(&e.data).expect("JSON data");
                        self.queue.push_back(Ev { name: e.event, data });
                    }
                }
            }
        }
    }

    /// Every event until the stream closes (which it must within `timeout`).
    pub async fn collect(mut self, timeout: Duration) -> Vec<Ev> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut all = Vec::new();
        while let Some(ev) = self
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            all.push(ev);
        }
        all
    }

    /// Reads until an event satisfies `pred`; returns the events read, that one last.
    pub async fn until(&mut self, timeout: Duration, pred: impl Fn(&Ev) -> bool) -> Vec<Ev> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let ev = self
                .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
                .unwrap_or_else(|| panic!("stream ended before the expected event: {seen:#?}"));
            let done = pred(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }
}

fn names(events: &[Ev]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

fn states(events: &[Ev]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.name == "state")
        .map(|e| e.data["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The flow states a follower went through, from snapshots and state events (a snapshot may
/// carry a change instead of an event when the stream re-synchronised), repeats removed.
fn state_story(events: &[Ev]) -> Vec<String> {
    let mut story: Vec<String> = Vec::new();
    for e in events {
        let s = match e.name.as_str() {
            "snapshot" => &e.data["output"]["state"],
            "state" => &e.data["state"],
            _ => continue,
        };
        let s = s.as_str().unwrap_or_default().to_string();
        if story.last() != Some(&s) {
            story.push(s);
        }
    }
    story
}

/// Likewise for one task.
fn task_story(events: &[Ev], name: &str) -> Vec<String> {
    let mut story: Vec<String> = Vec::new();
    for e in events {
        let s = match e.name.as_str() {
            "snapshot" => task(&e.data, name)["state"].clone(),
            "task" if e.data["name"] == name => e.data["state"].clone(),
            _ => continue,
        };
        let s = s.as_str().unwrap_or_default().to_string();
        if story.last() != Some(&s) {
            story.push(s);
        }
    }
    story
}

/// The log (or error) lines a follower ends up with: the last snapshot's, plus the line events
/// after it. Equal to the stored lines when nothing was lost or repeated.
fn replayed(events: &[Ev], event: &str, field: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for e in events {
        if e.name == "snapshot" {
            lines = e.data["output"][field]["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect();
        } else if e.name == event {
            lines.push(e.data["line"].as_str().unwrap().to_string());
        }
    }
    lines
}

/// `story` is `expected` with some middle steps possibly missed (they were too short to see).
fn assert_story(story: &[String], expected: &[&str]) {
    let mut rest = expected.iter();
    for s in story {
        assert!(
            rest.any(|e| e == s),
            "story {story:?} does not follow {expected:?}"
        );
    }
    assert_eq!(
        story.last().map(String::as_str),
        expected.last().copied(),
        "{story:?}"
    );
}

fn task_states(events: &[Ev], task: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.name == "task" && e.data["name"] == task)
        .map(|e| e.data["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn lines(events: &[Ev], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.name == name)
        .map(|e| e.data["line"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Checks what every stream must satisfy: a snapshot first, `end` last (right after the final
/// state), progress never going down.
fn check_shape(events: &[Ev], final_state: &str) {
    assert!(events.len() >= 2, "{events:#?}");
    assert_eq!(events[0].name, "snapshot", "{:?}", names(events));
    let n = events.len();
    assert_eq!(events[n - 1].name, "end", "{:?}", names(events));
    assert_eq!(events[n - 1].data["state"], final_state);
    assert_eq!(events[n - 2].name, "state", "{:?}", names(events));
    assert_eq!(events[n - 2].data["state"], final_state);
    assert_eq!(
        events.iter().filter(|e| e.name == "end").count(),
        1,
        "{:?}",
        names(events)
    );
    let percents: Vec<f64> = events
        .iter()
        .filter_map(|e| match e.name.as_str() {
            "progress" | "state" => e.data["percent"].as_f64(),
            "snapshot" => e.data["output"]["progress"]["percent"].as_f64(),
            _ => None,
        })
        .collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
}

/// A source directory with `n` rows, a SQLite target, and a flow input of `transforms`.
async fn setup(app: &TestApp, name: &str, transforms: Value) -> i64 {
    let mut csv = String::from("id,amount\n");
    for i in 1..=50 {
        csv.push_str(&format!("{i},{}\n", i * 10));
    }
    app.write_file("in/orders.csv", csv);
    let src = app.csv_store(&format!("raw_{name}"), "in").await;
    let db = app.sqlite_store(&format!("w_{name}"), "out/w.db").await;
    app.create_input(json!({
        "name": name, "source_store_ids": [src], "target_store_id": db,
        "sources": [{"name": "orders", "store_id": src, "path": "orders.csv"}],
        "transforms": transforms
    }))
    .await
}

const SLOW_SQL: &str = "SELECT count(*) AS n FROM range(300000) r1 CROSS JOIN range(300000) r2";

/// A flow that holds the only slot until it is cancelled, so the next flow waits READY and a
/// follower sees all of its life.
async fn blocker(app: &TestApp) -> i64 {
    let input = setup(app, "blocker", json!([{"name": "hold", "sql": SLOW_SQL}])).await;
    let flow = app.start_flow(input).await;
    app.wait_flow(flow, Duration::from_secs(30), |f| state(f) == "RUNNING")
        .await;
    flow
}

async fn cancel(app: &TestApp, flow: i64) {
    app.post(&format!("/flows/cancel/{flow}"), &json!({}))
        .await
        .expect(202);
}

fn one_slot() -> AppOptions {
    AppOptions::default().env("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "1")
}

#[tokio::test]
async fn a_completed_flow_streams_its_whole_story_in_order() {
    let app = spawn_app_with(one_slot()).await;
    let hold = blocker(&app).await;
    let input = setup(
        &app,
        "ok",
        json!([
            {"name": "big", "sql": "SELECT id, amount FROM orders WHERE amount > 100"},
            {"name": "total", "sql": "SELECT count(*) AS n FROM big"}
        ]),
    )
    .await;
    let flow = app.start_flow(input).await;
    let stream = Stream::open(&app, flow).await;
    cancel(&app, hold).await;
    let events = stream.collect(Duration::from_secs(60)).await;
    check_shape(&events, "COMPLETED");
    assert_eq!(events[0].data["id"], flow);
    assert_eq!(events[0].data["output"]["state"], "READY");
    assert_eq!(state_story(&events), ["READY", "RUNNING", "COMPLETED"]);
    assert_eq!(states(&events).last().unwrap(), "COMPLETED");
    let done = events.iter().rev().find(|e| e.name == "state").unwrap();
    assert_eq!(done.data["percent"], 100.0);
    assert!(done.data["finished_utc"].is_string());
    for t in ["orders", "big", "total", "total->total"] {
        assert_story(&task_story(&events, t), &["PENDING", "RUNNING", "COMPLETED"]);
    }
    // Every task ends before the flow does.
    let last_task = events.iter().rposition(|e| e.name == "task").unwrap();
    assert!(last_task < events.len() - 2, "{:?}", names(&events));
    let logs = replayed(&events, "log", "logs");
    assert!(
        logs.iter().any(|l| l.ends_with("INFO [flow] flow running")),
        "{logs:#?}"
    );
    assert!(
        lines(&events, "log")
            .iter()
            .any(|l| l.contains("INFO [big] completed: 40 rows")),
        "{logs:#?}"
    );
    assert!(
        logs.last().unwrap().ends_with("INFO [flow] flow completed"),
        "{logs:#?}"
    );
    assert!(lines(&events, "error").is_empty());
    // Nothing lost, nothing repeated: the follower's log is the stored log.
    let stored = app.flow(flow).await;
    assert_eq!(json!(logs), stored["output"]["logs"]["lines"]);
}

#[tokio::test]
async fn a_failed_flow_streams_its_errors_then_failed() {
    let app = spawn_app_with(one_slot()).await;
    let hold = blocker(&app).await;
    let input = setup(
        &app,
        "bad",
        json!([
            {"name": "broken", "sql": "SELECT id,\n  amout FROM orders"},
            {"name": "after", "sql": "SELECT count(*) AS n FROM broken"}
        ]),
    )
    .await;
    let flow = app.start_flow(input).await;
    let stream = Stream::open(&app, flow).await;
    cancel(&app, hold).await;
    let events = stream.collect(Duration::from_secs(60)).await;
    check_shape(&events, "FAILED");
    assert_eq!(state_story(&events), ["READY", "RUNNING", "FAILED"]);
    assert_story(&task_story(&events, "broken"), &["PENDING", "RUNNING", "FAILED"]);
    assert_eq!(task_states(&events, "broken").last().unwrap(), "FAILED");
    assert_eq!(task_story(&events, "after"), ["PENDING", "SKIPPED"]);
    let failed = events
        .iter()
        .find(|e| e.name == "task" && e.data["state"] == "FAILED")
        .unwrap();
    assert!(
        failed.data["error"].as_str().unwrap().contains("amout"),
        "{:#}",
        failed.data
    );
    let errors = lines(&events, "error");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("ERROR [broken]") && errors[0].contains("line 2, column 3"),
        "{errors:#?}"
    );
    // The error event comes before the final state.
    let error_at = events.iter().position(|e| e.name == "error").unwrap();
    assert!(error_at < events.len() - 2);
    let stored = app.flow(flow).await;
    assert_eq!(
        json!(replayed(&events, "error", "errors")),
        stored["output"]["errors"]["lines"]
    );
    assert_eq!(
        json!(replayed(&events, "log", "logs")),
        stored["output"]["logs"]["lines"]
    );
}

#[tokio::test]
async fn a_cancelled_flow_streams_cancelled_and_two_followers_see_the_same() {
    let app = spawn_app().await;
    let input = setup(&app, "slow", json!([{"name": "slow", "sql": SLOW_SQL}])).await;
    let flow = app.start_flow(input).await;
    let mut first = Stream::open(&app, flow).await;
    let mut second = Stream::open(&app, flow).await;
    // Both see the slow task start.
    let is_slow_running = |e: &Ev| {
        e.name == "task" && e.data["name"] == "slow" && e.data["state"] == "RUNNING"
            || e.name == "snapshot" && task(&e.data, "slow")["state"] == "RUNNING"
    };
    let a = first.until(Duration::from_secs(30), is_slow_running).await;
    let b = second.until(Duration::from_secs(30), is_slow_running).await;
    cancel(&app, flow).await;
    let mut a_all = a;
    a_all.extend(first.collect(Duration::from_secs(10)).await);
    let mut b_all = b;
    b_all.extend(second.collect(Duration::from_secs(10)).await);
    for events in [&a_all, &b_all] {
        check_shape(events, "CANCELLED");
        assert_eq!(states(events).last().unwrap(), "CANCELLED");
        assert_eq!(task_states(events, "slow").last().unwrap(), "CANCELLED");
        assert_eq!(task_states(events, "slow->slow").last().unwrap(), "CANCELLED");
        let logs = lines(events, "log");
        assert!(
            logs.iter().any(|l| l.ends_with("WARN [flow] cancel requested")),
            "{logs:#?}"
        );
        assert!(
            logs.last().unwrap().ends_with("INFO [flow] flow cancelled"),
            "{logs:#?}"
        );
    }
    let stored = app.flow(flow).await;
    for events in [&a_all, &b_all] {
        assert_eq!(
            json!(replayed(events, "log", "logs")),
            stored["output"]["logs"]["lines"]
        );
    }
    // What both saw after the cancel is the same story.
    let tail = |events: &[Ev]| {
        let from = events
            .iter()
            .position(|e| e.name == "log" && e.data["line"].as_str().unwrap().ends_with("cancel requested"))
            .unwrap();
        events[from..]
            .iter()
            .filter(|e| e.name != "progress")
            .map(|e| format!("{} {}", e.name, e.data))
            .collect::<Vec<_>>()
    };
    assert_eq!(tail(&a_all), tail(&b_all));
}

#[tokio::test]
async fn a_follower_joining_after_the_end_gets_the_snapshot_then_end() {
    let app = spawn_app().await;
    let input = setup(
        &app,
        "quick",
        json!([{"name": "t", "sql": "SELECT count(*) AS n FROM orders"}]),
    )
    .await;
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "COMPLETED");
    let events = Stream::open(&app, flow)
        .await
        .collect(Duration::from_secs(10))
        .await;
    assert_eq!(names(&events), ["snapshot", "end"]);
    assert_eq!(events[0].data["output"]["state"], "COMPLETED");
    assert_eq!(events[0].data["output"]["progress"]["percent"], 100.0);
    assert_eq!(
        events[0].data["output"]["logs"]["lines"],
        done["output"]["logs"]["lines"]
    );
    assert_eq!(events[1].data["state"], "COMPLETED");
}

#[tokio::test]
async fn progress_events_report_rows_while_a_load_runs() {
    let app = spawn_app().await;
    let input = setup(
        &app,
        "load",
        json!([{"name": "many", "sql": "SELECT r.value AS v, o.id FROM range(400000) r CROSS JOIN orders o"}]),
    )
    .await;
    let flow = app.start_flow(input).await;
    let events = Stream::open(&app, flow)
        .await
        .collect(Duration::from_secs(120))
        .await;
    check_shape(&events, "COMPLETED");
    let progress: Vec<&Ev> = events.iter().filter(|e| e.name == "progress").collect();
    assert!(!progress.is_empty(), "{:?}", names(&events));
    assert!(
        progress
            .iter()
            .any(|p| p.data["tasks"].as_array().is_some_and(|t| !t.is_empty())),
        "{progress:#?}"
    );
}

#[tokio::test]
async fn an_unknown_flow_is_404() {
    let app = spawn_app().await;
    let reply = app.get("/flows/4242/events").await.expect(404);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn with_auth_on_the_stream_needs_the_token() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__AUTH__TOKENS", "t0ken-abc")).await;
    let resp = app
        .client
        .get(app.api("/flows/1/events"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
    let resp = app
        .client
        .get(app.api("/flows/1/events"))
        .bearer_auth("t0ken-abc")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);
}
