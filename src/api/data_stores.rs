use actix_web::{web, HttpResponse};

use super::dto::{DataStoreView, List, StoreCheckView};
use super::extract::{Json, Query};
use super::{Paging, BASE};
use crate::domain::store::NewDataStoreRequest;
use crate::error::AppError;
use crate::services::Services;

#[utoipa::path(
    post, path = "/api/v1.0/data-stores", operation_id = "create_data_store", tag = "data-stores",
    request_body = NewDataStoreRequest,
    responses(
        (status = 201, description = "Created; never returns the password", body = DataStoreView,
            headers(("Location" = String, description = "The new store's URL"))),
        (status = 409, description = "A data store with this name exists", body = super::problem::Problem,
            content_type = "application/problem+json"),
    )
)]
pub async fn create(
    services: web::Data<Services>,
    body: Json<NewDataStoreRequest>,
) -> Result<HttpResponse, AppError> {
    let view = DataStoreView::from(services.create_data_store(body.0).await?);
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("{BASE}/data-stores/{}", view.id)))
        .json(view))
}

#[utoipa::path(
    get, path = "/api/v1.0/data-stores/{id}", operation_id = "get_data_store", tag = "data-stores",
    params(("id" = i64, Path, minimum = 1, description = "Data store id")),
    responses((status = 200, description = "The store (never its password)", body = DataStoreView))
)]
pub async fn get(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let record = services.get_data_store(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(DataStoreView::from(record)))
}

#[utoipa::path(
    get, path = "/api/v1.0/data-stores", operation_id = "list_data_stores", tag = "data-stores",
    params(Paging),
    responses((status = 200, description = "Newest first", body = super::openapi::DataStoreList))
)]
pub async fn list(services: web::Data<Services>, paging: Query<Paging>) -> Result<HttpResponse, AppError> {
    let page = services
        .list_data_stores(paging.limit()?, paging.before_id)
        .await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, DataStoreView::from)))
}

#[utoipa::path(
    post, path = "/api/v1.0/data-stores/{id}/check", operation_id = "check_data_store", tag = "data-stores",
    params(("id" = i64, Path, minimum = 1, description = "Data store id")),
    responses(
        (status = 200, description = "Reachable and usable", body = StoreCheckView),
        (status = 422, description = "Not reachable or not usable; the reason (never a password)",
            body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn check(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let report = services.check_data_store(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(StoreCheckView::from(report)))
}
