use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::dto::{FlowSummary, FlowView, List};
use super::extract::{Json, Query};
use super::{Paging, BASE, DEFAULT_LIMIT};
use crate::domain::flow::FlowState;
use crate::error::{AppError, FieldError};
use crate::services::Services;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFlow {
    pub flow_input_id: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    pub state: Option<String>,
    pub limit: Option<u64>,
    pub before_id: Option<i64>,
}

pub async fn create(services: web::Data<Services>, body: Json<NewFlow>) -> Result<HttpResponse, AppError> {
    let record = services.create_flow(body.0.flow_input_id).await?;
    let view = FlowView::from(record);
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("{BASE}/flows/{}", view.id)))
        .json(view))
}

pub async fn get(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let record = services.get_flow(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(FlowView::from(record)))
}

pub async fn list(services: web::Data<Services>, query: Query<FlowQuery>) -> Result<HttpResponse, AppError> {
    let q = query.into_inner();
    // Every problem of the query is reported, not just the first.
    let mut errors = Vec::new();
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => {
            let state = FlowState::parse(&s.to_ascii_uppercase());
            if state.is_none() {
                errors.push(FieldError::new(
                    "state",
                    format!("unknown state {s:?}: use READY, RUNNING, CANCELLED, FAILED or COMPLETED"),
                ));
            }
            state
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
    Ok(HttpResponse::Ok().json(List::from_page(page, |r| Ok(FlowSummary::from(r)))?))
}

pub async fn cancel(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let record = services.cancel_flow(id.into_inner()).await?;
    Ok(HttpResponse::Accepted().json(FlowView::from(record)))
}
