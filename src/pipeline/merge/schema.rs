//! The columns and series key of a merged output: the union of its inputs' footers.

use crate::error::{Error, Result};
use crate::format::ids::FileId;
use crate::format::parquet::{sql_ident, Column, ColumnType, Footer};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

/// The columns and series key of a group's merged output.
#[derive(Clone, Debug)]
pub struct TableSchema {
    /// In output order: the newest input's order, then columns only older inputs have.
    pub columns: Vec<Column>,
    pub series_key: Vec<String>,
}

impl TableSchema {
    /// The union of the inputs' columns; fails if a column's type differs between inputs.
    pub fn union(footers: &[(FileId, &Footer)]) -> Result<TableSchema> {
        let mut by_newest: Vec<&(FileId, &Footer)> = footers.iter().collect();
        by_newest.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        let mut columns: Vec<Column> = Vec::new();
        let mut seen: HashMap<String, (ColumnType, PathBuf)> = HashMap::new();
        for (_, f) in &by_newest {
            for c in &f.columns {
                match seen.get(&c.name) {
                    Some((ty, first)) if *ty != c.ty => {
                        return Err(Error::at(&f.path, format!(
                            "column `{}` is {:?} here but {:?} in {}; kompactor does not merge files whose column types differ",
                            c.name, c.ty, ty, first.display()
                        )))
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(c.name.clone(), (c.ty, f.path.clone()));
                        columns.push(c.clone());
                    }
                }
            }
        }
        let times: Vec<&Column> = columns
            .iter()
            .filter(|c| c.ty == ColumnType::Time)
            .collect();
        if times.len() != 1 || times[0].name != "time" {
            return Err(Error::new(
                "the inputs do not have exactly one timestamp column named `time`",
            ));
        }
        let tags: BTreeSet<&str> = columns
            .iter()
            .filter(|c| c.ty == ColumnType::Tag)
            .map(|c| c.name.as_str())
            .collect();
        let declared = by_newest.iter().find_map(|(_, f)| f.series_key.clone());
        let mut series_key = Vec::new();
        if let Some(key) = declared {
            for k in key {
                if tags.contains(k.as_str()) && !series_key.contains(&k) {
                    series_key.push(k);
                }
            }
        }
        // Tags the declared key does not name (or all tags, without one) follow by name.
        for t in tags {
            if !series_key.iter().any(|k| k == t) {
                series_key.push(t.to_string());
            }
        }
        Ok(TableSchema {
            columns,
            series_key,
        })
    }

    /// Every column, cast to its type; a column the file lacks is a typed NULL.
    pub(super) fn projection(&self, present: &BTreeSet<&str>) -> String {
        self.columns
            .iter()
            .map(|c| {
                let id = sql_ident(&c.name);
                let value = if present.contains(c.name.as_str()) {
                    id.clone()
                } else {
                    "NULL".to_string()
                };
                format!("CAST({value} AS {}) AS {id}", c.ty.duckdb_type())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The series key columns, then `time`, as SQL identifiers: what identifies a point.
    pub fn key_columns(&self) -> Vec<String> {
        self.series_key
            .iter()
            .map(|k| sql_ident(k))
            .chain([sql_ident("time")])
            .collect()
    }
}
