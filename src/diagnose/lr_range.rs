//! The learning-rate range test's arithmetic (Leslie Smith, "Cyclical Learning Rates",
//! 2017; the fastai `lr_find` recipe): pure functions, no training.
//!
//! One step per learning rate, the rates growing geometrically; the loss is smoothed by an
//! exponential moving average (bias-corrected, β = 0.98) and the sweep stops once the smoothed
//! loss exceeds 4× the best seen. The suggestion is a tenth of the rate at the smoothed
//! minimum: the bottom of the valley is already the edge of instability.
//!
//! The sweep also records where the smoothed loss climbs back to where it started: the upper
//! end of the range, beyond which a rate undoes what training did.

use serde::Serialize;

/// Smoothing of the recorded losses.
pub const BETA: f64 = 0.98;
/// The sweep stops when the smoothed loss exceeds this multiple of the best.
pub const STOP_FACTOR: f64 = 4.0;
/// Steps at the start whose slope is not trusted: the average is still settling.
const SETTLE: usize = 10;

/// `n` learning rates from `lo` to `hi`, evenly spaced in log scale.
pub fn schedule(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n.max(2) - 1) as f64).exp())
        .collect()
}

/// Smooths losses one at a time and says when to stop.
#[derive(Debug, Default)]
pub struct Smoother {
    avg: f64,
    steps: i32,
    best: f64,
}

impl Smoother {
    /// Adds a raw loss; returns the smoothed value and whether the sweep should stop.
    pub fn push(&mut self, loss: f64) -> (f64, bool) {
        if !loss.is_finite() {
            return (f64::NAN, true);
        }
        self.steps += 1;
        self.avg = BETA * self.avg + (1.0 - BETA) * loss;
        let smoothed = self.avg / (1.0 - BETA.powi(self.steps));
        if self.steps == 1 || smoothed < self.best {
            self.best = smoothed;
        }
        (smoothed, smoothed > STOP_FACTOR * self.best)
    }
}

/// A finished sweep: what was tried and what it suggests.
#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    /// Learning rates of the steps taken.
    pub lrs: Vec<f64>,
    /// Raw loss at each step (before its update).
    pub losses: Vec<f64>,
    /// Smoothed loss at each step (NaN where the raw loss was not finite).
    pub smoothed: Vec<f64>,
    /// Learning rate at the smoothed minimum.
    pub min_lr: Option<f64>,
    /// Learning rate of the steepest fall of the smoothed loss (per unit of log lr), between
    /// the first steps (while the average settles) and the minimum.
    pub steepest_lr: Option<f64>,
    /// Learning rate at which the sweep stopped because the loss blew up, if it did.
    pub blew_up_at: Option<f64>,
    /// The upper end of the useful range: the first rate past the minimum at which the
    /// smoothed loss is back up to its first value, or the blow-up; `None` when the loss
    /// stayed below its start to the sweep's end.
    pub ceiling_lr: Option<f64>,
    /// The suggested learning rate: `min_lr / 10`.
    pub suggested: Option<f64>,
}

impl Sweep {
    /// Summarizes a sweep of `lrs` whose smoothed losses were `smoothed` (the raw `losses`
    /// kept for plots); `blew_up` when it ended by the stop rule.
    pub fn new(lrs: Vec<f64>, losses: Vec<f64>, smoothed: Vec<f64>, blew_up: bool) -> Sweep {
        let finite: Vec<usize> = (0..smoothed.len()).filter(|&i| smoothed[i].is_finite()).collect();
        let min_i = finite
            .iter()
            .copied()
            .min_by(|&a, &b| smoothed[a].total_cmp(&smoothed[b]));
        let steepest_i = min_i.and_then(|m| {
            (SETTLE.min(m).max(1)..=m)
                .filter(|&i| smoothed[i].is_finite() && smoothed[i - 1].is_finite())
                .min_by(|&a, &b| {
                    let slope = |i: usize| (smoothed[i] - smoothed[i - 1]) / (lrs[i] / lrs[i - 1]).ln();
                    slope(a).total_cmp(&slope(b))
                })
        });
        let min_lr = min_i.map(|i| lrs[i]);
        let blew_up_at = if blew_up {
            lrs.get(smoothed.len().saturating_sub(1)).copied()
        } else {
            None
        };
        // A loss that is not finite is past the ceiling too.
        let back_up = min_i
            .and_then(|m| (m + 1..smoothed.len()).find(|&i| !smoothed[i].is_finite() || smoothed[i] >= smoothed[0]));
        Sweep {
            ceiling_lr: back_up.map(|i| lrs[i]).or(blew_up_at),
            blew_up_at,
            min_lr,
            steepest_lr: steepest_i.map(|i| lrs[i]),
            suggested: min_lr.map(|l| l / 10.0),
            lrs,
            losses,
            smoothed,
        }
    }

    /// How the configured learning rate compares with the sweep: `Some(too_high)` when it is
    /// past the valley's bottom (too high) or more than 1000× below the suggestion (too low).
    pub fn judge(&self, configured: f64) -> Option<bool> {
        let (min_lr, suggested) = (self.min_lr?, self.suggested?);
        if configured > min_lr || self.blew_up_at.is_some_and(|b| configured >= b) {
            Some(true)
        } else if configured < suggested / 1000.0 {
            Some(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_geometric() {
        let s = schedule(7, 1e-6, 1.0);
        assert_eq!(s.len(), 7);
        assert!((s[0] - 1e-6).abs() < 1e-18 && (s[6] - 1.0).abs() < 1e-12);
        assert!((s[1] / s[0] - 10.0).abs() < 1e-9);
    }

    #[test]
    fn smoother_stops_when_the_loss_blows_up() {
        let mut s = Smoother::default();
        assert_eq!(s.push(1.0), (1.0, false));
        let mut stopped = false;
        for _ in 0..200 {
            if s.push(100.0).1 {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert!(Smoother::default().push(f64::NAN).1);
    }

    /// A valley: the loss falls until lr 1e-3, then rises and blows up.
    #[test]
    fn the_valley_gives_the_suggestion() {
        let lrs = schedule(61, 1e-6, 1.0);
        let mut sm = Smoother::default();
        let (mut losses, mut smoothed, mut blew) = (vec![], vec![], false);
        for &lr in &lrs {
            let x = lr.log10() + 3.0; // 0 at 1e-3
            let loss = if x < 0.0 { 0.4 - 0.1 * x } else { 0.4 + 3.0 * x * x };
            let (s, stop) = sm.push(loss);
            losses.push(loss);
            smoothed.push(s);
            if stop {
                blew = true;
                break;
            }
        }
        let sweep = Sweep::new(lrs[..smoothed.len()].to_vec(), losses, smoothed, blew);
        let min_lr = sweep.min_lr.unwrap();
        // Smoothing lags, so the minimum sits a little past the raw one.
        assert!((1e-3..1e-1).contains(&min_lr), "{min_lr}");
        assert!((sweep.suggested.unwrap() - min_lr / 10.0).abs() < 1e-15);
        assert!(sweep.steepest_lr.unwrap() < min_lr);
        assert_eq!(sweep.judge(0.5), Some(true));
        assert_eq!(sweep.judge(min_lr / 10.0), None);
        assert_eq!(sweep.judge(1e-9), Some(false));
        // The loss is back at its start past the bottom, before the blow-up.
        let ceiling = sweep.ceiling_lr.unwrap();
        assert!(ceiling > min_lr && ceiling <= sweep.blew_up_at.unwrap(), "{ceiling}");
        let start = sweep.smoothed[0];
        let i = sweep.lrs.iter().position(|l| *l == ceiling).unwrap();
        assert!(sweep.smoothed[i] >= start && sweep.smoothed[i - 1] < start);
        assert_eq!(sweep.judge(2.0 * min_lr), Some(true));
    }

    /// A loss that falls to the sweep's end has no ceiling.
    #[test]
    fn a_loss_that_never_rises_has_no_ceiling() {
        let lrs = schedule(30, 1e-6, 1.0);
        let smoothed: Vec<f64> = (0..30).map(|i| 1.0 - 0.01 * i as f64).collect();
        let sweep = Sweep::new(lrs, smoothed.clone(), smoothed, false);
        assert_eq!(sweep.ceiling_lr, None);
        assert_eq!(sweep.judge(1.0), None);
    }
}
