//! Runs the role, grant and ownership statements: `CREATE/ALTER/DROP
//! ROLE`, `GRANT`, `REVOKE`, `SHOW GRANTS`, `ALTER … OWNER TO`, and row
//! filters and masks. Who may run each is decided in the access module.

use std::sync::Arc;

use loch_catalog::access_control::{Grant, PUBLIC, Privilege, Role, Securable};

use crate::access::Subject;
use crate::access::authn::Verifier;
use crate::access::authz::{Checker, Principal, snapshot};
use crate::error::LochError;
use crate::session::{Output, Session, text_rows};
use crate::sql::names::{reference, table_name};
use crate::sql::security::{SecurityCommand, Target, show_grants_schema};

// ---------------------------------------------------------------- running

/// Runs a role, grant or ownership statement.
/// What `ALTER ROLE … SET` may set: defaults for the role's sessions
/// (`statement_timeout`, `memory_limit`) and the role's own admission
/// limit (`max_concurrent_queries`, [`crate::admission`]).
pub const ROLE_SETTINGS: &[&str] = &[
    "max_concurrent_queries",
    "memory_limit",
    "statement_timeout",
];

/// Refuses a value `name` cannot take.
fn check_role_setting(name: &str, value: &str) -> Result<(), LochError> {
    let valid = match name {
        "max_concurrent_queries" => value.trim().parse::<usize>().is_ok_and(|n| n > 0),
        "memory_limit" => crate::session::settings::parse_memory_limit(value).is_some(),
        "statement_timeout" => crate::session::settings::parse_timeout(value).is_some(),
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(LochError::InvalidParameterValue {
            name: name.to_string(),
            value: value.to_string(),
        })
    }
}

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
        SecurityCommand::RoleSetting { role, name, value } => {
            superuser_only("changing a role's settings")?;
            role_exists(&role)?;
            let names: Vec<String> = if name == "all" && value.is_none() {
                store.role_settings(&role)?.into_keys().collect()
            } else {
                let engine_setting = crate::session::settings::is_engine_setting(&name);
                if !engine_setting && !ROLE_SETTINGS.contains(&name.as_str()) {
                    return Err(LochError::NotSupported(format!(
                        "role setting \"{name}\" (a role may set {}, and DataFusion's \
                         and datafusion-distributed's settings)",
                        ROLE_SETTINGS.join(", ")
                    )));
                }
                if let Some(value) = &value {
                    if engine_setting {
                        // The value must be one the setting takes.
                        let mut options =
                            session.context().state().config_options().as_ref().clone();
                        options.set(&name, value).map_err(|_| {
                            LochError::InvalidParameterValue {
                                name: name.clone(),
                                value: value.clone(),
                            }
                        })?;
                    } else {
                        check_role_setting(&name, value)?;
                    }
                }
                vec![name]
            };
            for name in names {
                if !store.set_role_setting(&role, &name, value.as_deref())? {
                    return Err(LochError::UnknownRole(role));
                }
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
                let (schema, table) = table_name(&reference(&name)?, &session.current_schema())?;
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
            let (schema, name) = table_name(&reference(&table)?, &session.current_schema())?;
            checker.check_owner(&me, &schema, &name)?;
            crate::commands::policy::set(
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
            return crate::commands::credentials::run(session, me.superuser, command);
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
                let (schema, name) = table_name(&reference(parts)?, &session.current_schema())?;
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
                    table_name(&reference(parts)?, &session.current_schema())
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
    text_rows(show_grants_schema(), columns)
}
