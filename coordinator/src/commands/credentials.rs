//! Runs `CREATE STORAGE CREDENTIAL`, `DROP STORAGE CREDENTIAL` and `SHOW
//! STORAGE CREDENTIALS`: named object store settings tables use with
//! `OPTIONS ('credential' 'name')` (the catalog keeps them, sealed).
//! Superusers only, like the external tables that use them.

use loch_catalog::storage_credentials;

use crate::error::LochError;
use crate::session::{Output, Session};
use crate::sql::credentials::{CredentialCommand, show_schema};

/// Runs a credential statement; `superuser` says whether the user is one.
pub fn run(
    session: &Session,
    superuser: bool,
    command: CredentialCommand,
) -> Result<Output, LochError> {
    if !superuser {
        return Err(LochError::PermissionDenied(
            "storage credentials (only superusers may create, drop or list them)".into(),
        ));
    }
    let store = session.engine().catalog().store();
    let tag = command.tag();
    match command {
        CredentialCommand::Create {
            name,
            settings,
            or_replace,
            if_not_exists,
        } => {
            let settings = storage_credentials::validate(&settings)
                .map_err(|e| LochError::InvalidParameter(e.to_string()))?;
            store.create_credential(&name, &settings, session.user(), or_replace, if_not_exists)?;
        }
        CredentialCommand::Drop { name, if_exists } => {
            if !store.drop_credential(&name)? && !if_exists {
                return Err(loch_catalog::CatalogError::CredentialNotFound(name).into());
            }
        }
        CredentialCommand::Show => {
            let listed = store.credentials()?;
            let rows: Vec<[String; 5]> = listed
                .into_iter()
                .map(|c| {
                    [
                        c.name,
                        c.settings.join(", "),
                        c.owner,
                        c.created_at,
                        c.used_by.join(", "),
                    ]
                })
                .collect();
            let columns: Vec<Vec<&str>> = (0..5)
                .map(|i| rows.iter().map(|r| r[i].as_str()).collect())
                .collect();
            return crate::session::text_rows(show_schema(), columns);
        }
    }
    Ok(Output::Command {
        tag: tag.to_string(),
        rows: None,
    })
}
