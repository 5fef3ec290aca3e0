//! Creating a stream's table from its reader schema and widening it when a newer schema adds fields.

use sluice_schemas::clickhouse::{Column, RowPlan, TableSpec, add_column_sql};

use super::ClickHouseSink;
use crate::error::Error;

#[derive(clickhouse::Row, serde::Deserialize, Debug)]
struct ColumnRow {
    name: String,
    ty: String,
}

/// `(database, table)` of a qualified name.
fn split(table: &str) -> Result<(&str, &str), Error> {
    table
        .split_once('.')
        .ok_or_else(|| Error::Config(format!("table {table} is not qualified with a database")))
}

/// What [`ClickHouseSink::add_missing_columns`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Widened {
    /// Columns added.
    pub added: Vec<String>,
}

impl ClickHouseSink {
    /// Creates the database and table when missing, then adds any column of `plan` the table lacks.
    pub async fn ensure_table(
        &self,
        plan: &RowPlan,
        spec: TableSpec<'_>,
    ) -> Result<Widened, Error> {
        let (db, _) = split(spec.table)?;
        self.client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
            .execute()
            .await?;
        let create = plan.create_table_sql(&spec)?;
        self.client.query(&create).execute().await?;
        self.add_missing_columns(spec.table, plan).await
    }

    /// The table's columns and types, in order; empty when the table does not exist.
    pub async fn columns(&self, table: &str) -> Result<Vec<(String, String)>, Error> {
        let (db, name) = split(table)?;
        let rows: Vec<ColumnRow> = self
            .client
            .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
            .bind(db)
            .bind(name)
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(|r| (r.name, r.ty)).collect())
    }

    /// Adds the columns of `plan` that `table` lacks; refuses (changing nothing) if a shared column's type differs.
    ///
    /// ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, so two replicas may race here: a column that appeared
    /// meanwhile is re-checked rather than reported.
    pub async fn add_missing_columns(&self, table: &str, plan: &RowPlan) -> Result<Widened, Error> {
        let existing = self.columns(table).await?;
        let missing = missing_columns(&existing, &plan.columns()).map_err(Error::Mapping)?;
        let mut widened = Widened::default();
        for column in missing {
            match self
                .client
                .query(&add_column_sql(table, &column))
                .execute()
                .await
            {
                Ok(()) => widened.added.push(column.name.clone()),
                Err(e) => {
                    let now = self.columns(table).await?;
                    if !now.iter().any(|(n, _)| *n == column.name) {
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(widened)
    }
}

/// The columns of `wanted` absent from `existing`; an error naming the first column whose type differs.
pub fn missing_columns(
    existing: &[(String, String)],
    wanted: &[Column],
) -> Result<Vec<Column>, String> {
    let mut missing = Vec::new();
    for column in wanted {
        match existing.iter().find(|(n, _)| *n == column.name) {
            Some((_, ty)) if normalize(ty) != normalize(&column.ty) => {
                return Err(format!(
                    "column `{}` is {ty} in ClickHouse but the schema maps it to {}",
                    column.name, column.ty
                ));
            }
            Some(_) => {}
            None => missing.push(column.clone()),
        }
    }
    Ok(missing)
}

fn normalize(ty: &str) -> String {
    ty.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;

    fn plan(text: &str) -> RowPlan {
        RowPlan::from_schema(&Schema::parse_str(text).expect("parses")).expect("maps")
    }

    #[test]
    fn only_new_fields_are_added_and_conflicts_refused() {
        let v2 = plan(
            r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},
            {"name":"tags","type":{"type":"map","values":"long"}},
            {"name":"note","type":["null","string"],"default":null}]}"#,
        );
        let existing = vec![("id".to_string(), "String".to_string())];
        let names: Vec<String> = missing_columns(&existing, &v2.columns())
            .expect("ok")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["tags.keys", "tags.values", "note"]);
        let conflicting = vec![("id".to_string(), "UInt64".to_string())];
        assert!(missing_columns(&conflicting, &v2.columns()).is_err());
        let spaced = vec![("tags.values".to_string(), "Array( Int64 )".to_string())];
        assert!(missing_columns(&spaced, &v2.columns()).is_ok());
    }
}
