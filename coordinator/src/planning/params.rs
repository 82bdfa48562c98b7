//! Parameters of prepared statements: their `$1..$n` types from a plan,
//! and the values a client binds, cast to those types.

use arrow::datatypes::DataType;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;

use crate::error::LochError;

/// Values bound to a prepared statement, cast to the types its plan
/// expects (a client may send an int64 for an int32 column, say).
pub fn bind_values(
    param_types: &[Option<DataType>],
    values: Vec<ScalarValue>,
) -> Result<ParamValues, LochError> {
    if values.len() != param_types.len() {
        return Err(LochError::InvalidParameter(format!(
            "the statement takes {} parameters, {} were bound",
            param_types.len(),
            values.len()
        )));
    }
    let values = values
        .into_iter()
        .zip(param_types)
        .enumerate()
        .map(|(i, (value, ty))| match ty {
            Some(ty) if value.data_type() != *ty => value.cast_to(ty).map_err(|e| {
                LochError::InvalidParameter(format!(
                    "parameter ${} cannot be used as {ty}: {}",
                    i + 1,
                    crate::error::LochError::from(e).message()
                ))
            }),
            _ => Ok(value),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParamValues::from(values))
}

/// The most parameters a statement may have (PostgreSQL's limit).
pub const MAX_PARAMETERS: usize = 65_535;

/// `$1..$n` parameter types of a plan, in order.
pub fn ordered_parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, LochError> {
    let types = plan.get_parameter_types()?;
    let mut indexed: Vec<(usize, Option<DataType>)> = Vec::with_capacity(types.len());
    for (name, ty) in types {
        let index = name
            .trim_start_matches('$')
            .parse::<usize>()
            .map_err(|_| LochError::NotSupported(format!("named parameter {name}")))?;
        indexed.push((index, ty));
    }
    indexed.sort_by_key(|(i, _)| *i);
    let count = indexed.last().map(|(i, _)| *i).unwrap_or(0);
    // PostgreSQL's own limit; without it `$4000000000` would allocate
    // gigabytes below.
    if count > MAX_PARAMETERS {
        return Err(LochError::TooMany(format!(
            "a statement may have at most {MAX_PARAMETERS} parameters, not ${count}"
        )));
    }
    let mut ordered = vec![None; count];
    for (i, ty) in indexed {
        if i >= 1 {
            ordered[i - 1] = ty;
        }
    }
    Ok(ordered)
}
