//! Medians and ratios, and how they are written: a figure that is missing (every run of it
//! failed) reads "failed", a ratio that cannot be taken reads "-".

/// The median of `values`; `None` when there are none. Of an even count, the mean of the two
/// middle values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// `a / b`, when both are known and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// `x` with `decimals` decimals, or "failed".
pub fn fixed(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "failed".to_string(), |x| format!("{x:.decimals$}"))
}

/// A ratio as "1.23x", or "-".
pub fn times(r: Option<f64>, decimals: usize) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.decimals$}x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratio_needs_both_figures_and_a_divisor() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(3.0), None), None);
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
    }

    #[test]
    fn missing_figures_read_as_such() {
        assert_eq!(times(Some(1.114), 2), "1.11x");
        assert_eq!(times(None, 2), "-");
        assert_eq!(fixed(Some(0.125), 1), "0.1");
        assert_eq!(fixed(Some(5.0), 2), "5.00");
        assert_eq!(fixed(None, 2), "failed");
    }
}
