use actix_web::{web, HttpResponse};

use super::dto::{DataStoreView, List};
use super::extract::{Json, Query};
use super::{Paging, BASE};
use crate::domain::store::NewDataStoreRequest;
use crate::error::AppError;
use crate::services::Services;

pub async fn create(
    services: web::Data<Services>,
    body: Json<NewDataStoreRequest>,
) -> Result<HttpResponse, AppError> {
    let model = services.create_data_store(body.0).await?;
    let view = DataStoreView::from_model(model)?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("{BASE}/data-stores/{}", view.id)))
        .json(view))
}

pub async fn get(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let model = services.get_data_store(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(DataStoreView::from_model(model)?))
}

pub async fn list(services: web::Data<Services>, paging: Query<Paging>) -> Result<HttpResponse, AppError> {
    let page = services
        .list_data_stores(paging.limit()?, paging.before_id)
        .await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, DataStoreView::from_model)?))
}
