//! The SQL that creates a stream's table from its plan and widens it when a newer schema adds fields.

use std::fmt::Write as _;

use super::{Column, MappingError, RowPlan, TableSpec};

impl RowPlan {
    /// `CREATE TABLE IF NOT EXISTS` for this plan: ReplacingMergeTree sorted by `spec.order_by`, by month.
    pub fn create_table_sql(&self, spec: &TableSpec<'_>) -> Result<String, MappingError> {
        let columns = self.columns();
        for key in spec.order_by {
            let col = columns.iter().find(|c| c.name == *key).ok_or_else(|| {
                MappingError::BadOrderBy(key.clone(), "is not a field of the schema")
            })?;
            if !col.sortable {
                return Err(MappingError::BadOrderBy(
                    key.clone(),
                    "is nullable, an array or a tuple",
                ));
            }
        }
        if spec.order_by.is_empty() {
            return Err(MappingError::BadOrderBy(String::new(), "list is empty"));
        }
        let partition = match spec.partition_by {
            Some(p) => {
                let col = columns.iter().find(|c| c.name == p).ok_or_else(|| {
                    MappingError::BadPartition(p.to_owned(), "is not a field of the schema")
                })?;
                if !col.temporal {
                    return Err(MappingError::BadPartition(
                        p.to_owned(),
                        "is not a date or timestamp",
                    ));
                }
                format!(" PARTITION BY toYYYYMM({})", quote_ident(p))
            }
            None => String::new(),
        };
        let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (\n", spec.table);
        for (i, c) in columns.iter().enumerate() {
            let sep = if i + 1 == columns.len() { "" } else { "," };
            let _ = writeln!(sql, "    {}{sep}", column_def(c));
        }
        let order: Vec<String> = spec.order_by.iter().map(|k| quote_ident(k)).collect();
        let _ = write!(
            sql,
            ") ENGINE = ReplacingMergeTree(){partition} ORDER BY ({})",
            order.join(", ")
        );
        if let Some(window) = spec.dedup_window {
            let _ = write!(
                sql,
                " SETTINGS non_replicated_deduplication_window = {window}"
            );
        }
        Ok(sql)
    }
}

/// `ALTER TABLE ... ADD COLUMN` for one column (ClickHouse 18.16 has no `IF NOT EXISTS` here: check first).
pub fn add_column_sql(table: &str, column: &Column) -> String {
    format!("ALTER TABLE {table} ADD COLUMN {}", column_def(column))
}

fn column_def(c: &Column) -> String {
    let mut def = format!("{} {}", quote_ident(&c.name), c.ty);
    if let Some(doc) = &c.doc {
        let _ = write!(def, " COMMENT '{}'", escape_literal(doc));
    }
    def
}

/// Backquotes an identifier (names are checked to be plain Avro names, so no escaping is needed).
pub fn quote_ident(name: &str) -> String {
    format!("`{name}`")
}

fn escape_literal(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Whether two ClickHouse type names are the same type (ClickHouse reports them with its own spacing).
pub(super) fn same_type(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    strip(a) == strip(b)
}
