//! Roles, grants and authorization: who may run what.
//!
//! [`authorize`] is the one check every planned statement passes, from pg
//! wire and Flight SQL alike (and prepared statements, at prepare and at
//! every execution): it walks the logical plan, resolves each table it
//! reads or writes the way DataFusion did, and asks the catalog's grants.
//! Views run with their owner's rights, as in PostgreSQL: the user needs
//! `SELECT` on the view, the view's owner on what the view reads.
//!
//! The role statements (`CREATE ROLE`, `GRANT`, `SHOW GRANTS`, …) are
//! parsed here on sqlparser's tokens: their PostgreSQL forms are not what
//! sqlparser's AST expects for every dialect, and a password must never go
//! through a path that could echo it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::dml::MergeIntoAction;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, WriteOp};
use datafusion::sql::sqlparser::tokenizer::Token;
use loch_catalog::access_control::{Grant, PUBLIC, Privilege, Role, Securable, SecurityState};
use loch_catalog::view::ViewBoundary;
use loch_catalog::{CatalogStore, DATABASE_NAME};

use crate::auth::{ADMIN_USER, Verifier};
use crate::databricks::{Tokens, is_word};
use crate::ddl;
use crate::error::LochError;
use crate::session::{Output, Session};

/// Schemas every user may read: the catalog's own descriptions (filtered
/// by what the user may see) and the cluster's state.
const OPEN_SCHEMAS: &[&str] = &["information_schema", "pg_catalog", "system"];

// ---------------------------------------------------------------- statements

/// Role attributes a `CREATE ROLE` / `ALTER ROLE` sets.
#[derive(Default, Clone)]
pub struct RoleOptions {
    login: Option<bool>,
    superuser: Option<bool>,
    /// `Some(None)`: `PASSWORD NULL`.
    password: Option<Option<String>>,
    connection_limit: Option<Option<u32>>,
}

impl std::fmt::Debug for RoleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleOptions")
            .field("login", &self.login)
            .field("superuser", &self.superuser)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("connection_limit", &self.connection_limit)
            .finish()
    }
}

/// What a `GRANT`/`REVOKE` is on.
#[derive(Debug, Clone)]
pub enum Target {
    Tables(Vec<Vec<String>>),
    AllTablesIn(Vec<String>),
    Schemas(Vec<String>),
}

/// A role, grant or ownership statement.
#[derive(Debug, Clone)]
pub enum SecurityCommand {
    CreateRole {
        name: String,
        if_not_exists: bool,
        options: RoleOptions,
    },
    AlterRole {
        name: String,
        options: RoleOptions,
    },
    DropRole {
        names: Vec<String>,
        if_exists: bool,
    },
    /// `GRANT/REVOKE privileges ON target TO/FROM grantees`; `None`
    /// privileges means `ALL`.
    Privileges {
        grant: bool,
        privileges: Option<Vec<Privilege>>,
        target: Target,
        grantees: Vec<String>,
    },
    /// `GRANT/REVOKE role TO/FROM members`.
    Membership {
        grant: bool,
        roles: Vec<String>,
        members: Vec<String>,
    },
    /// `ALTER TABLE|VIEW|SCHEMA x OWNER TO role`.
    Owner {
        schema_level: bool,
        name: Vec<String>,
        owner: String,
    },
    /// `ALTER TABLE t SET|DROP ROW FILTER` (`column` `None`) and `ALTER
    /// TABLE t ALTER COLUMN c SET|DROP MASK`; `expression` `None` drops.
    Policy {
        table: Vec<String>,
        column: Option<String>,
        expression: Option<String>,
    },
    /// `SHOW GRANTS [ON …] [TO|FOR role]`.
    ShowGrants {
        on: Option<Target>,
        to: Option<String>,
    },
    /// `CREATE|DROP STORAGE CREDENTIAL`, `SHOW STORAGE CREDENTIALS`.
    Credential(crate::credentials::CredentialCommand),
}

impl SecurityCommand {
    /// The PostgreSQL command tag.
    pub fn tag(&self) -> &'static str {
        match self {
            SecurityCommand::CreateRole { .. } => "CREATE ROLE",
            SecurityCommand::AlterRole { .. } => "ALTER ROLE",
            SecurityCommand::DropRole { .. } => "DROP ROLE",
            SecurityCommand::Privileges { grant: true, .. }
            | SecurityCommand::Membership { grant: true, .. } => "GRANT",
            SecurityCommand::Privileges { grant: false, .. }
            | SecurityCommand::Membership { grant: false, .. } => "REVOKE",
            SecurityCommand::Owner {
                schema_level: true, ..
            } => "ALTER SCHEMA",
            SecurityCommand::Owner { .. } | SecurityCommand::Policy { .. } => "ALTER TABLE",
            SecurityCommand::ShowGrants { .. } => "SHOW",
            SecurityCommand::Credential(command) => command.tag(),
        }
    }
}

/// The columns of `SHOW GRANTS`.
pub fn show_grants_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("principal", DataType::Utf8, false),
        Field::new("privilege", DataType::Utf8, false),
        Field::new("object_type", DataType::Utf8, false),
        Field::new("object_name", DataType::Utf8, false),
        Field::new("grantor", DataType::Utf8, false),
    ]))
}

/// True for the statements [`parse`] reads (`words` without whitespace).
pub fn is_security_statement(words: &[Token]) -> bool {
    let w = |i: usize, word: &str| words.get(i).is_some_and(|t| is_word(t, word));
    let role_word = |i: usize| w(i, "ROLE") || w(i, "USER") || w(i, "GROUP");
    crate::credentials::is_statement(words)
        || (w(0, "CREATE") && role_word(1))
        || (w(0, "ALTER") && role_word(1))
        || (w(0, "DROP") && role_word(1))
        || w(0, "GRANT")
        || w(0, "REVOKE")
        || (w(0, "SHOW") && w(1, "GRANTS"))
        || (w(0, "ALTER")
            && (w(1, "TABLE") || w(1, "VIEW") || w(1, "SCHEMA"))
            && words.iter().any(|t| is_word(t, "OWNER")))
        || (w(0, "ALTER") && w(1, "TABLE") && is_policy_clause(words))
}

/// `… SET|DROP ROW FILTER …` or `… SET|DROP MASK …` after `ALTER TABLE`.
fn is_policy_clause(words: &[Token]) -> bool {
    words.windows(3).any(|w| {
        (is_word(&w[0], "SET") || is_word(&w[0], "DROP"))
            && is_word(&w[1], "ROW")
            && is_word(&w[2], "FILTER")
    }) || words
        .windows(2)
        .any(|w| (is_word(&w[0], "SET") || is_word(&w[0], "DROP")) && is_word(&w[1], "MASK"))
}

/// Parses a statement [`is_security_statement`] recognised.
pub fn parse(words: &[Token]) -> Result<SecurityCommand, LochError> {
    if crate::credentials::is_statement(words) {
        return crate::credentials::parse(words).map(SecurityCommand::Credential);
    }
    let mut p = Tokens {
        tokens: words,
        at: 0,
    };
    if p.word("CREATE") {
        let is_user = p.word("USER");
        if !is_user && !p.word("ROLE") && !p.word("GROUP") {
            return Err(p.error("expected ROLE or USER"));
        }
        let if_not_exists = p.word("IF");
        if if_not_exists && !(p.word("NOT") && p.word("EXISTS")) {
            return Err(p.error("expected IF NOT EXISTS"));
        }
        let name = p.identifier()?;
        let mut options = role_options(&mut p)?;
        if is_user && options.login.is_none() {
            options.login = Some(true);
        }
        return Ok(SecurityCommand::CreateRole {
            name,
            if_not_exists,
            options,
        });
    }
    if p.word("DROP") {
        p.at += 1; // ROLE | USER | GROUP
        let if_exists = p.word("IF");
        if if_exists && !p.word("EXISTS") {
            return Err(p.error("expected IF EXISTS"));
        }
        let names = name_list(&mut p)?;
        p.end()?;
        return Ok(SecurityCommand::DropRole { names, if_exists });
    }
    if p.word("ALTER") {
        if p.word("ROLE") || p.word("USER") || p.word("GROUP") {
            let name = p.identifier()?;
            let options = role_options(&mut p)?;
            return Ok(SecurityCommand::AlterRole { name, options });
        }
        let schema_level = p.word("SCHEMA");
        if !schema_level && !p.word("TABLE") && !p.word("VIEW") {
            return Err(p.error("expected TABLE, VIEW or SCHEMA"));
        }
        let name = p.table_name()?;
        if !schema_level && let Some(command) = policy_clause(&mut p, &name)? {
            return Ok(command);
        }
        if !(p.word("OWNER") && p.word("TO")) {
            return Err(LochError::NotSupported(
                "ALTER TABLE other than OWNER TO".into(),
            ));
        }
        let owner = p.identifier()?;
        p.end()?;
        return Ok(SecurityCommand::Owner {
            schema_level,
            name,
            owner,
        });
    }
    if p.word("SHOW") {
        p.at += 1; // GRANTS
        let on = if p.word("ON") {
            Some(target(&mut p)?)
        } else {
            None
        };
        let to = if p.word("TO") || p.word("FOR") {
            Some(p.identifier()?)
        } else {
            None
        };
        p.end()?;
        return Ok(SecurityCommand::ShowGrants { on, to });
    }
    let grant = p.word("GRANT");
    if !grant && !p.word("REVOKE") {
        return Err(p.error("expected GRANT or REVOKE"));
    }
    // A privilege list is followed by ON; a role list by TO/FROM.
    let has_on = words[p.at..].iter().any(|t| is_word(t, "ON"));
    if !has_on {
        let roles = name_list(&mut p)?;
        to_or_from(&mut p, grant)?;
        let members = grantees(&mut p)?;
        p.end()?;
        return Ok(SecurityCommand::Membership {
            grant,
            roles,
            members,
        });
    }
    let privileges = if p.word("ALL") {
        p.word("PRIVILEGES");
        None
    } else {
        let mut list = Vec::new();
        loop {
            let Some(Token::Word(w)) = p.peek() else {
                return Err(p.error("expected a privilege"));
            };
            let Some(privilege) = Privilege::parse(&w.value) else {
                let word = w.value.to_ascii_uppercase();
                return Err(
                    if word == "TRUNCATE" || word == "REFERENCES" || word == "TRIGGER" {
                        LochError::NotSupported(format!("the {word} privilege"))
                    } else {
                        p.error("expected SELECT, INSERT, UPDATE, DELETE, USAGE, CREATE or ALL")
                    },
                );
            };
            p.at += 1;
            list.push(privilege);
            if !p.token(&Token::Comma) {
                break;
            }
        }
        Some(list)
    };
    if !p.word("ON") {
        return Err(p.error("expected ON"));
    }
    let target = target(&mut p)?;
    to_or_from(&mut p, grant)?;
    let grantees = grantees(&mut p)?;
    if grant && p.word("WITH") {
        return Err(LochError::NotSupported("WITH GRANT OPTION".into()));
    }
    p.word("CASCADE");
    p.word("RESTRICT");
    p.end()?;
    if let Some(list) = &privileges {
        let schema_target = matches!(target, Target::Schemas(_));
        if let Some(bad) = list
            .iter()
            .find(|p| p.is_table_privilege() == schema_target)
        {
            return Err(LochError::InvalidGrant(format!(
                "invalid privilege type {} for {}",
                bad.as_str(),
                if schema_target { "schema" } else { "table" }
            )));
        }
    }
    Ok(SecurityCommand::Privileges {
        grant,
        privileges,
        target,
        grantees,
    })
}

/// The clause after `ALTER TABLE t`, when it is a row filter or mask one.
fn policy_clause(
    p: &mut Tokens<'_>,
    table: &[String],
) -> Result<Option<SecurityCommand>, LochError> {
    let start = p.at;
    let column = if p.word("ALTER") {
        p.word("COLUMN");
        Some(p.identifier()?)
    } else {
        None
    };
    let set = p.word("SET");
    if !set && !p.word("DROP") {
        p.at = start;
        return Ok(None);
    }
    let is_clause = match column {
        None => p.word("ROW") && p.word("FILTER"),
        Some(_) => p.word("MASK"),
    };
    if !is_clause {
        p.at = start;
        return Ok(None);
    }
    let expression = if set {
        let rest = &p.tokens[p.at..];
        p.at = p.tokens.len();
        Some(crate::policy::parse_expression(rest)?)
    } else {
        p.end()?;
        None
    };
    Ok(Some(SecurityCommand::Policy {
        table: table.to_vec(),
        column,
        expression,
    }))
}

/// `TO` after a `GRANT`, `FROM` after a `REVOKE`.
fn to_or_from(p: &mut Tokens<'_>, grant: bool) -> Result<(), LochError> {
    match grant {
        true if p.word("TO") => Ok(()),
        false if p.word("FROM") => Ok(()),
        true => Err(p.error("expected TO")),
        false => Err(p.error("expected FROM")),
    }
}

fn grantees(p: &mut Tokens<'_>) -> Result<Vec<String>, LochError> {
    let mut out = Vec::new();
    loop {
        // `ROLE r`, `USER u`, `GROUP g` are r, u, g.
        if matches!(p.tokens.get(p.at + 1), Some(Token::Word(_))) {
            let _ = p.word("ROLE") || p.word("USER") || p.word("GROUP");
        }
        out.push(p.identifier()?);
        if !p.token(&Token::Comma) {
            return Ok(out);
        }
    }
}

fn target(p: &mut Tokens<'_>) -> Result<Target, LochError> {
    if p.word("ALL") {
        if !(p.word("TABLES") && p.word("IN") && p.word("SCHEMA")) {
            return Err(p.error("expected ALL TABLES IN SCHEMA"));
        }
        return Ok(Target::AllTablesIn(name_list(p)?));
    }
    if p.word("SCHEMA") {
        return Ok(Target::Schemas(name_list(p)?));
    }
    if !p.word("TABLE") {
        p.word("VIEW");
    }
    let mut tables = vec![p.table_name()?];
    while p.token(&Token::Comma) {
        tables.push(p.table_name()?);
    }
    Ok(Target::Tables(tables))
}

/// `name [, name …]`: roles or schemas.
fn name_list(p: &mut Tokens<'_>) -> Result<Vec<String>, LochError> {
    let mut out = vec![p.identifier()?];
    while p.token(&Token::Comma) {
        out.push(p.identifier()?);
    }
    Ok(out)
}

fn role_options(p: &mut Tokens<'_>) -> Result<RoleOptions, LochError> {
    let mut o = RoleOptions::default();
    p.word("WITH");
    while !p.at_end() {
        if p.word("LOGIN") {
            o.login = Some(true);
        } else if p.word("NOLOGIN") {
            o.login = Some(false);
        } else if p.word("SUPERUSER") {
            o.superuser = Some(true);
        } else if p.word("NOSUPERUSER") {
            o.superuser = Some(false);
        } else if p.word("ENCRYPTED") || p.word("PASSWORD") {
            if matches!(p.tokens.get(p.at - 1), Some(t) if is_word(t, "ENCRYPTED"))
                && !p.word("PASSWORD")
            {
                return Err(p.error("expected PASSWORD"));
            }
            o.password = Some(match p.peek() {
                Some(Token::SingleQuotedString(s))
                | Some(Token::EscapedStringLiteral(s))
                | Some(Token::DollarQuotedString(
                    datafusion::sql::sqlparser::ast::DollarQuotedString { value: s, .. },
                )) => {
                    let s = s.clone();
                    p.at += 1;
                    Some(s)
                }
                Some(t) if is_word(t, "NULL") => {
                    p.at += 1;
                    None
                }
                // Never echo what was there: it may be a password.
                _ => {
                    return Err(LochError::Syntax(
                        "PASSWORD takes a quoted string or NULL".into(),
                    ));
                }
            });
        } else if p.word("CONNECTION") {
            if !p.word("LIMIT") {
                return Err(p.error("expected CONNECTION LIMIT"));
            }
            let negative = p.token(&Token::Minus);
            let n = p.number()?;
            o.connection_limit = Some(if negative {
                None
            } else {
                Some(u32::try_from(n).map_err(|_| p.error("connection limit too large"))?)
            });
        } else if p.word("INHERIT") || p.word("NOCREATEDB") || p.word("NOCREATEROLE") {
            // What Loch does anyway.
        } else {
            return Err(match p.peek() {
                Some(Token::Word(w)) => LochError::NotSupported(format!(
                    "role option {} (Loch has LOGIN, SUPERUSER, PASSWORD and CONNECTION LIMIT)",
                    w.value.to_ascii_uppercase()
                )),
                _ => LochError::Syntax("expected a role option".into()),
            });
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------- principals

/// A user (or a view's owner) with the roles it acts as.
#[derive(Debug, Clone)]
struct Principal {
    name: String,
    roles: BTreeSet<String>,
    superuser: bool,
}

impl Principal {
    fn of(state: &SecurityState, name: &str) -> Self {
        Principal {
            name: name.to_string(),
            roles: state.roles_of(name),
            superuser: state.roles.get(name).is_some_and(|r| r.superuser),
        }
    }

    /// A view without a recorded owner (made before roles existed) runs
    /// with the rights of the admin who made it.
    fn system() -> Self {
        Principal {
            name: ADMIN_USER.to_string(),
            roles: BTreeSet::new(),
            superuser: true,
        }
    }
}

/// Privilege checks over one snapshot of the grants.
struct Checker<'a> {
    state: &'a SecurityState,
    store: &'a dyn CatalogStore,
}

impl Checker<'_> {
    fn owns(&self, who: &Principal, schema: &str, name: &str) -> bool {
        self.state
            .owner(schema, name)
            .is_some_and(|owner| who.roles.contains(owner))
    }

    /// True when a grant to one of `who`'s roles matches `privilege`
    /// (any privilege when `None`) and `on`.
    fn granted(
        &self,
        who: &Principal,
        privilege: Option<Privilege>,
        on: impl Fn(&Securable) -> bool,
    ) -> bool {
        self.state.grants.iter().any(|g| {
            privilege.is_none_or(|p| g.privilege == p)
                && who.roles.contains(&g.grantee)
                && on(&g.securable)
        })
    }

    fn may_use_schema(&self, who: &Principal, schema: &str) -> bool {
        who.superuser
            || OPEN_SCHEMAS.contains(&schema)
            || self.owns(who, schema, "")
            || self.granted(who, Some(Privilege::Usage), |s| s.is_schema(schema))
    }

    fn may_create_in(&self, who: &Principal, schema: &str) -> bool {
        who.superuser
            || self.owns(who, schema, "")
            || self.granted(who, Some(Privilege::Create), |s| s.is_schema(schema))
    }

    fn check_create_in(&self, who: &Principal, schema: &str) -> Result<(), LochError> {
        if self.may_create_in(who, schema) {
            Ok(())
        } else {
            Err(LochError::PermissionDenied(format!("schema {schema}")))
        }
    }

    /// `privilege` on table or view `schema.name`.
    fn check_table(
        &self,
        who: &Principal,
        privilege: Privilege,
        schema: &str,
        name: &str,
    ) -> Result<(), LochError> {
        if who.superuser || OPEN_SCHEMAS.contains(&schema) || self.owns(who, schema, name) {
            return Ok(());
        }
        if !self.may_use_schema(who, schema) {
            return Err(LochError::PermissionDenied(format!("schema {schema}")));
        }
        if self.granted(who, Some(privilege), |s| s.covers_table(schema, name)) {
            Ok(())
        } else {
            Err(LochError::PermissionDenied(format!(
                "table {schema}.{name}"
            )))
        }
    }

    /// Owner-only actions (DROP, ALTER, OPTIMIZE, VACUUM, RESTORE, GRANT):
    /// the object's owner, the owner of its schema, or a superuser.
    fn check_owner(&self, who: &Principal, schema: &str, name: &str) -> Result<(), LochError> {
        if who.superuser || self.owns(who, schema, name) || self.owns(who, schema, "") {
            return Ok(());
        }
        Err(LochError::PermissionDenied(if name.is_empty() {
            format!("schema {schema} (only its owner may do this)")
        } else {
            format!("table {schema}.{name} (only its owner may do this)")
        }))
    }

    /// Every table `plan` reads needs `SELECT`, every table it changes the
    /// privilege of the change; views are checked with their owner's
    /// rights.
    fn check_plan(
        &self,
        who: &Principal,
        plan: &LogicalPlan,
        default_schema: &str,
    ) -> Result<(), LochError> {
        let mut outcome = Ok(());
        plan.apply_with_subqueries(|node| {
            let checked = self.check_node(who, node, default_schema);
            match checked {
                Ok(descend) => Ok(descend),
                Err(e) => {
                    outcome = Err(e);
                    Ok(TreeNodeRecursion::Stop)
                }
            }
        })?;
        outcome
    }

    fn check_node(
        &self,
        who: &Principal,
        node: &LogicalPlan,
        default_schema: &str,
    ) -> Result<TreeNodeRecursion, LochError> {
        let superuser_only = |what: &str| {
            if who.superuser {
                Ok(TreeNodeRecursion::Continue)
            } else {
                Err(LochError::PermissionDenied(format!(
                    "{what} (only superusers may)"
                )))
            }
        };
        match node {
            LogicalPlan::TableScan(scan) => {
                let Some((schema, name)) = resolve_table(&scan.table_name, default_schema) else {
                    return superuser_only(&format!("table {}", scan.table_name));
                };
                self.check_table(who, Privilege::Select, &schema, &name)?;
                Ok(TreeNodeRecursion::Continue)
            }
            LogicalPlan::Extension(_) if ViewBoundary::of(node).is_some() => {
                let Some(view) = ViewBoundary::of(node) else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                self.check_table(who, Privilege::Select, &view.schema, &view.name)?;
                // A view's own plan runs with its owner's rights, in the
                // schema it was created in.
                let owner = match self.state.owner(&view.schema, &view.name) {
                    Some(owner) => Principal::of(self.state, owner),
                    None => Principal::system(),
                };
                let relation = self.store.relation(&view.schema, &view.name)?;
                let view_schema = relation
                    .and_then(|r| r.default_schema)
                    .unwrap_or_else(|| view.schema.clone());
                self.check_plan(&owner, &view.input, &view_schema)?;
                Ok(TreeNodeRecursion::Jump)
            }
            LogicalPlan::Dml(dml) => {
                let Some((schema, name)) = resolve_table(&dml.table_name, default_schema) else {
                    return superuser_only(&format!("table {}", dml.table_name));
                };
                match dml.op {
                    WriteOp::Insert(_) => {
                        self.check_table(who, Privilege::Insert, &schema, &name)?
                    }
                    WriteOp::Update => self.check_table(who, Privilege::Update, &schema, &name)?,
                    WriteOp::Delete | WriteOp::Truncate => {
                        self.check_table(who, Privilege::Delete, &schema, &name)?
                    }
                    WriteOp::Ctas => self.check_create_in(who, &schema)?,
                    WriteOp::MergeInto(ref op) => {
                        // `ON` reads the target; each action needs its own
                        // privilege (Databricks asks MODIFY and SELECT).
                        self.check_table(who, Privilege::Select, &schema, &name)?;
                        for clause in &op.clauses {
                            let privilege = match clause.action {
                                MergeIntoAction::Update(_) => Privilege::Update,
                                MergeIntoAction::Insert { .. } => Privilege::Insert,
                                MergeIntoAction::Delete => Privilege::Delete,
                            };
                            self.check_table(who, privilege, &schema, &name)?;
                        }
                    }
                    _ => {
                        return Err(LochError::PermissionDenied(format!(
                            "table {schema}.{name} ({} is not checked: refused)",
                            dml.op
                        )));
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            }
            LogicalPlan::Copy(_) => superuser_only("COPY (it writes files on the server)"),
            LogicalPlan::Ddl(ddl) => self.check_ddl(who, ddl, default_schema),
            LogicalPlan::Statement(datafusion::logical_expr::Statement::Execute(_)) => {
                superuser_only("EXECUTE of an SQL-level prepared statement")
            }
            _ => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn check_ddl(
        &self,
        who: &Principal,
        ddl: &DdlStatement,
        default_schema: &str,
    ) -> Result<TreeNodeRecursion, LochError> {
        let table = |name: &TableReference| {
            resolve_table(name, default_schema)
                .ok_or_else(|| LochError::PermissionDenied(format!("table {name}")))
        };
        match ddl {
            DdlStatement::CreateMemoryTable(create) => {
                let (schema, _) = table(&create.name)?;
                self.check_create_in(who, &schema)?;
                // The input (CTAS) is read with the creator's rights.
                Ok(TreeNodeRecursion::Continue)
            }
            DdlStatement::CreateView(create) => {
                let (schema, _) = table(&create.name)?;
                self.check_create_in(who, &schema)?;
                // Checked when the view is used, with its owner's rights.
                Ok(TreeNodeRecursion::Jump)
            }
            DdlStatement::DropTable(drop) => {
                let (schema, name) = table(&drop.name)?;
                self.check_owner(who, &schema, &name)?;
                Ok(TreeNodeRecursion::Continue)
            }
            DdlStatement::DropView(drop) => {
                let (schema, name) = table(&drop.name)?;
                self.check_owner(who, &schema, &name)?;
                Ok(TreeNodeRecursion::Continue)
            }
            DdlStatement::DropCatalogSchema(drop) => {
                let schema = ddl::schema_name(&drop.name.to_string())?;
                self.check_owner(who, &schema, "")?;
                Ok(TreeNodeRecursion::Continue)
            }
            DdlStatement::CreateExternalTable(_) if !who.superuser => {
                Err(LochError::PermissionDenied(
                    "creating external tables (only superusers may: an external table reads \
                     any location the server can reach)"
                        .into(),
                ))
            }
            DdlStatement::CreateCatalogSchema(_) if !who.superuser => Err(
                LochError::PermissionDenied("creating schemas (only superusers may)".into()),
            ),
            _ if who.superuser => Ok(TreeNodeRecursion::Continue),
            other => Err(LochError::PermissionDenied(format!(
                "{} (only superusers may)",
                other.name()
            ))),
        }
    }
}

/// (schema, table) of a name in a plan, resolved as DataFusion did;
/// `None` for tables outside Loch's catalog (DataFusion's own
/// `information_schema` and the like). Time travel (`t@v3`, an earlier
/// version of t) is under t's grants and policies.
pub(crate) fn resolve_table(
    name: &TableReference,
    default_schema: &str,
) -> Option<(String, String)> {
    let resolved = name.clone().resolve(DATABASE_NAME, default_schema);
    if resolved.catalog.as_ref() != DATABASE_NAME {
        return None;
    }
    let table = resolved.table.as_ref();
    let base = loch_catalog::delta::TimeTravel::split(table)
        .map(|(base, _)| base)
        .unwrap_or(table);
    Some((resolved.schema.to_string(), base.to_string()))
}

/// The grants of the session's user, refreshed for every statement: a
/// `REVOKE` or `DROP ROLE` holds from the next statement of every session.
fn snapshot(session: &Session) -> Result<SecurityState, LochError> {
    let state = session.engine().catalog().store().security_state()?;
    match state.roles.get(session.user()) {
        Some(role) if role.login => Ok(state),
        _ => Err(LochError::SessionRoleGone(session.user().to_string())),
    }
}

/// The check every planned statement passes before it runs; the grants it
/// was decided on (row filters and masks are applied with the same).
pub fn authorize(session: &Session, plan: &LogicalPlan) -> Result<SecurityState, LochError> {
    let state = snapshot(session)?;
    let me = Principal::of(&state, session.user());
    if !me.superuser {
        let checker = Checker {
            state: &state,
            store: session.engine().catalog().store().as_ref(),
        };
        checker.check_plan(&me, plan, &ddl::current_schema(session))?;
    }
    Ok(state)
}

/// The check of a Delta utility on `schema.name`: reading its history needs
/// `SELECT`, changing its files (`OPTIMIZE`, `VACUUM`, `RESTORE`) ownership.
pub fn authorize_delta(
    session: &Session,
    schema: &str,
    name: &str,
    reads_only: bool,
) -> Result<(), LochError> {
    let state = snapshot(session)?;
    let me = Principal::of(&state, session.user());
    let checker = Checker {
        state: &state,
        store: session.engine().catalog().store().as_ref(),
    };
    if reads_only {
        checker.check_table(&me, Privilege::Select, schema, name)
    } else {
        checker.check_owner(&me, schema, name)
    }
}

/// Whether `user` may see `schema.name` (a schema when `name` is "") in
/// catalog listings: it owns it, or may use the schema and holds some
/// privilege on the table. Reads the grants once per listing.
fn visibility(store: Arc<dyn CatalogStore>, user: &str) -> impl Fn(&str, &str) -> bool + use<> {
    let state = store.security_state().unwrap_or_else(|e| {
        tracing::error!(error = %e, "reading grants for a catalog listing");
        SecurityState::default()
    });
    let me = Principal::of(&state, user);
    move |schema: &str, name: &str| {
        let checker = Checker {
            state: &state,
            store: store.as_ref(),
        };
        OPEN_SCHEMAS.contains(&schema)
            || checker.check_owner(&me, schema, name).is_ok()
            || checker.may_use_schema(&me, schema)
                && (name.is_empty() || checker.granted(&me, None, |s| s.covers_table(schema, name)))
    }
}

/// The catalog as one user sees it in listings (`information_schema`,
/// `SHOW TABLES`, Flight SQL `GetDbSchemas`/`GetTables`): schemas and
/// tables it may not use are left out. Naming one still resolves, so a
/// query of a hidden table is refused with 42501, not 42P01.
#[derive(Debug)]
pub struct VisibleCatalog {
    inner: Arc<dyn CatalogProvider>,
    store: Arc<dyn CatalogStore>,
    user: String,
    /// Schemas of this session only (its `pg_catalog`), ahead of the
    /// shared catalog's.
    session_schemas: std::sync::RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl VisibleCatalog {
    pub fn new(inner: Arc<dyn CatalogProvider>, store: Arc<dyn CatalogStore>, user: &str) -> Self {
        VisibleCatalog {
            inner,
            store,
            user: user.to_string(),
            session_schemas: Default::default(),
        }
    }

    /// Adds a schema only this session sees (not the shared catalog).
    pub fn add_session_schema(&self, name: &str, schema: Arc<dyn SchemaProvider>) {
        if let Ok(mut schemas) = self.session_schemas.write() {
            schemas.insert(name.to_string(), schema);
        }
    }

    fn session_schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.session_schemas
            .read()
            .ok()
            .and_then(|s| s.get(name).cloned())
    }
}

impl CatalogProvider for VisibleCatalog {
    fn schema_names(&self) -> Vec<String> {
        let visible = visibility(Arc::clone(&self.store), &self.user);
        let mut names: Vec<String> = self
            .inner
            .schema_names()
            .into_iter()
            .filter(|s| visible(s, ""))
            .collect();
        if let Ok(own) = self.session_schemas.read() {
            names.extend(
                own.keys()
                    .filter(|k| !names.contains(k))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(own) = self.session_schema(name) {
            return Some(own);
        }
        let inner = self.inner.schema(name)?;
        Some(Arc::new(VisibleSchema {
            inner,
            name: name.to_string(),
            store: Arc::clone(&self.store),
            user: self.user.clone(),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> datafusion::error::Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.deregister_schema(name, cascade)
    }
}

/// One schema of a [`VisibleCatalog`].
#[derive(Debug)]
struct VisibleSchema {
    inner: Arc<dyn SchemaProvider>,
    name: String,
    store: Arc<dyn CatalogStore>,
    user: String,
}

#[async_trait::async_trait]
impl SchemaProvider for VisibleSchema {
    fn table_names(&self) -> Vec<String> {
        let visible = visibility(Arc::clone(&self.store), &self.user);
        self.inner
            .table_names()
            .into_iter()
            .filter(|t| visible(&self.name, t))
            .collect()
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        self.inner.table(name).await
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

// ---------------------------------------------------------------- running

/// Runs a role, grant or ownership statement.
pub async fn run(session: &Session, command: SecurityCommand) -> Result<Output, LochError> {
    let state = snapshot(session)?;
    let me = Principal::of(&state, session.user());
    let store = Arc::clone(session.engine().catalog().store());
    let tag = command.tag();
    let superuser_only = |what: &str| {
        if me.superuser {
            Ok(())
        } else {
            Err(LochError::PermissionDenied(format!(
                "{what} (only superusers may)"
            )))
        }
    };
    let role_exists = |name: &str| -> Result<(), LochError> {
        if name == PUBLIC || state.roles.contains_key(name) {
            Ok(())
        } else {
            Err(LochError::UnknownRole(name.to_string()))
        }
    };
    let checker = Checker {
        state: &state,
        store: session.engine().catalog().store().as_ref(),
    };
    match command {
        SecurityCommand::CreateRole {
            name,
            if_not_exists,
            options,
        } => {
            superuser_only("creating roles")?;
            if name == PUBLIC || name.starts_with("pg_") {
                return Err(LochError::ReservedName(format!(
                    "role name \"{name}\" is reserved"
                )));
            }
            let verifier = password_verifier(options.password.clone()).await?;
            let role = Role {
                name: name.clone(),
                login: options.login.unwrap_or(false),
                superuser: options.superuser.unwrap_or(false),
                verifier,
                connection_limit: options.connection_limit.flatten(),
            };
            if !store.create_role(&role)? && !if_not_exists {
                return Err(LochError::RoleExists(name));
            }
        }
        SecurityCommand::AlterRole { name, options } => {
            let own_password_only = name == me.name
                && options.login.is_none()
                && options.superuser.is_none()
                && options.connection_limit.is_none();
            if !own_password_only {
                superuser_only("changing roles other than your own password")?;
            }
            let mut role = state
                .roles
                .get(&name)
                .cloned()
                .ok_or_else(|| LochError::UnknownRole(name.clone()))?;
            if let Some(login) = options.login {
                role.login = login;
            }
            if let Some(superuser) = options.superuser {
                role.superuser = superuser;
            }
            if let Some(limit) = options.connection_limit {
                role.connection_limit = limit;
            }
            if options.password.is_some() {
                role.verifier = password_verifier(options.password).await?;
            }
            if !store.update_role(&role)? {
                return Err(LochError::UnknownRole(name));
            }
        }
        SecurityCommand::DropRole { names, if_exists } => {
            superuser_only("dropping roles")?;
            for name in names {
                if name == me.name {
                    return Err(LochError::ObjectInUse(
                        "current user cannot be dropped".into(),
                    ));
                }
                if !store.drop_role(&name)? && !if_exists {
                    return Err(LochError::UnknownRole(name));
                }
            }
        }
        SecurityCommand::Membership {
            grant,
            roles,
            members,
        } => {
            superuser_only("granting roles")?;
            for role in &roles {
                role_exists(role)?;
                for member in &members {
                    role_exists(member)?;
                    if grant {
                        if state.roles_of(role).contains(member) {
                            return Err(LochError::InvalidGrant(format!(
                                "role \"{member}\" is a member of role \"{role}\" already, \
                                 or granting it would make a cycle"
                            )));
                        }
                        store.add_member(role, member)?;
                    } else {
                        store.remove_member(role, member)?;
                    }
                }
            }
        }
        SecurityCommand::Privileges {
            grant,
            privileges,
            target,
            grantees,
        } => {
            for grantee in &grantees {
                role_exists(grantee)?;
            }
            let securables = securables(session, &checker, &me, &target)?;
            for securable in securables {
                let all: &[Privilege] = match &securable {
                    Securable::Schema { .. } => &Privilege::SCHEMA,
                    _ => &Privilege::TABLE,
                };
                let list = privileges.clone().unwrap_or_else(|| all.to_vec());
                for grantee in &grantees {
                    for privilege in &list {
                        if grant {
                            store.grant(&Grant {
                                grantee: grantee.clone(),
                                securable: securable.clone(),
                                privilege: *privilege,
                                grantor: me.name.clone(),
                            })?;
                        } else {
                            store.revoke(grantee, &securable, *privilege)?;
                        }
                    }
                }
            }
        }
        SecurityCommand::Owner {
            schema_level,
            name,
            owner,
        } => {
            role_exists(&owner)?;
            let (schema, table) = if schema_level {
                let [schema] = name.as_slice() else {
                    return Err(LochError::Syntax("a schema name is one name".into()));
                };
                if !store.schema_exists(schema)? {
                    return Err(loch_catalog::CatalogError::SchemaNotFound(schema.clone()).into());
                }
                (schema.clone(), String::new())
            } else {
                let (schema, table) = ddl::table_name(session, &ddl::reference(&name)?)?;
                if store.relation(&schema, &table)?.is_none() {
                    return Err(loch_catalog::CatalogError::RelationNotFound {
                        schema,
                        name: table,
                    }
                    .into());
                }
                (schema, table)
            };
            checker.check_owner(&me, &schema, &table)?;
            if !me.superuser && !me.roles.contains(&owner) {
                return Err(LochError::PermissionDenied(format!(
                    "role {owner} (you must be a member of the new owner)"
                )));
            }
            store.set_owner(&schema, &table, &owner)?;
        }
        SecurityCommand::Policy {
            table,
            column,
            expression,
        } => {
            let (schema, name) = ddl::table_name(session, &ddl::reference(&table)?)?;
            checker.check_owner(&me, &schema, &name)?;
            crate::policy::set(
                session,
                (schema, name),
                column.as_deref(),
                expression.as_deref(),
                &state,
            )
            .await?;
        }
        SecurityCommand::ShowGrants { on, to } => {
            return show_grants(session, &checker, &me, on, to);
        }
        SecurityCommand::Credential(command) => {
            return crate::credentials::run(session, me.superuser, command);
        }
    }
    Ok(Output::Command {
        tag: tag.to_string(),
        rows: None,
    })
}

/// A new verifier for `password` (`None` for `PASSWORD NULL` or none).
async fn password_verifier(password: Option<Option<String>>) -> Result<Option<String>, LochError> {
    let Some(Some(password)) = password else {
        return Ok(None);
    };
    if password.is_empty() {
        return Err(LochError::InvalidParameter("empty password".into()));
    }
    tokio::task::spawn_blocking(move || Verifier::new(&password).map(|v| v.to_text()))
        .await
        .map_err(|e| LochError::Internal(e.to_string()))?
        .map(Some)
        .map_err(|e| LochError::Internal(e.to_string()))
}

/// The objects a `GRANT`/`REVOKE` names, after checking that they exist
/// and that the user owns them.
fn securables(
    session: &Session,
    checker: &Checker<'_>,
    me: &Principal,
    target: &Target,
) -> Result<Vec<Securable>, LochError> {
    let catalog = session.engine().catalog();
    let schema_exists = |schema: &str| -> Result<(), LochError> {
        if catalog.store().schema_exists(schema)? || catalog.is_builtin_schema(schema) {
            Ok(())
        } else {
            Err(loch_catalog::CatalogError::SchemaNotFound(schema.to_string()).into())
        }
    };
    let mut out = Vec::new();
    match target {
        Target::Tables(tables) => {
            for parts in tables {
                let (schema, name) = ddl::table_name(session, &ddl::reference(parts)?)?;
                let exists = catalog.store().relation(&schema, &name)?.is_some()
                    || catalog.is_builtin_table(&schema, &name);
                if !exists {
                    return Err(
                        loch_catalog::CatalogError::RelationNotFound { schema, name }.into(),
                    );
                }
                checker.check_owner(me, &schema, &name)?;
                out.push(Securable::Table { schema, name });
            }
        }
        Target::AllTablesIn(schemas) => {
            for schema in schemas {
                schema_exists(schema)?;
                checker.check_owner(me, schema, "")?;
                out.push(Securable::AllTables {
                    schema: schema.clone(),
                });
            }
        }
        Target::Schemas(schemas) => {
            for schema in schemas {
                schema_exists(schema)?;
                checker.check_owner(me, schema, "")?;
                out.push(Securable::Schema {
                    schema: schema.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn show_grants(
    session: &Session,
    checker: &Checker<'_>,
    me: &Principal,
    on: Option<Target>,
    to: Option<String>,
) -> Result<Output, LochError> {
    let wanted: Option<Vec<Securable>> = match &on {
        None => None,
        Some(Target::Tables(tables)) => Some(
            tables
                .iter()
                .map(|parts| {
                    ddl::table_name(session, &ddl::reference(parts)?)
                        .map(|(schema, name)| Securable::Table { schema, name })
                })
                .collect::<Result<_, LochError>>()?,
        ),
        Some(Target::AllTablesIn(schemas)) => Some(
            schemas
                .iter()
                .map(|s| Securable::AllTables { schema: s.clone() })
                .collect(),
        ),
        Some(Target::Schemas(schemas)) => Some(
            schemas
                .iter()
                .map(|s| Securable::Schema { schema: s.clone() })
                .collect(),
        ),
    };
    let recipients = to.as_deref().map(|r| checker.state.roles_of(r));
    let mut rows: Vec<[String; 5]> = Vec::new();
    for g in &checker.state.grants {
        if let Some(wanted) = &wanted {
            // A table's grants include those on all tables of its schema.
            let matches = wanted.iter().any(|w| {
                *w == g.securable
                    || matches!(w, Securable::Table { schema, name }
                        if g.securable.covers_table(schema, name))
            });
            if !matches {
                continue;
            }
        }
        if let Some(recipients) = &recipients
            && !recipients.contains(&g.grantee)
        {
            continue;
        }
        // Others' grants are visible to superusers and to owners only.
        let (schema, name) = match &g.securable {
            Securable::Table { schema, name } => (schema.as_str(), name.as_str()),
            Securable::AllTables { schema } | Securable::Schema { schema } => (schema.as_str(), ""),
        };
        let visible = me.superuser
            || me.roles.contains(&g.grantee)
            || checker.check_owner(me, schema, name).is_ok();
        if !visible {
            continue;
        }
        let (object_type, object_name) = g.securable.describe();
        rows.push([
            g.grantee.clone(),
            g.privilege.as_str().to_string(),
            object_type.to_string(),
            object_name,
            g.grantor.clone(),
        ]);
    }
    let columns: Vec<Vec<&str>> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].as_str()).collect())
        .collect();
    crate::session::text_rows(show_grants_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn parse_sql(sql: &str) -> Result<SecurityCommand, LochError> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .map_err(|e| LochError::Syntax(e.to_string()))?;
        let words = crate::databricks::significant(&tokens);
        assert!(is_security_statement(&words), "{sql}");
        parse(&words)
    }

    #[test]
    fn role_statements_parse() {
        let c = parse_sql("CREATE USER ann WITH PASSWORD 'p''w' CONNECTION LIMIT 2").unwrap();
        let SecurityCommand::CreateRole { name, options, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(name, "ann");
        assert_eq!(options.login, Some(true));
        assert_eq!(options.password, Some(Some("p'w".into())));
        assert_eq!(options.connection_limit, Some(Some(2)));
        assert!(!format!("{options:?}").contains("p'w"));
        let c = parse_sql("create role analysts").unwrap();
        assert!(
            matches!(c, SecurityCommand::CreateRole { options, .. } if options.login.is_none())
        );
        let e = parse_sql("ALTER ROLE ann PASSWORD hunter2").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(matches!(
            parse_sql("DROP USER IF EXISTS ann, bob").unwrap(),
            SecurityCommand::DropRole { names, if_exists: true } if names.len() == 2
        ));
    }

    #[test]
    fn grant_statements_parse() {
        let c = parse_sql("GRANT SELECT, INSERT ON TABLE s.t, u TO ann, ROLE analysts").unwrap();
        let SecurityCommand::Privileges {
            grant: true,
            privileges: Some(p),
            target: Target::Tables(t),
            grantees,
        } = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(p, vec![Privilege::Select, Privilege::Insert]);
        assert_eq!(t.len(), 2);
        assert_eq!(grantees, vec!["ann".to_string(), "analysts".into()]);
        assert!(matches!(
            parse_sql("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA sales FROM PUBLIC").unwrap(),
            SecurityCommand::Privileges {
                grant: false,
                privileges: None,
                target: Target::AllTablesIn(_),
                ..
            }
        ));
        assert!(matches!(
            parse_sql("GRANT USAGE ON SCHEMA sales TO ann").unwrap(),
            SecurityCommand::Privileges {
                target: Target::Schemas(_),
                ..
            }
        ));
        assert!(parse_sql("GRANT SELECT ON SCHEMA sales TO ann").is_err());
        assert!(matches!(
            parse_sql("GRANT analysts TO ann").unwrap(),
            SecurityCommand::Membership { grant: true, .. }
        ));
        assert!(matches!(
            parse_sql("ALTER TABLE t OWNER TO ann").unwrap(),
            SecurityCommand::Owner {
                schema_level: false,
                ..
            }
        ));
        assert!(matches!(
            parse_sql("SHOW GRANTS ON TABLE t").unwrap(),
            SecurityCommand::ShowGrants {
                on: Some(_),
                to: None
            }
        ));
    }
}
