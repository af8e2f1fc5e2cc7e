//! Checking `--where` before any file is read: one boolean expression over the table's
//! columns, or a usage error that lists them.

use crate::error::{Error, Result};
use crate::format::parquet::sql_ident;
use crate::pipeline::merge::TableSchema;
use duckdb::Connection;

/// Validates `predicate` against the table's columns: DuckDB must accept it as a boolean
/// expression over them. The error lists the columns.
pub(super) fn check_predicate(
    conn: &Connection,
    schema: &TableSchema,
    predicate: &str,
) -> Result<()> {
    if predicate.trim().is_empty() {
        return Err(Error::usage("--where is empty"));
    }
    if has_statement_break(predicate) {
        return Err(Error::usage(
            "--where must be one expression (no `;` outside quotes)",
        ));
    }
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            format!(
                "CAST(NULL AS {}) AS {}",
                c.ty.duckdb_type(),
                sql_ident(&c.name)
            )
        })
        .collect();
    let listed = || {
        let cols: Vec<String> = schema
            .columns
            .iter()
            .map(|c| format!("{} ({})", c.name, c.ty.describe()))
            .collect();
        format!("the table's columns: {}", cols.join(", "))
    };
    let sql = format!(
        "SELECT column_type FROM (DESCRIBE SELECT ({predicate}) AS c FROM (SELECT {}))",
        cols.join(", ")
    );
    let ty: String = conn.query_row(&sql, [], |r| r.get(0)).map_err(|e| {
        Error::usage(format!(
            "--where `{predicate}` is not a condition on this table: {e}"
        ))
        .hint(listed())
    })?;
    if ty != "BOOLEAN" {
        return Err(Error::usage(format!(
            "--where `{predicate}` is not a condition on this table: it is of type {ty}, not BOOLEAN"
        ))
        .hint(listed()));
    }
    Ok(())
}

/// Whether `sql` has a `;` outside its quoted strings and identifiers: a second statement.
/// A doubled quote inside a quoted text toggles twice, so it needs no case of its own.
fn has_statement_break(sql: &str) -> bool {
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::has_statement_break;

    #[test]
    fn a_semicolon_breaks_a_statement_only_outside_quotes() {
        assert!(has_statement_break("host = 'a'; DROP TABLE x"));
        assert!(has_statement_break("x = 1;"));
        assert!(!has_statement_break("host = 'a;b'"));
        assert!(!has_statement_break("\"odd;col\" = 1"));
        assert!(!has_statement_break("host = 'it''s;here'"));
        assert!(has_statement_break("host = 'it''s' ; x"));
    }
}
