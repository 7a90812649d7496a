//! Data stores: what they are (`kind`), what reads and writes them (`engine`), how to reach
//! them (`connection`).

use serde::{Deserialize, Serialize};

use super::field_error::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    RelationalDb,
    ColumnarDb,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    Postgres,
    Mysql,
    Sqlite,
    Parquet,
    Duckdb,
    Csv,
}

impl StoreKind {
    pub const ALL: [StoreKind; 3] = [StoreKind::RelationalDb, StoreKind::ColumnarDb, StoreKind::File];

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::RelationalDb => "relational_db",
            StoreKind::ColumnarDb => "columnar_db",
            StoreKind::File => "file",
        }
    }
}

impl StoreEngine {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StoreEngine::Postgres => "postgres",
            StoreEngine::Mysql => "mysql",
            StoreEngine::Sqlite => "sqlite",
            StoreEngine::Parquet => "parquet",
            StoreEngine::Duckdb => "duckdb",
            StoreEngine::Csv => "csv",
        }
    }

    /// The engines a kind allows, and the connection type each needs.
    pub fn allowed_for(kind: StoreKind) -> &'static [StoreEngine] {
        match kind {
            StoreKind::RelationalDb => &[StoreEngine::Postgres, StoreEngine::Mysql, StoreEngine::Sqlite],
            StoreKind::ColumnarDb => &[StoreEngine::Parquet, StoreEngine::Duckdb],
            StoreKind::File => &[StoreEngine::Csv, StoreEngine::Parquet],
        }
    }

    /// Whether this server can use the engine at all (DuckDB is not built in).
    pub fn is_built_in(self) -> bool {
        self != StoreEngine::Duckdb
    }

    pub fn connection_type(self) -> ConnectionType {
        match self {
            StoreEngine::Postgres | StoreEngine::Mysql => ConnectionType::Db,
            _ => ConnectionType::File,
        }
    }

    pub fn default_port(self) -> Option<u16> {
        match self {
            StoreEngine::Postgres => Some(5432),
            StoreEngine::Mysql => Some(3306),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionType {
    Db,
    File,
}

impl ConnectionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::Db => "db",
            ConnectionType::File => "file",
        }
    }
}

/// How to reach a store, as stored: never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Connection {
    Db(DbConnection),
    File(FileConnection),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbConnection {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub db_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileConnection {
    /// Absolute, normalized path inside one of the allowed roots.
    pub path: String,
}

/// A data store as the rest of the service sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataStore {
    pub id: i64,
    pub created_utc: chrono::DateTime<chrono::Utc>,
    pub name: String,
    pub kind: StoreKind,
    pub engine: StoreEngine,
    pub connection: Connection,
    /// The password in plain text, only in memory, only for connectors.
    pub password: Option<super::secret::Secret>,
}

impl std::fmt::Debug for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStore")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("engine", &self.engine)
            .field("connection", &self.connection)
            .field("password_set", &self.password.is_some())
            .finish()
    }
}

impl DataStore {
    /// The store's path, for file-based engines.
    pub fn path(&self) -> Option<&str> {
        match &self.connection {
            Connection::File(f) => Some(&f.path),
            Connection::Db(_) => None,
        }
    }

    /// Whether flows can read from it (and, below, write to it).
    pub fn is_readable(&self) -> bool {
        self.engine != StoreEngine::Duckdb
    }

    pub fn is_writable(&self) -> bool {
        self.engine != StoreEngine::Duckdb
    }
}

/// `POST /data-stores` as received. Strings, not enums, so that a wrong value is a 422 that
/// names the allowed values rather than a JSON type error.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDataStoreRequest {
    pub name: String,
    pub kind: String,
    pub engine: String,
    pub connection: ConnectionRequest,
}

#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRequest {
    #[serde(rename = "type")]
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db_name: Option<String>,
    pub path: Option<String>,
}

impl std::fmt::Debug for ConnectionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRequest")
            .field("type", &self.conn_type)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password_set", &self.password.is_some())
            .field("db_name", &self.db_name)
            .field("path", &self.path)
            .finish()
    }
}

/// A validated request: what will be stored. The file path is not yet resolved against the
/// allowed roots (that needs the file system; see `domain::paths`).
pub struct ValidStore {
    pub name: String,
    pub kind: StoreKind,
    pub engine: StoreEngine,
    pub connection: Connection,
    pub password: Option<String>,
}

/// The longest host, user or database name accepted, in characters.
pub const MAX_FIELD_CHARS: usize = 255;
/// The longest password accepted, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Checks everything that can be checked without the file system, reporting every problem.
pub fn validate_new_store(req: NewDataStoreRequest) -> Result<ValidStore, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(msg) = super::names::check_store_name(&req.name) {
        errors.push(FieldError::new("name", msg));
    }
    let kind = StoreKind::parse(&req.kind);
    if kind.is_none() {
        errors.push(FieldError::new(
            "kind",
            format!(
                "unknown kind {:?}: use relational_db, columnar_db or file",
                req.kind
            ),
        ));
    }
    let engine = StoreEngine::parse(&req.engine);
    match (kind, engine) {
        (_, None) => errors.push(FieldError::new(
            "engine",
            format!(
                "unknown engine {:?}: use postgres, mysql, sqlite, parquet, duckdb or csv",
                req.engine
            ),
        )),
        (Some(kind), Some(engine)) if !StoreEngine::allowed_for(kind).contains(&engine) => {
            let allowed: Vec<_> = StoreEngine::allowed_for(kind)
                .iter()
                .map(|e| e.as_str())
                .collect();
            errors.push(FieldError::new(
                "engine",
                format!(
                    "engine {} does not fit kind {}: use {}",
                    engine.as_str(),
                    kind.as_str(),
                    allowed.join(" or ")
                ),
            ));
        }
        (Some(_), Some(engine)) if !engine.is_built_in() => errors.push(FieldError::new(
            "engine",
            format!("engine {} is not built into this server", engine.as_str()),
        )),
        _ => {}
    }
    let c = req.connection;
    let conn_type = match c.conn_type.as_str() {
        "db" => Some(ConnectionType::Db),
        "file" => Some(ConnectionType::File),
        other => {
            errors.push(FieldError::new(
                "connection.type",
                format!("unknown connection type {other:?}: use db or file"),
            ));
            None
        }
    };
    if let (Some(engine), Some(conn_type)) = (engine, conn_type) {
        if engine.connection_type() != conn_type {
            errors.push(FieldError::new(
                "connection.type",
                format!(
                    "engine {} needs a connection of type {}",
                    engine.as_str(),
                    engine.connection_type().as_str()
                ),
            ));
        }
    }
    let mut connection = None;
    match conn_type {
        Some(ConnectionType::Db) => {
            for (field, value) in [("path", &c.path)] {
                if value.is_some() {
                    errors.push(FieldError::new(
                        format!("connection.{field}"),
                        "not allowed in a db connection",
                    ));
                }
            }
            // Lengths count characters, as the messages (and the OpenAPI document) say.
            let required = |field: &str, value: &Option<String>, errors: &mut Vec<FieldError>| match value {
                Some(v) if !v.trim().is_empty() && v.chars().count() <= MAX_FIELD_CHARS => Some(v.clone()),
                Some(v) if v.chars().count() > MAX_FIELD_CHARS => {
                    errors.push(FieldError::new(
                        format!("connection.{field}"),
                        format!("must be at most {MAX_FIELD_CHARS} characters"),
                    ));
                    None
                }
                _ => {
                    errors.push(FieldError::new(format!("connection.{field}"), "is required"));
                    None
                }
            };
            let host = required("host", &c.host, &mut errors);
            let user = required("user", &c.user, &mut errors);
            let db_name = required("db_name", &c.db_name, &mut errors);
            let port = c.port.or_else(|| engine.and_then(StoreEngine::default_port));
            match port {
                Some(0) => errors.push(FieldError::new("connection.port", "must be between 1 and 65535")),
                None => errors.push(FieldError::new("connection.port", "is required")),
                _ => {}
            }
            if let (Some(host), Some(user), Some(db_name), Some(port)) = (host, user, db_name, port) {
                connection = Some(Connection::Db(DbConnection {
                    host,
                    port,
                    user,
                    db_name,
                }));
            }
        }
        Some(ConnectionType::File) => {
            for (field, present) in [
                ("host", c.host.is_some()),
                ("port", c.port.is_some()),
                ("user", c.user.is_some()),
                ("password", c.password.is_some()),
                ("db_name", c.db_name.is_some()),
            ] {
                if present {
                    errors.push(FieldError::new(
                        format!("connection.{field}"),
                        "not allowed in a file connection",
                    ));
                }
            }
            match &c.path {
                Some(p) if !p.trim().is_empty() => {
                    connection = Some(Connection::File(FileConnection { path: p.clone() }));
                }
                _ => errors.push(FieldError::new("connection.path", "is required")),
            }
        }
        None => {}
    }
    if let Some(pw) = &c.password {
        if pw.chars().count() > MAX_PASSWORD_CHARS {
            errors.push(FieldError::new(
                "connection.password",
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
    }
    match (errors.is_empty(), kind, engine, connection) {
        (true, Some(kind), Some(engine), Some(connection)) => Ok(ValidStore {
            name: req.name,
            kind,
            engine,
            connection,
            password: c.password.filter(|p| !p.is_empty()),
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> NewDataStoreRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn accepts_a_postgres_store_and_defaults_the_port() {
        let v = validate_new_store(req(serde_json::json!({
            "name": "shop_db", "kind": "relational_db", "engine": "postgres",
            "connection": {"type": "db", "host": "h", "user": "u", "password": "p", "db_name": "d"}
        })))
        .ok()
        .unwrap();
        assert_eq!(
            v.connection,
            Connection::Db(DbConnection {
                host: "h".into(),
                port: 5432,
                user: "u".into(),
                db_name: "d".into()
            })
        );
        assert_eq!(v.password.as_deref(), Some("p"));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let errors = validate_new_store(req(serde_json::json!({
            "name": "1bad", "kind": "file", "engine": "postgres",
            "connection": {"type": "file", "host": "x"}
        })))
        .err()
        .unwrap();
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "name",
                "engine",
                "connection.type",
                "connection.host",
                "connection.path"
            ]
        );
    }

    #[test]
    fn debug_never_prints_the_password() {
        let r = req(serde_json::json!({
            "name": "a", "kind": "relational_db", "engine": "postgres",
            "connection": {"type": "db", "host": "h", "user": "u", "password": "hunter2", "db_name": "d"}
        }));
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
