//! [`CatalogStore`] in one SQLite file in the data directory
//! ([`STORE_FILE`]).
//!
//! Schemas and relations are here; the tables of access control and of
//! storage credentials are in the two submodules. Every change is one
//! SQLite transaction in WAL mode with `synchronous = FULL`, so after a
//! crash (even `kill -9` in the middle of a DDL statement) the file holds
//! either the state before the statement or the state after it.

mod access_control;
mod storage_credentials;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{CatalogStore, Relation, RelationKind};
use crate::access_control::{Grant, Privilege, Role, Securable, SecurityState};
use crate::error::{CatalogError, Result};
use crate::object_stores::StoreOptions;
use crate::storage_credentials::{CredentialInfo, Sealer};

/// The store file's name inside the data directory.
pub const STORE_FILE: &str = "catalog.sqlite";

/// Bumped when the tables below change; older files are migrated on open.
const SCHEMA_VERSION: i64 = 1;

/// The store in one SQLite file. Cheap calls: one short transaction each.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Seals storage credentials; set at start.
    sealer: OnceLock<Sealer>,
}

impl SqliteStore {
    /// Opens (creating when missing) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(STORE_FILE);
        let conn = Connection::open(&path).map_err(|e| store_error(&path, e))?;
        let store = SqliteStore {
            path,
            conn: Mutex::new(conn),
            sealer: OnceLock::new(),
        };
        store.init()?;
        Ok(store)
    }

    /// Where the store file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init(&self) -> Result<()> {
        self.with_conn(|conn| {
            // WAL: readers never block the writer; FULL: a committed DDL
            // survives a crash of the process or the machine.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (
                     key   TEXT PRIMARY KEY,
                     value TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS schemas (
                     name       TEXT PRIMARY KEY,
                     created_at TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS relations (
                     schema_name    TEXT NOT NULL REFERENCES schemas(name),
                     name           TEXT NOT NULL,
                     kind           TEXT NOT NULL,
                     format         TEXT,
                     location       TEXT,
                     options        TEXT NOT NULL,
                     partition_cols TEXT NOT NULL,
                     columns        BLOB,
                     definition     TEXT,
                     default_schema TEXT,
                     created_at     TEXT NOT NULL,
                     PRIMARY KEY (schema_name, name)
                 );",
            )?;
            access_control::create_tables(&tx)?;
            storage_credentials::create_tables(&tx)?;
            let version: Option<String> = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = 'schema_version'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if version.is_none() {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO schemas (name, created_at) VALUES (?1, ?2)",
                    params![crate::DEFAULT_SCHEMA, now()],
                )?;
            }
            access_control::initialize(&tx)?;
            tx.commit()
        })
    }

    /// Runs `f` on the connection, a SQLite error made the store's.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| CatalogError::Store("catalog store lock poisoned".into()))?;
        f(&mut conn).map_err(|e| store_error(&self.path, e))
    }
}

impl CatalogStore for SqliteStore {
    fn schemas(&self) -> Result<Vec<String>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached("SELECT name FROM schemas ORDER BY name")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    fn schema_exists(&self, name: &str) -> Result<bool> {
        self.with_conn(|conn| {
            conn.prepare_cached("SELECT 1 FROM schemas WHERE name = ?1")?
                .exists(params![name])
        })
    }

    fn create_schema(&self, name: &str) -> Result<bool> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO schemas (name, created_at) VALUES (?1, ?2)",
                params![name, now()],
            )?;
            Ok(n == 1)
        })
    }

    fn drop_schema(&self, name: &str, cascade: bool) -> Result<Option<Vec<Relation>>> {
        let result = self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists = tx
                .prepare_cached("SELECT 1 FROM schemas WHERE name = ?1")?
                .exists(params![name])?;
            if !exists {
                return Ok(Err(None));
            }
            let relations = select_relations(&tx, name, None)?;
            if !relations.is_empty() && !cascade {
                return Ok(Err(Some(relations.len())));
            }
            tx.execute(
                "DELETE FROM relations WHERE schema_name = ?1",
                params![name],
            )?;
            tx.execute("DELETE FROM schemas WHERE name = ?1", params![name])?;
            access_control::forget_schema(&tx, name)?;
            tx.commit()?;
            Ok(Ok(relations))
        })?;
        match result {
            Ok(relations) => relations.into_iter().collect::<Result<_>>().map(Some),
            Err(None) => Ok(None),
            Err(Some(count)) => Err(CatalogError::SchemaNotEmpty {
                schema: name.to_string(),
                count,
            }),
        }
    }

    fn relation_names(&self, schema: &str) -> Result<Vec<String>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM relations WHERE schema_name = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![schema], |r| r.get(0))?;
            rows.collect()
        })
    }

    fn relations(&self, schema: &str) -> Result<Vec<Relation>> {
        self.with_conn(|conn| select_relations(conn, schema, None))?
            .into_iter()
            .collect()
    }

    fn relation(&self, schema: &str, name: &str) -> Result<Option<Relation>> {
        self.with_conn(|conn| select_relations(conn, schema, Some(name)))?
            .into_iter()
            .next()
            .transpose()
    }

    fn create_relation(&self, relation: &Relation, replace: bool) -> Result<Option<Relation>> {
        let options = serde_json::to_string(&relation.options)
            .map_err(|e| CatalogError::Store(e.to_string()))?;
        let partition_cols = serde_json::to_string(&relation.partition_cols)
            .map_err(|e| CatalogError::Store(e.to_string()))?;
        let result = self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let schema_exists = tx
                .prepare_cached("SELECT 1 FROM schemas WHERE name = ?1")?
                .exists(params![relation.schema])?;
            if !schema_exists {
                return Ok(Err(CatalogError::SchemaNotFound(relation.schema.clone())));
            }
            let old = select_relations(&tx, &relation.schema, Some(&relation.name))?
                .into_iter()
                .next();
            if old.is_some() {
                if !replace {
                    return Ok(Err(CatalogError::RelationExists {
                        schema: relation.schema.clone(),
                        name: relation.name.clone(),
                    }));
                }
                tx.execute(
                    "DELETE FROM relations WHERE schema_name = ?1 AND name = ?2",
                    params![relation.schema, relation.name],
                )?;
            }
            tx.execute(
                "INSERT INTO relations (schema_name, name, kind, format, location, options,
                                        partition_cols, columns, definition, default_schema,
                                        created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    relation.schema,
                    relation.name,
                    relation.kind.as_str(),
                    relation.format,
                    relation.location,
                    options,
                    partition_cols,
                    relation.columns,
                    relation.definition,
                    relation.default_schema,
                    now(),
                ],
            )?;
            tx.commit()?;
            Ok(Ok(old))
        })?;
        result?.transpose()
    }

    fn drop_relation(&self, schema: &str, name: &str) -> Result<Option<Relation>> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old = select_relations(&tx, schema, Some(name))?
                .into_iter()
                .next();
            tx.execute(
                "DELETE FROM relations WHERE schema_name = ?1 AND name = ?2",
                params![schema, name],
            )?;
            if old.is_some() {
                access_control::forget_relation(&tx, schema, name)?;
            }
            tx.commit()?;
            Ok(old)
        })?
        .transpose()
    }

    fn role(&self, name: &str) -> Result<Option<Role>> {
        access_control::role(self, name)
    }

    fn create_role(&self, role: &Role) -> Result<bool> {
        access_control::create_role(self, role)
    }

    fn update_role(&self, role: &Role) -> Result<bool> {
        access_control::update_role(self, role)
    }

    fn drop_role(&self, name: &str) -> Result<bool> {
        access_control::drop_role(self, name)
    }

    fn set_role_setting(&self, role: &str, name: &str, value: Option<&str>) -> Result<bool> {
        access_control::set_role_setting(self, role, name, value)
    }

    fn role_settings(&self, role: &str) -> Result<std::collections::BTreeMap<String, String>> {
        access_control::role_settings(self, role)
    }

    fn add_member(&self, role: &str, member: &str) -> Result<bool> {
        access_control::add_member(self, role, member)
    }

    fn remove_member(&self, role: &str, member: &str) -> Result<bool> {
        access_control::remove_member(self, role, member)
    }

    fn grant(&self, grant: &Grant) -> Result<()> {
        access_control::grant(self, grant)
    }

    fn revoke(&self, grantee: &str, securable: &Securable, privilege: Privilege) -> Result<bool> {
        access_control::revoke(self, grantee, securable, privilege)
    }

    fn set_owner(&self, schema: &str, name: &str, owner: &str) -> Result<()> {
        access_control::set_owner(self, schema, name, owner)
    }

    fn claim_owner(&self, schema: &str, name: &str, owner: &str) -> Result<()> {
        access_control::claim_owner(self, schema, name, owner)
    }

    fn set_policy(
        &self,
        schema: &str,
        name: &str,
        column: &str,
        expression: Option<&str>,
    ) -> Result<bool> {
        access_control::set_policy(self, schema, name, column, expression)
    }

    fn security_state(&self) -> Result<SecurityState> {
        access_control::security_state(self)
    }

    fn set_storage_key(&self, hex_key: &str) -> Result<()> {
        storage_credentials::set_storage_key(self, hex_key)
    }

    fn create_credential(
        &self,
        name: &str,
        settings: &StoreOptions,
        owner: &str,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<bool> {
        storage_credentials::create_credential(
            self,
            name,
            settings,
            owner,
            or_replace,
            if_not_exists,
        )
    }

    fn drop_credential(&self, name: &str) -> Result<bool> {
        storage_credentials::drop_credential(self, name)
    }

    fn credentials(&self) -> Result<Vec<CredentialInfo>> {
        storage_credentials::credentials(self)
    }

    fn with_credential(&self, relation: &Relation) -> Result<Relation> {
        storage_credentials::with_credential(self, relation)
    }
}

type RawRelation = Result<Relation>;

/// Relations of `schema` (one, when `name` is given), decoded lazily so a
/// malformed row is an error of its own rather than a SQLite error.
fn select_relations(
    conn: &Connection,
    schema: &str,
    name: Option<&str>,
) -> rusqlite::Result<Vec<RawRelation>> {
    let mut stmt = conn.prepare_cached(
        "SELECT schema_name, name, kind, format, location, options, partition_cols,
                columns, definition, default_schema
         FROM relations
         WHERE schema_name = ?1 AND (?2 IS NULL OR name = ?2)
         ORDER BY name",
    )?;
    let rows = stmt.query_map(params![schema, name], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Option<Vec<u8>>>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<String>>(9)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            schema,
            name,
            kind,
            format,
            location,
            options,
            partition_cols,
            columns,
            definition,
            default_schema,
        ) = row?;
        out.push((|| {
            Ok(Relation {
                kind: RelationKind::parse(&kind)?,
                options: serde_json::from_str(&options)
                    .map_err(|e| CatalogError::Store(format!("options of {schema}.{name}: {e}")))?,
                partition_cols: serde_json::from_str(&partition_cols).map_err(|e| {
                    CatalogError::Store(format!("partition columns of {schema}.{name}: {e}"))
                })?,
                schema,
                name,
                format,
                location,
                columns,
                definition,
                default_schema,
            })
        })());
    }
    Ok(out)
}

fn store_error(path: &Path, e: rusqlite::Error) -> CatalogError {
    CatalogError::Store(format!("catalog store {}: {e}", path.display()))
}

/// Now, as the store writes times.
fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::{decode_schema, encode_schema};

    fn external(schema: &str, name: &str) -> Relation {
        Relation {
            schema: schema.into(),
            name: name.into(),
            kind: RelationKind::External,
            format: Some("PARQUET".into()),
            location: Some("file:///tmp/x/".into()),
            options: BTreeMap::from([("format.has_header".into(), "true".into())]),
            partition_cols: vec!["year".into()],
            columns: encode_schema(&arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Int64, true),
            ]))
            .ok(),
            definition: None,
            default_schema: None,
        }
    }

    #[test]
    fn definitions_survive_reopening() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CatalogError::Store(e.to_string()))?;
        {
            let store = SqliteStore::open(dir.path())?;
            assert!(store.create_schema("sales")?);
            assert!(!store.create_schema("sales")?);
            store.create_relation(&external("sales", "orders"), false)?;
        }
        let store = SqliteStore::open(dir.path())?;
        assert_eq!(store.schemas()?, vec!["public".to_string(), "sales".into()]);
        assert_eq!(
            store.relation("sales", "orders")?,
            Some(external("sales", "orders"))
        );
        assert_eq!(store.relation_names("sales")?, vec!["orders".to_string()]);
        let columns = store
            .relation("sales", "orders")?
            .and_then(|r| r.columns)
            .map(|c| decode_schema(&c))
            .transpose()?;
        assert_eq!(columns.map(|s| s.fields().len()), Some(1));
        Ok(())
    }

    #[test]
    fn duplicates_missing_schemas_and_non_empty_drops_are_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CatalogError::Store(e.to_string()))?;
        let store = SqliteStore::open(dir.path())?;
        assert!(matches!(
            store.create_relation(&external("nope", "t"), false),
            Err(CatalogError::SchemaNotFound(_))
        ));
        store.create_relation(&external("public", "t"), false)?;
        assert!(matches!(
            store.create_relation(&external("public", "t"), false),
            Err(CatalogError::RelationExists { .. })
        ));
        assert!(
            store
                .create_relation(&external("public", "t"), true)?
                .is_some()
        );
        assert!(matches!(
            store.drop_schema("public", false),
            Err(CatalogError::SchemaNotEmpty { count: 1, .. })
        ));
        let dropped = store.drop_schema("public", true)?;
        assert_eq!(dropped.map(|d| d.len()), Some(1));
        assert_eq!(store.drop_schema("public", true)?, None);
        assert_eq!(store.drop_relation("public", "t")?, None);
        Ok(())
    }
}
