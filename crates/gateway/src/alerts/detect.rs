//! Anomaly detectors, fed one sample per evaluation interval per deployment. Both only flag
//! values above normal (slower, more errors), and both need a warm-up before they judge.

use std::collections::VecDeque;

/// Rolling median and median absolute deviation over the last `capacity` samples: robust to
/// the outliers it is looking for, so a burst does not move "normal" much.
#[derive(Debug, Clone)]
pub struct MadDetector {
    samples: VecDeque<f64>,
    capacity: usize,
    warm_up: usize,
}

impl MadDetector {
    pub fn new(capacity: usize, warm_up: usize) -> MadDetector {
        MadDetector {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(3),
            warm_up: warm_up.max(3),
        }
    }

    /// Judges `value` against the samples so far, then keeps it. Returns the normal value
    /// (the median) when `value` is more than `k` scaled deviations above it.
    pub fn observe(&mut self, value: f64, k: f64) -> Option<f64> {
        let verdict = (self.samples.len() >= self.warm_up)
            .then(|| {
                let median = median(self.samples.iter().copied().collect());
                let mad = median_of_deviations(&self.samples, median);
                // 1.4826 × MAD estimates a standard deviation; the floors keep a perfectly
                // steady series from flagging tiny wobbles.
                let spread = (1.4826 * mad).max(0.05 * median.abs()).max(1e-9);
                (value > median + k * spread).then_some(median)
            })
            .flatten();
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(value);
        verdict
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn median_of_deviations(samples: &VecDeque<f64>, center: f64) -> f64 {
    median(samples.iter().map(|v| (v - center).abs()).collect())
}

/// Exponentially weighted mean and variance: a rate that jumps well above its usual level
/// and its usual noise.
#[derive(Debug, Clone)]
pub struct EwmaDetector {
    alpha: f64,
    mean: f64,
    variance: f64,
    seen: usize,
    warm_up: usize,
}

/// A rate must also rise by this much, absolutely, to count: 0 → 2 % is not an outage.
const MIN_RISE: f64 = 0.1;

impl EwmaDetector {
    pub fn new(alpha: f64, warm_up: usize) -> EwmaDetector {
        EwmaDetector {
            alpha: alpha.clamp(0.001, 1.0),
            mean: 0.0,
            variance: 0.0,
            seen: 0,
            warm_up: warm_up.max(2),
        }
    }

    /// Judges `value`, then folds it into the averages. Returns the usual level when `value`
    /// is more than `k` standard deviations (and `MIN_RISE`) above it.
    pub fn observe(&mut self, value: f64, k: f64) -> Option<f64> {
        let verdict = (self.seen >= self.warm_up)
            .then(|| {
                let threshold = self.mean + (k * self.variance.sqrt()).max(MIN_RISE);
                (value > threshold).then_some(self.mean)
            })
            .flatten();
        if self.seen == 0 {
            self.mean = value;
        } else {
            let delta = value - self.mean;
            self.mean += self.alpha * delta;
            self.variance = (1.0 - self.alpha) * (self.variance + self.alpha * delta * delta);
        }
        self.seen += 1;
        verdict
    }
}
