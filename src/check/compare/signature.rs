//! A statistical signature of a set of feature rows: per-channel moments, the spread of
//! per-image means and stds, and the value range; two sets compare without matching rows.

/// Summary statistics of a set of feature rows, comparable without matching rows.
#[derive(Clone, Debug, Default)]
pub struct Signature {
    n: u64,
    /// Values seen per channel.
    values: u64,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    img_mean_sum: f64,
    img_mean_sq: f64,
    img_std_sum: f64,
    min: f64,
    max: f64,
}

impl Signature {
    pub fn new(channels: usize) -> Self {
        Signature {
            sum: vec![0.0; channels],
            sum_sq: vec![0.0; channels],
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Default::default()
        }
    }

    pub fn add(&mut self, row: &[f32]) {
        let c = self.sum.len();
        let mut s = 0.0;
        let mut sq = 0.0;
        self.values += (row.len() / c) as u64;
        for px in row.chunks_exact(c) {
            for (i, &v) in px.iter().enumerate() {
                let v = f64::from(v);
                self.sum[i] += v;
                self.sum_sq[i] += v * v;
                s += v;
                sq += v * v;
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
        }
        let n = row.len().max(1) as f64;
        let m = s / n;
        self.img_mean_sum += m;
        self.img_mean_sq += m * m;
        self.img_std_sum += (sq / n - m * m).max(0.0).sqrt();
        self.n += 1;
    }

    pub fn channel_mean(&self) -> Vec<f64> {
        let px = (self.values as f64).max(1.0);
        self.sum.iter().map(|s| s / px).collect()
    }

    pub fn channel_std(&self) -> Vec<f64> {
        let px = (self.values as f64).max(1.0);
        self.sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, q)| (q / px - (s / px).powi(2)).max(0.0).sqrt())
            .collect()
    }

    /// Spread of per-image means, and the mean of per-image stds.
    pub fn image_moments(&self) -> (f64, f64) {
        let n = self.n.max(1) as f64;
        let m = self.img_mean_sum / n;
        ((self.img_mean_sq / n - m * m).max(0.0).sqrt(), self.img_std_sum / n)
    }

    pub fn overall_std(&self) -> f64 {
        let std = self.channel_std();
        let mean = self.channel_mean();
        let m = mean.iter().sum::<f64>() / mean.len().max(1) as f64;
        let var = std
            .iter()
            .zip(&mean)
            .map(|(s, mu)| s * s + (mu - m).powi(2))
            .sum::<f64>()
            / std.len().max(1) as f64;
        var.sqrt()
    }

    /// How far another signature is from this one, relative to this one's spread.
    pub fn distance(&self, other: &Signature) -> f64 {
        let scale = self.overall_std().max(1e-9);
        let mut d = 0.0;
        for (a, b) in self.channel_mean().iter().zip(other.channel_mean()) {
            d += (a - b).abs() / scale;
        }
        for (a, b) in self.channel_std().iter().zip(other.channel_std()) {
            d += (a - b).abs() / scale;
        }
        let (sa, ta) = self.image_moments();
        let (sb, tb) = other.image_moments();
        d + (sa - sb).abs() / scale + (ta - tb).abs() / scale
    }

    pub fn describe(&self) -> String {
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
        let (spread, img_std) = self.image_moments();
        format!(
            "channel mean [{}], std [{}], range [{:.3}, {:.3}], per-image mean spread {:.3}, per-image std {:.3}",
            fmt(&self.channel_mean()),
            fmt(&self.channel_std()),
            self.min,
            self.max,
            spread,
            img_std
        )
    }
}
