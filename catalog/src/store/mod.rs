//! The durable metadata store: what the catalog records, behind one trait.
//!
//! [`CatalogStore`] is every question and change the rest of Loch puts to
//! the store: schemas and relations (external tables, managed Delta tables,
//! views), users, roles, ownership, grants and policies
//! ([`crate::access_control`] has their types), and storage credentials
//! ([`crate::storage_credentials`] seals them). Each change is atomic: after
//! a crash (even `kill -9` in the middle of a DDL statement) the store
//! holds either the state before the statement or the state after it.
//!
//! [`SqliteStore`] keeps it all in one SQLite file in the data directory; a
//! store over another database (PostgreSQL, for a coordinator that can be
//! replaced) implements the same trait beside it.
//!
//! The store knows nothing about DataFusion: it keeps the definitions, and
//! the catalog provider turns them into table providers.

mod sqlite;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::access_control::{Grant, Privilege, Role, Securable, SecurityState};
use crate::error::{CatalogError, Result};
use crate::object_stores::StoreOptions;
use crate::storage_credentials::{self, CredentialInfo};

pub use sqlite::{STORE_FILE, SqliteStore};

/// The catalog's metadata store. Cheap calls: one short transaction each.
///
/// Object safe, shared as `Arc<dyn CatalogStore>` by the catalog, the
/// DataFusion provider and the coordinator.
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    // Schemas and relations.

    /// Every schema, sorted.
    fn schemas(&self) -> Result<Vec<String>>;

    /// True when schema `name` exists.
    fn schema_exists(&self, name: &str) -> Result<bool>;

    /// Creates schema `name`; false when it existed already.
    fn create_schema(&self, name: &str) -> Result<bool>;

    /// Drops schema `name` with the ownership, grants and policies of it
    /// and its relations. Without `cascade` it must be empty; with it its
    /// relations go too, and are returned so managed data can be removed.
    /// `None` when the schema did not exist.
    fn drop_schema(&self, name: &str, cascade: bool) -> Result<Option<Vec<Relation>>>;

    /// The names of the relations in `schema`, sorted.
    fn relation_names(&self, schema: &str) -> Result<Vec<String>>;

    /// The relations in `schema`, sorted by name.
    fn relations(&self, schema: &str) -> Result<Vec<Relation>>;

    /// One relation, when it exists.
    fn relation(&self, schema: &str, name: &str) -> Result<Option<Relation>>;

    /// Adds `relation`. With `replace`, an existing one of the same name is
    /// replaced and returned; otherwise an existing one is an error.
    fn create_relation(&self, relation: &Relation, replace: bool) -> Result<Option<Relation>>;

    /// Removes a relation (with its ownership, grants and policies) and
    /// returns it; `None` when there was none.
    fn drop_relation(&self, schema: &str, name: &str) -> Result<Option<Relation>>;

    // Users, roles, ownership, grants and policies.

    /// One role, when it exists.
    fn role(&self, name: &str) -> Result<Option<Role>>;

    /// Creates `role`; false when one of that name exists.
    fn create_role(&self, role: &Role) -> Result<bool>;

    /// Replaces the attributes of an existing role; false when it is missing.
    fn update_role(&self, role: &Role) -> Result<bool>;

    /// Drops a role with its memberships and the grants made to it. A role
    /// that still owns schemas or tables is refused (as in PostgreSQL):
    /// `ALTER … OWNER TO` them first. False when it did not exist.
    fn drop_role(&self, name: &str) -> Result<bool>;

    /// Sets (`Some`) or removes (`None`) one of a role's settings (`ALTER
    /// ROLE … SET name = value` / `RESET name`); false when the role does
    /// not exist. Dropping the role drops its settings.
    fn set_role_setting(&self, role: &str, name: &str, value: Option<&str>) -> Result<bool>;

    /// A role's settings, by name.
    fn role_settings(&self, role: &str) -> Result<std::collections::BTreeMap<String, String>>;

    /// Makes `member` a member of `role`; false when it was already.
    fn add_member(&self, role: &str, member: &str) -> Result<bool>;

    /// Ends `member`'s membership of `role`; false when it was none.
    fn remove_member(&self, role: &str, member: &str) -> Result<bool>;

    /// Records a grant (granting twice is one grant).
    fn grant(&self, grant: &Grant) -> Result<()>;

    /// Removes a grant; false when there was none.
    fn revoke(&self, grantee: &str, securable: &Securable, privilege: Privilege) -> Result<bool>;

    /// Sets the owner of a table or view (`name`), or of a schema (`name` "").
    fn set_owner(&self, schema: &str, name: &str, owner: &str) -> Result<()>;

    /// Records the creator of a new table, view or schema as its owner; an
    /// object that has an owner keeps it (`CREATE OR REPLACE`, `IF NOT
    /// EXISTS` of an existing one).
    fn claim_owner(&self, schema: &str, name: &str, owner: &str) -> Result<()>;

    /// Sets (`Some`) or drops (`None`) the row filter (`column` "") or the
    /// mask of `column` of table `schema.name`; false when there was
    /// nothing to drop.
    fn set_policy(
        &self,
        schema: &str,
        name: &str,
        column: &str,
        expression: Option<&str>,
    ) -> Result<bool>;

    /// Roles, memberships, grants, owners and policies, read in one
    /// transaction.
    fn security_state(&self) -> Result<SecurityState>;

    // Storage credentials.

    /// Sets the key credentials are sealed with (once, at start; a second
    /// call keeps the first key).
    fn set_storage_key(&self, hex_key: &str) -> Result<()>;

    /// `CREATE [OR REPLACE] STORAGE CREDENTIAL [IF NOT EXISTS]`: stores
    /// `settings` sealed. False when it existed and `if_not_exists` was
    /// given.
    fn create_credential(
        &self,
        name: &str,
        settings: &StoreOptions,
        owner: &str,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<bool>;

    /// `DROP STORAGE CREDENTIAL`: refused while a table names it. False
    /// when it did not exist.
    fn drop_credential(&self, name: &str) -> Result<bool>;

    /// Every credential, by name (setting names only, never a value).
    fn credentials(&self) -> Result<Vec<CredentialInfo>>;

    /// `relation` with the credential its OPTIONS name put in place of the
    /// name: the credential's settings, under any the table gives itself.
    /// Unchanged when it names none.
    fn with_credential(&self, relation: &Relation) -> Result<Relation>;
}

/// What a relation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelationKind {
    /// Data at a location Loch does not own; `DROP` leaves it alone.
    External,
    /// A Delta table under the warehouse directory; `DROP` removes its data.
    Managed,
    /// A view: SQL text planned when it is used.
    View,
}

impl RelationKind {
    /// The kind as the store writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RelationKind::External => "external",
            RelationKind::Managed => "managed",
            RelationKind::View => "view",
        }
    }

    /// The kind [`RelationKind::as_str`] wrote.
    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "external" => Ok(RelationKind::External),
            "managed" => Ok(RelationKind::Managed),
            "view" => Ok(RelationKind::View),
            other => Err(CatalogError::Store(format!(
                "unknown relation kind {other:?}"
            ))),
        }
    }
}

/// A table or view as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub kind: RelationKind,
    /// `PARQUET`, `CSV`, `JSON` or `DELTA`; `None` for views.
    pub format: Option<String>,
    /// URL of the data (a directory, a file, or a Delta table root).
    pub location: Option<String>,
    /// Format and object-store options (`OPTIONS (…)`).
    pub options: BTreeMap<String, String>,
    /// Hive-style partition columns of an external table.
    pub partition_cols: Vec<String>,
    /// Columns declared by `CREATE EXTERNAL TABLE t (…)`, as an Arrow IPC
    /// schema ([`encode_schema`]); `None` when the schema is inferred.
    pub columns: Option<Vec<u8>>,
    /// A view's `CREATE VIEW` statement.
    pub definition: Option<String>,
    /// The schema the view was created in: unqualified names in its text
    /// resolve there.
    pub default_schema: Option<String>,
}

impl Relation {
    /// This relation with the `settings` of the credential its OPTIONS
    /// name in place of the name (what every store's
    /// [`CatalogStore::with_credential`] answers once it has opened them).
    pub(crate) fn with_credential_settings(&self, settings: StoreOptions) -> Relation {
        Relation {
            options: storage_credentials::resolve(&self.options, settings),
            ..self.clone()
        }
    }
}

/// An Arrow schema as bytes: an IPC stream holding only the schema.
pub fn encode_schema(schema: &arrow::datatypes::Schema) -> Result<Vec<u8>> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// The schema [`encode_schema`] wrote.
pub fn decode_schema(bytes: &[u8]) -> Result<arrow::datatypes::Schema> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    Ok(reader.schema().as_ref().clone())
}
