//! Where a view's plan begins, so authorization can tell it apart.
//!
//! DataFusion inlines a view's plan into the query that names it (it
//! becomes a subquery alias, like any `FROM (…) AS v`). Views run with their
//! owner's rights, so the authorization walk must know which part of the
//! plan came from which view — in a way no SQL text can forge. The catalog
//! therefore wraps every view's plan in a [`ViewBoundary`] extension node
//! (SQL cannot produce extension nodes); [`StripViewBoundaries`], the last
//! analyzer rule, removes them before optimization, so they cost nothing.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchemaRef, Result};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::optimizer::analyzer::AnalyzerRule;

/// Marks the plan of view `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct ViewBoundary {
    pub schema: String,
    pub name: String,
    pub input: LogicalPlan,
}

impl ViewBoundary {
    /// `input`, marked as the plan of view `schema.name`.
    pub fn wrap(schema: &str, name: &str, input: LogicalPlan) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(ViewBoundary {
                schema: schema.to_string(),
                name: name.to_string(),
                input,
            }),
        })
    }

    /// The boundary `plan` is, if it is one.
    pub fn of(plan: &LogicalPlan) -> Option<&ViewBoundary> {
        match plan {
            LogicalPlan::Extension(ext) => ext.node.as_any().downcast_ref::<ViewBoundary>(),
            _ => None,
        }
    }
}

impl UserDefinedLogicalNodeCore for ViewBoundary {
    fn name(&self) -> &str {
        "ViewBoundary"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ViewBoundary: {}.{}", self.schema, self.name)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs.pop().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("ViewBoundary needs its input".into())
        })?;
        Ok(ViewBoundary {
            schema: self.schema.clone(),
            name: self.name.clone(),
            input,
        })
    }
}

/// Removes [`ViewBoundary`] nodes (in subqueries too) once planning is done.
#[derive(Debug, Default)]
pub struct StripViewBoundaries;

impl AnalyzerRule for StripViewBoundaries {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| match ViewBoundary::of(&node) {
            Some(boundary) => Ok(Transformed::yes(boundary.input.clone())),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "strip_view_boundaries"
    }
}
