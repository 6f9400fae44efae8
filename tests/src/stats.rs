//! Percentiles over measured samples, shared by the benchmark and the soak.

/// Nearest-rank percentile (`p` in 0..=100): the smallest value with at least p% of the values at
/// or below it. Sorts `values` in place (a soak holds a million of them; no copy is made), so the
/// caller may read the maximum from the end afterwards. `None` when there are no values.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut samples, 50.0), Some(50.0));
        assert_eq!(percentile(&mut samples, 99.0), Some(99.0));
        assert_eq!(percentile(&mut samples, 100.0), Some(100.0));
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}
