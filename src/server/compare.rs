//! Comparing two measurements of the same server: before and after a change that must not
//! change any answer.

use crate::server::figures::{fmt_ns, Figures, Sum};
use crate::server::measure::{Measurement, TableMeasure};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How one table compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableComparison {
    /// `db.table`.
    pub table: String,
    /// `equal`, `differs` or `not_compared`.
    pub result: TableResult,
    /// What differs, or why it was not compared; empty when equal.
    pub differences: Vec<String>,
    /// What was compared: the row count, time range and per field its count and sum.
    pub rows: Option<u64>,
    pub fields: usize,
    pub sums: usize,
}

/// A table's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableResult {
    Equal,
    Differs,
    /// Missing, new, or not measured on one side: no proof either way.
    NotCompared,
}

/// Two float sums of the same values agree: DataFusion adds in no fixed order (partitions, row
/// groups, and here slices), so two correct sums can differ in the last bits. Any order of
/// adding n values is within (n-1)·u·S of the exact sum (u = 2^-53, S = the sum of the
/// absolute values), so two correct sums differ by less than 2·n·u·S; this accepts twice that,
/// far below any real change (for a million values, 4.4e-10 of S). A lost or changed row also
/// shows in the count.
pub fn float_sums_agree(before: Option<f64>, after: Option<f64>, abs: f64, n: u64) -> bool {
    match (before, after) {
        (Some(b), Some(a)) => (b - a).abs() <= 4.0 * n as f64 * f64::EPSILON / 2.0 * abs,
        (None, None) => true,
        _ => false,
    }
}

fn show_sum(s: &Option<Sum>) -> String {
    match s {
        None => "none".into(),
        Some(Sum::Int { value }) => value.to_string(),
        Some(Sum::UInt { value }) => value.to_string(),
        Some(Sum::Float { value: None, .. }) => "not finite".into(),
        Some(Sum::Float { value: Some(v), .. }) => format!("{v:?}"),
    }
}

fn figure_differences(b: &Figures, a: &Figures) -> Vec<String> {
    let mut d = Vec::new();
    if b.rows != a.rows {
        d.push(format!(
            "rows {} -> {} ({:+})",
            b.rows,
            a.rows,
            a.rows as i128 - b.rows as i128
        ));
    }
    if b.min_time != a.min_time {
        d.push(format!(
            "min time {} -> {}",
            fmt_ns(b.min_time),
            fmt_ns(a.min_time)
        ));
    }
    if b.max_time != a.max_time {
        d.push(format!(
            "max time {} -> {}",
            fmt_ns(b.max_time),
            fmt_ns(a.max_time)
        ));
    }
    let names: std::collections::BTreeSet<&String> =
        b.fields.keys().chain(a.fields.keys()).collect();
    for name in names {
        let (Some(fb), Some(fa)) = (b.fields.get(name), a.fields.get(name)) else {
            let side = if b.fields.contains_key(name) {
                "before"
            } else {
                "after"
            };
            d.push(format!("field {name} only {side}"));
            continue;
        };
        if fb.data_type != fa.data_type {
            d.push(format!(
                "field {name} type {} -> {}",
                fb.data_type, fa.data_type
            ));
            continue;
        }
        if fb.count != fa.count {
            d.push(format!("count({name}) {} -> {}", fb.count, fa.count));
        }
        let same = match (&fb.sum, &fa.sum) {
            (Some(Sum::Float { value: vb, abs: ab }), Some(Sum::Float { value: va, abs: aa })) => {
                let abs = ab.unwrap_or(0.0).max(aa.unwrap_or(0.0));
                float_sums_agree(*vb, *va, abs, fb.count.max(fa.count))
            }
            (x, y) => x == y,
        };
        if !same {
            d.push(format!(
                "sum({name}) {} -> {}",
                show_sum(&fb.sum),
                show_sum(&fa.sum)
            ));
        }
    }
    d
}

fn compare_table(
    name: String,
    b: Option<&TableMeasure>,
    a: Option<&TableMeasure>,
) -> TableComparison {
    let mut c = TableComparison {
        table: name,
        result: TableResult::NotCompared,
        differences: Vec::new(),
        rows: None,
        fields: 0,
        sums: 0,
    };
    let why = match (b, a) {
        (None, _) => "NEW after the change (written during the maintenance?)".to_string(),
        (_, None) => "MISSING after the change".to_string(),
        (Some(b), Some(a)) => match (&b.figures, &a.figures) {
            (None, _) => format!("NOT MEASURED before: {}", b.error.as_deref().unwrap_or("?")),
            (_, None) => format!("NOT MEASURED after: {}", a.error.as_deref().unwrap_or("?")),
            (Some(fb), Some(fa)) => {
                c.rows = Some(fb.rows);
                c.fields = fb.fields.len();
                c.sums = fb.fields.values().filter(|f| f.sum.is_some()).count();
                c.differences = figure_differences(fb, fa);
                c.result = if c.differences.is_empty() {
                    TableResult::Equal
                } else {
                    TableResult::Differs
                };
                return c;
            }
        },
    };
    c.differences.push(why);
    c
}

/// Every table of either measurement, compared, by `db.table`.
pub fn compare(before: &Measurement, after: &Measurement) -> Vec<TableComparison> {
    let key = |t: &TableMeasure| format!("{}.{}", t.db, t.table);
    let b: BTreeMap<String, &TableMeasure> = before.tables.iter().map(|t| (key(t), t)).collect();
    let a: BTreeMap<String, &TableMeasure> = after.tables.iter().map(|t| (key(t), t)).collect();
    let mut names: Vec<&String> = b.keys().chain(a.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| compare_table(n.clone(), b.get(n).copied(), a.get(n).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::figures::FieldFigures;

    fn table(name: &str, rows: u64, sum: f64) -> TableMeasure {
        let mut fields = BTreeMap::new();
        fields.insert(
            "v".to_string(),
            FieldFigures {
                data_type: "Float64".into(),
                count: rows,
                sum: Some(Sum::Float {
                    value: Some(sum),
                    abs: Some(sum.abs()),
                }),
            },
        );
        TableMeasure {
            db: "db".into(),
            table: name.into(),
            ids: None,
            files: Some(1),
            file_limit: None,
            slices: Some(1),
            error: None,
            figures: Some(Figures {
                rows,
                min_time: Some(1),
                max_time: Some(2),
                fields,
            }),
        }
    }

    fn measurement(tables: Vec<TableMeasure>) -> Measurement {
        Measurement {
            format_version: 1,
            url: "u".into(),
            started_at: "t".into(),
            seconds: 0.0,
            requests: 0,
            databases: vec!["db".into()],
            tables,
        }
    }

    #[test]
    fn equal_differing_missing_and_new_tables_are_told_apart() {
        let before = measurement(vec![
            table("a", 10, 1.5),
            table("b", 10, 1.0),
            table("c", 1, 1.0),
        ]);
        let mut lost = table("b", 9, 1.0);
        lost.figures.as_mut().unwrap().max_time = Some(3);
        let after = measurement(vec![table("a", 10, 1.5 + 1e-16), lost, table("d", 1, 1.0)]);
        let c = compare(&before, &after);
        let by: BTreeMap<_, _> = c.iter().map(|t| (t.table.as_str(), t)).collect();
        assert_eq!(by["db.a"].result, TableResult::Equal);
        assert_eq!(by["db.b"].result, TableResult::Differs);
        assert_eq!(by["db.b"].differences[0], "rows 10 -> 9 (-1)");
        assert!(by["db.b"]
            .differences
            .iter()
            .any(|d| d.starts_with("max time")));
        assert!(by["db.b"]
            .differences
            .iter()
            .any(|d| d.starts_with("count(v) 10 -> 9")));
        assert_eq!(by["db.c"].result, TableResult::NotCompared);
        assert!(by["db.c"].differences[0].starts_with("MISSING"));
        assert!(by["db.d"].differences[0].starts_with("NEW"));
    }

    #[test]
    fn float_sums_agree_within_the_reordering_bound_only() {
        assert!(float_sums_agree(Some(1.0), Some(1.0 + 1e-15), 1.0, 100));
        assert!(!float_sums_agree(Some(1.0), Some(1.0 + 1e-9), 1.0, 100));
        assert!(float_sums_agree(None, None, 0.0, 1));
        assert!(!float_sums_agree(Some(1.0), None, 1.0, 1));
    }
}
