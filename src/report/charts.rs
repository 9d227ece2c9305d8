//! The report's figures, each drawn from data a run or a diagnosis recorded: training curves
//! (the `train` history), the LR range test and the learning curve (`diagnose`), probability
//! histograms per class and the confusion matrix (`evaluate`), and per-channel pixel
//! histograms per partition after preprocessing (`validate`).

use serde_json::Value;

use crate::check::analysis::Histograms;
use crate::report::plots::{self, Chart, PlotError, Series};
use crate::stage::train::Epoch;

/// One figure: a file stem, a caption, and the chart.
pub struct Figure {
    pub name: String,
    pub caption: String,
    pub chart: Chart,
}

fn figure(name: &str, caption: impl Into<String>, chart: Result<Chart, PlotError>) -> Option<Figure> {
    match chart {
        Ok(chart) => Some(Figure {
            name: {
                tracing::debug!(figure = name, series = chart.series, "figure drawn");
                name.to_string()
            },
            caption: caption.into(),
            chart,
        }),
        Err(e) => {
            tracing::debug!(figure = name, error = %e, "figure left out");
            None
        }
    }
}

fn series(name: &str, points: impl Iterator<Item = (f64, f64)>) -> Series {
    Series {
        name: name.to_string(),
        points: points.collect(),
    }
}

/// Loss and accuracy per epoch, train and val.
pub fn training_curves(history: &[Epoch]) -> Vec<Figure> {
    type Pick = fn(&Epoch) -> f64;
    let chart = |what: &str, lines: &[(&str, Pick)]| {
        let series: Vec<Series> = lines
            .iter()
            .map(|&(name, f)| series(name, history.iter().map(|e| (e.epoch as f64, f(e)))))
            .collect();
        plots::lines(
            &format!("Training: {what} per epoch"),
            "epoch",
            what,
            &series,
            false,
            None,
        )
    };
    let loss = chart(
        "loss",
        &[("train loss", |e| e.train_loss), ("val loss", |e| e.val_loss)],
    );
    let acc = chart(
        "accuracy",
        &[
            ("train accuracy", |e| e.train_accuracy),
            ("val accuracy", |e| e.val_accuracy),
            ("val: share of majority prediction", |e| e.val_majority_fraction),
        ],
    );
    [
        figure(
            "training_loss",
            "Loss per epoch (train: mean over the epoch's batches).",
            loss,
        ),
        figure(
            "training_accuracy",
            "Accuracy per epoch, and the share of val predicted as the most predicted class: a collapsed model \
             sits at 1.0.",
            acc,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The LR range test's raw and smoothed loss against the learning rate, suggestion marked.
pub fn lr_range(sweep: &Value) -> Option<Figure> {
    let lrs: Vec<f64> = serde_json::from_value(sweep["lrs"].clone()).ok()?;
    let get = |k: &str| -> Vec<f64> {
        sweep[k]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
            .unwrap_or_default()
    };
    let (raw, smooth) = (get("losses"), get("smoothed"));
    // Clipped at 4x the smoothed minimum (the stop rule), so a blow-up does not flatten the
    // valley into the axis.
    let cap = 4.0
        * smooth
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f64::INFINITY, f64::min);
    let clip = |v: Vec<f64>| -> Vec<f64> {
        if cap.is_finite() {
            v.into_iter().map(|x| if x.is_nan() { x } else { x.min(cap) }).collect()
        } else {
            v
        }
    };
    let (raw, smooth) = (clip(raw), clip(smooth));
    let suggested = sweep["suggested"].as_f64();
    let label = suggested.map(|s| format!("suggested {s:.0e}"));
    let chart = plots::lines(
        "Learning-rate range test",
        "learning rate",
        "loss",
        &[
            series("loss", lrs.iter().copied().zip(raw)),
            series("smoothed loss", lrs.iter().copied().zip(smooth)),
        ],
        true,
        suggested.zip(label.as_deref()),
    );
    figure(
        "lr_range",
        "Loss per step while the learning rate grows from 1e-6 (clipped at 4x the smoothed minimum, where \
         the test stops); the suggestion is a tenth of the smoothed minimum.",
        chart,
    )
}

/// Train and held-out error against the share of `train` used.
pub fn learning_curve(data: &Value) -> Option<Figure> {
    let points = data["points"].as_array()?;
    let get = |k: &str| {
        points
            .iter()
            .map(|p| {
                (
                    100.0 * p["fraction"].as_f64().unwrap_or(0.0),
                    p[k].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect::<Vec<_>>()
    };
    let chart = plots::lines(
        "Learning curve",
        "% of train used",
        "error",
        &[
            series("train error", get("train_error").into_iter()),
            series("held-out error", get("val_error").into_iter()),
        ],
        false,
        None,
    );
    figure(
        "learning_curve",
        "Error after the same number of steps on growing subsets of train.",
        chart,
    )
}

/// Histograms of the predicted probability of the last class on `part`, one series per true
/// class; and the confusion matrix.
pub fn evaluation(report: &Value, part: &str) -> Vec<Figure> {
    let classes: Vec<String> = serde_json::from_value(report["classes"].clone()).unwrap_or_default();
    let k = classes.len();
    let mut out = Vec::new();
    if k >= 2 {
        let mut hist = vec![vec![0u64; 10]; k];
        for p in report["predictions"].as_array().into_iter().flatten() {
            if p["partition"] != part {
                continue;
            }
            let (Some(label), Some(prob)) = (p["label"].as_u64(), p["probabilities"][k - 1].as_f64()) else {
                continue;
            };
            if let Some(h) = hist.get_mut(label as usize)
                && prob.is_finite()
            {
                h[((prob * 10.0) as usize).min(9)] += 1;
            }
        }
        let series: Vec<(String, Vec<f64>)> = classes
            .iter()
            .zip(hist)
            .map(|(c, h)| (format!("true {c}"), h.iter().map(|&n| n as f64).collect()))
            .collect();
        out.extend(figure(
            "probabilities",
            format!(
                "Predicted probability of `{}` on {part}, per true class: two separated humps mean a confident \
                 model, one hump near 0.5 a collapsed one.",
                classes[k - 1]
            ),
            plots::histogram(
                &format!("Predicted P({}) on {part}", classes[k - 1]),
                "probability",
                "images",
                0.0,
                1.0,
                &series,
            ),
        ));
    }
    if let Ok(matrix) = serde_json::from_value::<Vec<Vec<u64>>>(report["metrics"][part]["confusion"].clone()) {
        out.extend(figure(
            "confusion",
            format!("Confusion matrix on {part}: rows are the true class, columns the predicted one."),
            plots::confusion(&format!("Confusion matrix ({part})"), &classes, &matrix),
        ));
    }
    out
}

/// Each bin's share of all the values, in percent (all zeros stay zeros).
fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    let total = total.max(1) as f64;
    counts.iter().map(|&n| 100.0 * n as f64 / total).collect()
}

/// One figure per channel: the distribution of each partition's values after preprocessing,
/// as shares of the partition (so partitions of any size overlay, and drift shows).
pub fn pixel_histograms(h: &Histograms) -> Vec<Figure> {
    let channels = h.lo.len();
    (0..channels)
        .filter_map(|c| {
            let name = ["R", "G", "B"].get(c).map_or_else(|| c.to_string(), |s| s.to_string());
            let series: Vec<(String, Vec<f64>)> = h
                .counts
                .iter()
                .filter_map(|(p, per)| Some((p.clone(), shares(per.get(c)?))))
                .collect();
            figure(
                &format!("pixels_{name}"),
                format!(
                    "Channel {name} after preprocessing: each partition's share of values per bin, so partitions \
                     of any size compare (the distributions `validate` compares for drift)."
                ),
                plots::histogram(
                    &format!("Channel {name} values per partition"),
                    "value",
                    "% of the partition's values",
                    h.lo[c],
                    h.hi[c],
                    &series,
                ),
            )
        })
        .collect()
}
