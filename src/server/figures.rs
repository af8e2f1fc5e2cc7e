//! What a table holds, as the server answers it: the figures of a measurement, and adding up
//! the answers of its time slices exactly.

use crate::server::http::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a table holds, as the server answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// `count(*)`.
    pub rows: u64,
    /// `min(time)` and `max(time)` in nanoseconds since the epoch; null for an empty table.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    /// Per field (tags left out), by name.
    pub fields: BTreeMap<String, FieldFigures>,
}

/// One field's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldFigures {
    /// The server's Arrow type name (`Int64`, `UInt64`, `Float64`, `Utf8`, `Boolean`).
    pub data_type: String,
    /// `count(field)`: the values that are not null.
    pub count: u64,
    /// The sum of the values, for numeric fields.
    pub sum: Option<Sum>,
}

/// A numeric field's sum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sum {
    /// Int64: sums wrap modulo 2^64 on the server; so does adding the slices here, so the sum
    /// is exact and the same in any order.
    Int { value: i64 },
    /// UInt64, wrapping likewise.
    UInt { value: u64 },
    /// Float64: `value` is null when the sum is not finite (the server writes inf and NaN as
    /// null). `abs` is the sum of the absolute values, which bounds the rounding error.
    Float {
        value: Option<f64>,
        abs: Option<f64>,
    },
}

pub fn is_numeric(t: &str) -> bool {
    matches!(t, "Int64" | "UInt64" | "Float64")
}

/// Nanoseconds for people: RFC 3339, no trailing zeros; `-` for none.
pub fn fmt_ns(ns: Option<i64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) => chrono::DateTime::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    }
}

pub fn int_of(v: Option<&Value>) -> Result<Option<i128>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .map(Some)
            .ok_or_else(|| format!("{n} is not an integer")),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{s:?} is not an integer")),
        Some(other) => Err(format!("{other} is not an integer")),
    }
}

pub fn float_of(v: Option<&Value>) -> Result<Option<f64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{s:?} is not a number")),
        Some(other) => Err(format!("{other} is not a number")),
    }
}

/// A float sum's running total with Neumaier's compensation: adding the slices' sums in order
/// loses no more than one rounding.
#[derive(Default)]
struct FloatTotal {
    sum: f64,
    carry: f64,
}

impl FloatTotal {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.carry += (self.sum - t) + x;
        } else {
            self.carry += (x - t) + self.sum;
        }
        self.sum = t;
    }
    fn value(&self) -> f64 {
        self.sum + self.carry
    }
}

/// The figures of the slices' answers, added up.
pub fn add_up(fields: &[(String, String)], parts: &[Option<Row>]) -> Result<Figures, String> {
    const MOD: i128 = 1 << 64;
    let mut rows = 0u64;
    let (mut t0, mut t1): (Option<i64>, Option<i64>) = (None, None);
    let mut counts = vec![0u64; fields.len()];
    let mut ints = vec![Some(0i128); fields.len()];
    let mut floats: Vec<(Option<FloatTotal>, Option<FloatTotal>)> = fields
        .iter()
        .map(|_| (Some(FloatTotal::default()), Some(FloatTotal::default())))
        .collect();
    for r in parts.iter().flatten() {
        let n = int_of(r.get("n"))?.unwrap_or(0) as u64;
        rows += n;
        if n == 0 {
            continue;
        }
        if let Some(v) = int_of(r.get("t0"))? {
            t0 = Some(t0.map_or(v as i64, |t| t.min(v as i64)));
        }
        if let Some(v) = int_of(r.get("t1"))? {
            t1 = Some(t1.map_or(v as i64, |t| t.max(v as i64)));
        }
        for (i, (_, ty)) in fields.iter().enumerate() {
            let c = int_of(r.get(&format!("c{i}")))?.unwrap_or(0) as u64;
            counts[i] += c;
            if c == 0 {
                continue;
            }
            match ty.as_str() {
                "Int64" | "UInt64" => {
                    let s = int_of(r.get(&format!("s{i}")))?;
                    ints[i] = match (ints[i], s) {
                        (Some(acc), Some(s)) => Some((acc + s).rem_euclid(MOD)),
                        _ => None,
                    };
                }
                "Float64" => {
                    let (s, a) = &mut floats[i];
                    for (total, key) in [(s, "s"), (a, "a")] {
                        match float_of(r.get(&format!("{key}{i}")))? {
                            Some(x) if total.is_some() => total.as_mut().unwrap().add(x),
                            _ => *total = None,
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let fields = fields
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            let sum = match ty.as_str() {
                // The 64-bit pattern, read as the column's type.
                "Int64" => ints[i].map(|v| Sum::Int {
                    value: v as u64 as i64,
                }),
                "UInt64" => ints[i].map(|v| Sum::UInt { value: v as u64 }),
                "Float64" => Some(Sum::Float {
                    value: floats[i].0.as_ref().map(FloatTotal::value),
                    abs: floats[i].1.as_ref().map(FloatTotal::value),
                }),
                _ => None,
            };
            (
                name.clone(),
                FieldFigures {
                    data_type: ty.clone(),
                    count: counts[i],
                    sum,
                },
            )
        })
        .collect();
    Ok(Figures {
        rows,
        min_time: t0,
        max_time: t1,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_add_up_exactly_and_integers_wrap_like_the_server() {
        let fields = vec![
            ("f".to_string(), "Float64".to_string()),
            ("i".to_string(), "Int64".to_string()),
            ("s".to_string(), "Utf8".to_string()),
        ];
        let row = |v: Value| match v {
            Value::Object(m) => Some(m),
            _ => unreachable!(),
        };
        let parts = vec![
            row(
                serde_json::json!({"n": 2, "t0": 10, "t1": 20, "c0": 2, "s0": 0.1, "a0": 0.1,
                                    "c1": 2, "s1": i64::MAX, "c2": 1}),
            ),
            row(serde_json::json!({"n": 0})),
            None,
            row(
                serde_json::json!({"n": 1, "t0": 5, "t1": 7, "c0": 1, "s0": 0.2, "a0": 0.2,
                                    "c1": 1, "s1": 2, "c2": 1}),
            ),
        ];
        let f = add_up(&fields, &parts).unwrap();
        assert_eq!((f.rows, f.min_time, f.max_time), (3, Some(5), Some(20)));
        assert_eq!(
            f.fields["i"].sum,
            Some(Sum::Int {
                value: i64::MIN + 1
            })
        );
        assert_eq!(
            f.fields["s"],
            FieldFigures {
                data_type: "Utf8".into(),
                count: 2,
                sum: None
            }
        );
        let Some(Sum::Float { value: Some(v), .. }) = f.fields["f"].sum else {
            panic!()
        };
        assert!((v - 0.3).abs() < 1e-15);
        // A slice whose float sum is not finite (null) makes the total not finite.
        let parts = vec![row(serde_json::json!({"n": 1, "c0": 1, "a0": 1.0}))];
        let f = add_up(&fields, &parts).unwrap();
        assert_eq!(
            f.fields["f"].sum,
            Some(Sum::Float {
                value: None,
                abs: Some(1.0)
            })
        );
    }
}
