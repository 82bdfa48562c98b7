//! Access: the one place that answers "who is this?" and "may this user
//! do this?".
//!
//! - [`authn`]: who may connect: SCRAM-SHA-256 verifiers, the pg wire SCRAM
//!   exchange, Flight SQL's password check, the admin user.
//! - [`authz`]: grants and ownership: the check every planned statement
//!   passes on both protocols, and who may replace, drop or alter what.
//! - [`policy`]: row filters and column masks, put inside every plan.
//! - [`visible`]: the catalog as one user sees it in listings.
//!
//! Nothing here knows a session: the checks ask a [`Subject`] (a session
//! implements it) for the user, the catalog and the planning context.

pub mod authn;
pub mod authz;
pub mod policy;
pub mod visible;

use datafusion::prelude::SessionContext;
use loch_catalog::LochCatalog;

pub use authz::{authorize, authorize_delta};
pub use visible::VisibleCatalog;

use datafusion::logical_expr::LogicalPlan;

use crate::error::LochError;

/// A plan that passed the access check, with the row filters and column
/// masks of what it reads put into it: the only kind of plan the planner
/// runs. Only [`protect`] makes one.
#[derive(Debug, Clone)]
pub struct Authorized(LogicalPlan);

impl Authorized {
    /// The plan.
    pub fn plan(&self) -> &LogicalPlan {
        &self.0
    }

    /// The plan, to run.
    pub fn into_plan(self) -> LogicalPlan {
        self.0
    }
}

/// `plan` checked against `who`'s grants ([`authorize`]) and protected by
/// the row filters and column masks of what it reads ([`policy::apply`]).
pub fn protect(who: &dyn Subject, plan: LogicalPlan) -> Result<Authorized, LochError> {
    let grants = authorize(who, &plan)?;
    Ok(Authorized(policy::apply(who, plan, &grants)?))
}

/// Who a check is for, and where it looks: what the access checks need of
/// a session.
pub trait Subject: Send + Sync {
    /// The user the statement runs as.
    fn user(&self) -> &str;
    /// The catalog whose grants and policies decide.
    fn catalog(&self) -> &LochCatalog;
    /// The context names are resolved and expressions planned in.
    fn context(&self) -> &SessionContext;
    /// The schema unqualified names resolve in (the first of `search_path`).
    fn current_schema(&self) -> String {
        self.context()
            .state()
            .config()
            .options()
            .catalog
            .default_schema
            .clone()
    }
}
