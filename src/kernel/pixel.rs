//! Pure per-pixel kernels on one image in HWC order (channels innermost).
//!
//! No I/O and no Arrow here: each function takes a slice of pixel values and changes it in
//! place, so each can be tested against hand-computed numbers and benchmarked alone.

/// Subtracts a per-channel constant: `x[h, w, c] -= mean[c]`.
pub fn subtract_mean(row: &mut [f32], mean: &[f32]) {
    for px in row.chunks_exact_mut(mean.len()) {
        for (v, m) in px.iter_mut().zip(mean) {
            *v -= m;
        }
    }
}

/// Divides each channel by its own constant: `x[h, w, c] /= std[c]`.
pub fn divide_channels(row: &mut [f32], std: &[f32]) {
    for px in row.chunks_exact_mut(std.len()) {
        for (v, s) in px.iter_mut().zip(std) {
            *v /= s;
        }
    }
}

/// Multiplies every value by `factor`.
pub fn scale(row: &mut [f32], factor: f32) {
    for v in row {
        *v *= factor;
    }
}

/// Standardizes one image by its own statistics: `(x - mean) / max(std, 1/sqrt(N))` over all
/// N values of the image (all channels together), the rule of TensorFlow's
/// `per_image_standardization`. The floor on the std means a constant image becomes all
/// zeros instead of NaN or infinity. Returns the `(mean, std)` used.
pub fn standardize(row: &mut [f32]) -> (f64, f64) {
    if row.is_empty() {
        return (0.0, 1.0);
    }
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt().max(1.0 / n.sqrt());
    let (m, inv) = (mean as f32, (1.0 / std) as f32);
    for v in row.iter_mut() {
        *v = (*v - m) * inv;
    }
    (mean, std)
}

/// Running per-channel sums, to fit means and standard deviations over many images.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    pub count: u64,
    pub sum: Vec<f64>,
    pub sum_sq: Vec<f64>,
}

impl ChannelStats {
    pub fn new(channels: usize) -> Self {
        ChannelStats {
            count: 0,
            sum: vec![0.0; channels],
            sum_sq: vec![0.0; channels],
        }
    }

    /// Adds one image's pixels (HWC).
    pub fn add(&mut self, row: &[f32]) {
        let c = self.sum.len();
        let mut sum = vec![0.0f64; c];
        let mut sum_sq = vec![0.0f64; c];
        for px in row.chunks_exact(c) {
            for (i, &v) in px.iter().enumerate() {
                let v = f64::from(v);
                sum[i] += v;
                sum_sq[i] += v * v;
            }
        }
        self.merge(&ChannelStats {
            count: (row.len() / c) as u64,
            sum,
            sum_sq,
        });
    }

    pub fn merge(&mut self, other: &ChannelStats) {
        self.count += other.count;
        for i in 0..self.sum.len() {
            self.sum[i] += other.sum[i];
            self.sum_sq[i] += other.sum_sq[i];
        }
    }

    pub fn mean(&self) -> Vec<f64> {
        self.sum.iter().map(|s| s / self.count.max(1) as f64).collect()
    }

    /// Population standard deviation per channel.
    pub fn std(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, sq)| (sq / n - (s / n).powi(2)).max(0.0).sqrt())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_per_channel() {
        let mut row = vec![10.0, 20.0, 30.0, 11.0, 21.0, 31.0];
        subtract_mean(&mut row, &[10.0, 20.0, 30.0]);
        assert_eq!(row, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn standardizes_to_zero_mean_unit_std() {
        let mut row: Vec<f32> = (0..48).map(|i| (i * 7 % 13) as f32).collect();
        standardize(&mut row);
        let n = row.len() as f32;
        let mean: f32 = row.iter().sum::<f32>() / n;
        let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
        assert!(mean.abs() < 1e-5);
        assert!((var.sqrt() - 1.0).abs() < 1e-4);
    }

    #[test]
    fn constant_image_becomes_zeros_not_nan() {
        let mut row = vec![128.0f32; 3 * 16];
        standardize(&mut row);
        assert!(row.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn channel_stats_match_hand_computation() {
        let mut s = ChannelStats::new(3);
        s.add(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0]);
        assert_eq!(s.mean(), vec![2.0, 2.0, 2.0]);
        assert_eq!(s.std(), vec![1.0, 0.0, 1.0]);
    }
}
