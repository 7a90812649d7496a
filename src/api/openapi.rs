//! The OpenAPI 3 document of the API as this server answers it: generated from the handlers'
//! `#[utoipa::path]` annotations and the types' `ToSchema` derives, then completed here by rule,
//! once, rather than on each handler: the problem+json responses that follow from the kind of
//! operation (a body, a query, an id), authentication as configured (with tokens, every
//! `/api/v1.0` operation requires the bearer scheme and may answer 401; without, none does),
//! and the request schemas' bounds (`schema_rules`). A method a documented path does not list
//! is answered 405 with `Allow`.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::config::Settings;
use crate::services::Services;

use super::dto::{DataStoreView, FlowInputSummary, FlowSummary};
use super::{
    dashboard, data_stores, events, flow_inputs, flows, health, observe, problem::PROBLEM_JSON, BASE,
};

/// `GET /data-stores`.
#[derive(Serialize, ToSchema)]
pub struct DataStoreList {
    pub items: Vec<DataStoreView>,
    pub next_before_id: Option<i64>,
}

/// `GET /flow-inputs`.
#[derive(Serialize, ToSchema)]
pub struct FlowInputList {
    pub items: Vec<FlowInputSummary>,
    pub next_before_id: Option<i64>,
}

/// `GET /flows`.
#[derive(Serialize, ToSchema)]
pub struct FlowList {
    pub items: Vec<FlowSummary>,
    pub next_before_id: Option<i64>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        description = "Run data flows: ingest, transform with a SQL DAG, persist atomically, follow live. \
            Errors are application/problem+json (RFC 9457). When API tokens are configured every /api/v1.0 \
            request needs `Authorization: Bearer <token>`."
    ),
    paths(
        health::healthz,
        health::readyz,
        observe::metrics,
        dashboard::index,
        dashboard::asset,
        data_stores::create,
        data_stores::list,
        data_stores::get,
        data_stores::check,
        flow_inputs::create,
        flow_inputs::list,
        flow_inputs::get,
        flows::create,
        flows::list,
        flows::get,
        flows::cancel,
        events::events,
        document,
    ),
    components(schemas(
        events::StreamEnd,
        crate::domain::flow::TaskStatus,
        crate::domain::flow::CheckStatus,
        crate::events::StateUpdate,
        crate::events::ProgressUpdate,
        crate::events::TaskRows,
        crate::events::LineUpdate,
    )),
    tags(
        (name = "data-stores", description = "Where data is read from and written to"),
        (name = "flow-inputs", description = "Immutable pipeline descriptions"),
        (name = "flows", description = "Runs of flow inputs: start, follow, cancel"),
        (name = "service", description = "Health, metrics, this document and the dashboard"),
    )
)]
pub struct ApiDoc;

/// Adds the problem+json responses that follow from the kind of operation: 400 where there is
/// a query or a body (malformed, wrong types, unknown fields), 413 and 422 where there is a
/// body, 422 where there is a query (values out of range), 404 where there is an id, 500 under
/// the API base; and with `auth`, the bearer scheme and 401 on every operation under it.
struct SharedResponses {
    auth: bool,
}

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        if self.auth {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
        components
            .schemas
            .entry("Problem".to_string())
            .or_insert_with(<super::problem::Problem as utoipa::PartialSchema>::schema);
        for (path, item) in openapi.paths.paths.iter_mut() {
            let under_api = path.starts_with(BASE);
            let has_id = path.contains("{id}");
            for op in operations(item) {
                let has_body = op.request_body.is_some();
                let has_query = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == ParameterIn::Query);
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem(description).into());
                };
                if has_body {
                    add(
                        "400",
                        "Malformed JSON, a body that is not JSON, a field of the wrong type or an unknown field",
                    );
                    add("413", "The body is larger than server.max_body_bytes");
                    add("422", "Well-formed but invalid; `errors` lists every problem");
                }
                if has_query {
                    add(
                        "400",
                        "A malformed query string, a parameter of the wrong type or an unknown parameter",
                    );
                    add("422", "A parameter out of range; `errors` lists every problem");
                }
                if under_api && self.auth {
                    add("401", "Missing or invalid bearer token");
                    op.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                }
                if has_id {
                    add("404", "No such id");
                }
                if under_api || has_id {
                    add("500", "An internal error (logged; no details are returned)");
                }
            }
        }
    }
}

/// Where the events endpoint's stream is described.
const EVENT_STREAM: &str =
    "/paths/~1api~1v1.0~1flows~1{id}~1events/get/responses/200/content/text~1event-stream";

/// The OpenAPI document of a server with `settings`, as JSON.
pub fn document_json(settings: &Settings) -> serde_json::Value {
    let (doc, unmatched) = build(settings);
    if !unmatched.is_empty() {
        // A type or field was renamed without its rule (a unit test catches this first).
        tracing::warn!(?unmatched, "OpenAPI document: rules that name nothing");
    }
    doc
}

/// The document, and the places the completing rules looked for but did not find.
fn build(settings: &Settings) -> (serde_json::Value, Vec<&'static str>) {
    let mut openapi = ApiDoc::openapi();
    SharedResponses {
        auth: !settings.auth.tokens.is_empty(),
    }
    .modify(&mut openapi);
    let mut doc = serde_json::to_value(openapi).unwrap_or_default();
    let mut unmatched = super::schema_rules::apply(&mut doc, settings);
    // utoipa has no words for the events of a stream: the 200 of the events endpoint gets the
    // schema of one event, which is how OpenAPI 3.1 readers take an event stream's schema.
    match doc.pointer_mut(EVENT_STREAM) {
        Some(Value::Object(media)) => {
            media.insert("schema".into(), events::event_schema());
        }
        _ => unmatched.push(EVENT_STREAM),
    }
    (doc, unmatched)
}

#[utoipa::path(
    get, path = "/api/v1.0/openapi.json", operation_id = "openapi_document", tag = "service",
    responses((status = 200, description = "This document (OpenAPI 3.1), as this server's configuration makes it", body = Object))
)]
pub async fn document(services: web::Data<Services>) -> HttpResponse {
    HttpResponse::Ok().json(document_json(&services.settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_completing_rule_finds_its_place() {
        let settings = Settings::load_with(None, Vec::new()).unwrap();
        let (doc, unmatched) = build(&settings);
        assert!(unmatched.is_empty(), "{unmatched:?}");
        assert!(doc.pointer(EVENT_STREAM).is_some());
    }
}
