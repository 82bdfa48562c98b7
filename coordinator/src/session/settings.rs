//! A session's PostgreSQL-visible settings: their defaults, the ones only
//! a server start changes, how `statement_timeout` and libpq's `options`
//! read, and the SQL functions that read and write them
//! (`current_setting`, `set_config`, `version()`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::StringArray;
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use loch_catalog::DEFAULT_SCHEMA;

use crate::cache::key::USE_CACHED_RESULT;
use crate::error::LochError;
use crate::sql::canonical_name;

/// The `server_version` Loch reports: the PostgreSQL release whose protocol
/// and catalog behaviour it follows (drivers parse this number).
pub const SERVER_VERSION: &str = "16.6";

/// What `version()` answers: PostgreSQL's format first, because drivers and
/// ORMs (SQLAlchemy, for one) parse the version number out of it.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (Loch {}) on {}-{}, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// `version()` as PostgreSQL spells it, replacing DataFusion's.
pub(crate) fn version_udf() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use datafusion::scalar::ScalarValue;
    let version = version_string();
    create_udf(
        "version",
        vec![],
        arrow::datatypes::DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    )
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// PostgreSQL-visible settings by lower-case name.
    pub(crate) values: BTreeMap<String, String>,
    pub(crate) statement_timeout: Option<Duration>,
}

/// The settings clients read or write at connect, with PostgreSQL's defaults.
pub(crate) fn default_settings(user: &str, database: &str) -> BTreeMap<String, String> {
    [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("client_min_messages", "notice"),
        ("datestyle", "ISO, MDY"),
        ("default_table_access_method", "heap"),
        ("default_transaction_isolation", "read committed"),
        ("default_transaction_read_only", "off"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("lc_collate", "C"),
        ("lc_ctype", "C"),
        ("memory_limit", "0"),
        ("max_identifier_length", "63"),
        ("search_path", DEFAULT_SCHEMA),
        ("server_encoding", "UTF8"),
        ("server_version", SERVER_VERSION),
        ("server_version_num", "160006"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
        ("transaction_read_only", "off"),
        (USE_CACHED_RESULT, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([
        ("session_authorization".to_string(), user.to_string()),
        ("current_database".to_string(), database.to_string()),
    ])
    .collect()
}

/// `current_setting(name [, missing_ok])`: the session's value of a
/// setting; an unknown one is an error, or NULL with `missing_ok`.
pub(crate) fn current_setting_udf(
    settings: Arc<Mutex<Settings>>,
) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Signature, Volatility};
    #[derive(Debug)]
    struct CurrentSetting {
        settings: Arc<Mutex<Settings>>,
        signature: Signature,
    }
    impl PartialEq for CurrentSetting {
        fn eq(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.settings, &other.settings)
        }
    }
    impl Eq for CurrentSetting {}
    impl std::hash::Hash for CurrentSetting {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            "current_setting".hash(state);
        }
    }
    impl datafusion::logical_expr::ScalarUDFImpl for CurrentSetting {
        fn name(&self) -> &str {
            "current_setting"
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
            Ok(DataType::Utf8)
        }
        fn invoke_with_args(
            &self,
            args: datafusion::logical_expr::ScalarFunctionArgs,
        ) -> datafusion::error::Result<ColumnarValue> {
            let arrays = ColumnarValue::values_to_arrays(&args.args)?;
            let names = arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("current_setting: names".into()))?;
            let missing_ok = match arrays.get(1) {
                Some(flag) => {
                    let flag = arrow::compute::cast(flag, &DataType::Boolean)?;
                    flag.as_any()
                        .downcast_ref::<arrow::array::BooleanArray>()
                        .is_some_and(|f| !f.is_empty() && f.value(0))
                }
                None => false,
            };
            let settings = self
                .settings
                .lock()
                .map_err(|_| DataFusionError::Internal("session settings lock poisoned".into()))?;
            let mut out = arrow::array::StringBuilder::new();
            for name in names.iter() {
                match name {
                    None => out.append_null(),
                    Some(name) => match settings.values.get(&canonical_name(name)) {
                        Some(value) => out.append_value(value),
                        None if missing_ok => out.append_null(),
                        None => {
                            return Err(DataFusionError::External(Box::new(
                                LochError::UnknownParameter(name.to_string()),
                            )));
                        }
                    },
                }
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }
    }
    ScalarUDF::new_from_impl(CurrentSetting {
        settings,
        signature: Signature::one_of(
            vec![
                datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8]),
                datafusion::logical_expr::TypeSignature::Exact(vec![
                    DataType::Utf8,
                    DataType::Boolean,
                ]),
            ],
            // As in PostgreSQL: fixed within a statement, so it folds into
            // constants (Grafana passes it to generate_series).
            Volatility::Stable,
        ),
    })
}

/// `set_config(name, value, is_local)`: sets a client-visible setting that
/// has no effect on planning (the way pgAdmin and others set
/// `bytea_output`), answering the value; settings with an effect
/// (`search_path`, `statement_timeout`, `TimeZone`) take `SET`.
pub(crate) fn set_config_udf(
    settings: Arc<Mutex<Settings>>,
) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(move |args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (Some(names), Some(values)) = (
                arrays[0].as_any().downcast_ref::<StringArray>(),
                arrays[1].as_any().downcast_ref::<StringArray>(),
            ) else {
                return Err(DataFusionError::Internal("set_config: arguments".into()));
            };
            let mut settings = settings
                .lock()
                .map_err(|_| DataFusionError::Internal("session settings lock poisoned".into()))?;
            for (name, value) in names.iter().zip(values.iter()) {
                let (Some(name), Some(value)) = (name, value) else {
                    continue;
                };
                let name = canonical_name(name);
                if READ_ONLY_SETTINGS.contains(&name.as_str())
                    || matches!(
                        name.as_str(),
                        "search_path" | "statement_timeout" | "timezone"
                    )
                {
                    return Err(DataFusionError::NotImplemented(format!(
                        "set_config of {name}: use SET {name}"
                    )));
                }
                settings.values.insert(name, value.to_string());
            }
            Ok(ColumnarValue::Array(Arc::clone(&arrays[1])))
        }),
    )
}

/// Settings that only a server start can change.
pub(crate) const READ_ONLY_SETTINGS: [&str; 8] = [
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "lc_collate",
    "lc_ctype",
    "max_identifier_length",
    "is_superuser",
];

/// `statement_timeout` values: `0` (off), plain milliseconds, or a number
/// with a unit (`ms`, `s`, `min`, `h`). `None` when it does not parse.
pub(crate) fn parse_timeout(value: &str) -> Option<Option<Duration>> {
    let v = value.trim().to_ascii_lowercase();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => num,
        "s" => num * 1000.0,
        "min" => num * 60_000.0,
        "h" => num * 3_600_000.0,
        "d" => num * 86_400_000.0,
        _ => return None,
    };
    if ms < 0.0 {
        return None;
    }
    Some((ms > 0.0).then(|| Duration::from_micros((ms * 1000.0) as u64)))
}

/// `memory_limit`'s value in bytes: a size (`64MiB`, `1GiB`, bytes), or 0
/// / `unlimited` for only the process's pool.
pub(crate) fn parse_memory_limit(value: &str) -> Option<usize> {
    let v = value.trim();
    if v == "0" || v.eq_ignore_ascii_case("unlimited") || v.eq_ignore_ascii_case("default") {
        return Some(0);
    }
    match v.parse::<loch_executor::memory::Size>() {
        Ok(loch_executor::memory::Size::Bytes(b)) => usize::try_from(b).ok(),
        _ => None,
    }
}

/// Whether `name` is one of DataFusion's or datafusion-distributed's
/// settings: a superuser may give a role its own (parallelism, memory
/// reservations), which its sessions start with.
pub(crate) fn is_engine_setting(name: &str) -> bool {
    name.starts_with("datafusion.") || name.starts_with("distributed.")
}

/// Whether `SET name` changes how much memory, disk or parallelism
/// queries take: only superusers may (the server's limits would mean
/// little if any user could lift them).
pub(crate) fn restricted(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.starts_with("datafusion.runtime.") || name.starts_with("distributed.") {
        // Exchange compression changes no bound.
        return name != "distributed.compression";
    }
    const WORDS: &[&str] = &[
        "target_partitions",
        "batch_size",
        "spill",
        "memory",
        "reservation",
        "concurrency",
        "buffer",
        "threshold",
        "max_",
        "parallel",
    ];
    name.starts_with("datafusion.")
        && (name.starts_with("datafusion.execution.") || name.starts_with("datafusion.optimizer."))
        && WORDS.iter().any(|w| name.contains(w))
}

/// libpq `options`: `-c name=value` pairs (also `--name=value`).
pub(crate) fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let pair = if word == "-c" {
            words.next()
        } else if let Some(rest) = word.strip_prefix("-c") {
            Some(rest)
        } else {
            word.strip_prefix("--")
        };
        if let Some((k, v)) = pair.and_then(|p| p.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

/// Whether a boolean setting's value means on (PostgreSQL's spellings).
pub(crate) fn is_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "on" | "true" | "yes" | "1" | "t" | "y"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_like_postgres() {
        assert_eq!(parse_timeout("0"), Some(None));
        assert_eq!(
            parse_timeout("300ms"),
            Some(Some(Duration::from_millis(300)))
        );
        assert_eq!(
            parse_timeout("1500"),
            Some(Some(Duration::from_millis(1500)))
        );
        assert_eq!(parse_timeout("2s"), Some(Some(Duration::from_secs(2))));
        assert_eq!(parse_timeout("1min"), Some(Some(Duration::from_secs(60))));
        assert_eq!(parse_timeout("soon"), None);
    }

    #[test]
    fn libpq_options_are_split() {
        assert_eq!(
            parse_options("-c search_path=tpch -cstatement_timeout=5s --application-name=x"),
            vec![
                ("search_path".to_string(), "tpch".to_string()),
                ("statement_timeout".to_string(), "5s".to_string()),
                ("application_name".to_string(), "x".to_string()),
            ]
        );
    }
}
