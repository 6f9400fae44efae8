//! Medians and spreads over measured samples (percentiles from `pullguard_tests::stats`).

use std::time::Duration;

pub use pullguard_tests::stats::percentile;

/// Median, minimum and maximum of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    pub fn of(samples: &[Duration]) -> Spread {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        Spread {
            median_ms: percentile(&mut ms, 50.0).unwrap_or(f64::NAN),
            min_ms: ms.iter().copied().fold(f64::INFINITY, f64::min),
            max_ms: ms.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    pub fn describe(&self) -> String {
        format!("{} (range {}–{})", ms(self.median_ms), ms(self.min_ms), ms(self.max_ms))
    }
}

/// Milliseconds with a precision that suits their size.
pub fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}
