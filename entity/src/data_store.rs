//! A place data is read from or written to.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "data_store")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub created_utc: DateTimeUtc,
    /// Unique, 1-63 characters of `[A-Za-z0-9_-]`, starting with a letter.
    #[sea_orm(unique)]
    pub name: String,
    /// `relational_db`, `columnar_db` or `file`.
    pub kind: String,
    /// `postgres`, `mysql`, `sqlite`, `parquet`, `csv`, ...
    pub engine: String,
    /// The connection without its secret: `{"type": "db", host, port, user, db_name}` or
    /// `{"type": "file", "path"}`.
    pub connection: Json,
    /// The password, sealed with the service's secret key (never plaintext); `None` if none.
    pub password_sealed: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
