//! PostgreSQL type facts that pg wire (row descriptions) and `pg_catalog`
//! (`atttypmod`) must tell alike.

/// PostgreSQL's `atttypmod` of `numeric(p, s)`: `((p << 16) | s) + 4`;
/// `None` for other types and for decimals PostgreSQL's numeric cannot
/// declare (negative scale, precision over 1000).
pub fn numeric_typmod(data_type: &arrow::datatypes::DataType) -> Option<i32> {
    use arrow::datatypes::DataType;
    let (precision, scale) = match data_type {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => (i32::from(*p), i32::from(*s)),
        _ => return None,
    };
    if !(1..=1000).contains(&precision) || !(0..=precision).contains(&scale) {
        return None;
    }
    Some(((precision << 16) | scale) + 4)
}
