use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::Ref;

use super::dto::{FlowSummary, FlowView, List};
use super::extract::{Json, Query};
use super::{Paging, BASE, DEFAULT_LIMIT};
use crate::domain::flow::FlowState;
use crate::error::{AppError, FieldError};
use crate::services::Services;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFlow {
    pub flow_input_id: i64,
    /// Ignore the marks of the input's cursor sources: read everything (and start new marks).
    #[serde(default)]
    pub full_refresh: Option<bool>,
    /// Retry this FAILED or CANCELLED flow of the same input: reuse the checkpoints it kept and
    /// run only the rest.
    pub retry_of: Option<i64>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    /// Only flows in this state: READY, RUNNING, CANCELLED, FAILED or COMPLETED, in any case;
    /// empty means every state.
    #[param(schema_with = state_filter_schema)]
    pub state: Option<String>,
    /// Items per page: 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// Only flows with a smaller id (the previous page's `next_before_id`).
    pub before_id: Option<i64>,
}

#[utoipa::path(
    post, path = "/api/v1.0/flows", operation_id = "create_flow", tag = "flows",
    request_body = NewFlow,
    responses(
        (status = 202, description = "Created READY; runs in the background", body = FlowView,
            headers(("Location" = String, description = "The new flow's URL"))),
        (status = 409, description = "`retry_of` is a flow of another input, or has not ended FAILED or CANCELLED", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(services: web::Data<Services>, body: Json<NewFlow>) -> Result<HttpResponse, AppError> {
    let record = services
        .create_flow(
            body.0.flow_input_id,
            body.0.full_refresh.unwrap_or(false),
            body.0.retry_of,
        )
        .await?;
    let view = FlowView::from(record);
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("{BASE}/flows/{}", view.id)))
        .json(view))
}

#[utoipa::path(
    get, path = "/api/v1.0/flows/{id}", operation_id = "get_flow", tag = "flows",
    params(("id" = i64, Path, minimum = 1, description = "Flow id")),
    responses((status = 200, description = "The flow with its live output", body = FlowView))
)]
pub async fn get(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let record = services.get_flow(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(FlowView::from(record)))
}

#[utoipa::path(
    get, path = "/api/v1.0/flows", operation_id = "list_flows", tag = "flows",
    params(FlowQuery),
    responses((status = 200, description = "Newest first; summaries without logs", body = super::openapi::FlowList))
)]
pub async fn list(services: web::Data<Services>, query: Query<FlowQuery>) -> Result<HttpResponse, AppError> {
    let q = query.into_inner();
    // Every problem of the query is reported, not just the first.
    let mut errors = Vec::new();
    let state = match q.state.as_deref().map(parse_state_filter) {
        None => None,
        Some(Ok(state)) => state,
        Some(Err(problem)) => {
            errors.push(problem);
            None
        }
    };
    let paging = Paging {
        limit: q.limit,
        before_id: q.before_id,
    };
    let limit = match paging.limit() {
        Ok(limit) => limit,
        Err(AppError::Invalid(more)) => {
            errors.extend(more);
            DEFAULT_LIMIT
        }
        Err(other) => return Err(other),
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let page = services.list_flows(state, limit, paging.before_id).await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, FlowSummary::from)))
}

/// `?state=`: a state's name in any case, or empty for every state.
fn parse_state_filter(text: &str) -> Result<Option<FlowState>, FieldError> {
    if text.is_empty() {
        return Ok(None);
    }
    FlowState::parse(&text.to_ascii_uppercase())
        .map(Some)
        .ok_or_else(|| {
            FieldError::new(
                "state",
                format!("unknown state {text:?}: use READY, RUNNING, CANCELLED, FAILED or COMPLETED"),
            )
        })
}

/// What `parse_state_filter` accepts: the states (as the enum `FlowState` documents them), or
/// the same names in any case, or nothing.
fn state_filter_pattern() -> String {
    let any_case = |name: &str| -> String {
        name.chars()
            .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
            .collect()
    };
    let names: Vec<String> = FlowState::ALL.iter().map(|s| any_case(s.as_str())).collect();
    format!("^(|{})$", names.join("|"))
}

fn state_filter_schema() -> Schema {
    AnyOfBuilder::new()
        .item(Ref::from_schema_name("FlowState"))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(state_filter_pattern())),
        )
        .build()
        .into()
}

#[utoipa::path(
    post, path = "/api/v1.0/flows/cancel/{id}", operation_id = "cancel_flow", tag = "flows",
    params(("id" = i64, Path, minimum = 1, description = "Flow id")),
    responses(
        (status = 202, description = "Cancel sent (a READY flow is CANCELLED at once)", body = FlowView),
        (status = 409, description = "The flow has already ended", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let record = services.cancel_flow(id.into_inner()).await?;
    Ok(HttpResponse::Accepted().json(FlowView::from(record)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_pattern_accepts_exactly_what_the_filter_accepts() {
        let pattern = regex::Regex::new(&state_filter_pattern()).unwrap();
        for text in [
            "",
            "READY",
            "ready",
            "Running",
            "cAnCeLlEd",
            "FAILED",
            "completed",
            "DONE",
            "READY ",
            " READY",
            "READY\n",
            "RUNNING!",
            "1",
            "READYREADY",
            "REA",
            "\u{17f}",
            "failed|",
        ] {
            assert_eq!(
                pattern.is_match(text),
                parse_state_filter(text).is_ok(),
                "{text:?}"
            );
        }
    }
}
