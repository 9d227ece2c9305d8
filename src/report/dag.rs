//! The pipeline's DAG drawn as inline SVG for the report: one box per stage, coloured by its
//! status (fresh, stale, never run), an arrow from each input, in rows by depth (a stage sits
//! one row below its deepest input), so a chain runs down the page and fits a phone.

use std::fmt::Write as _;

use crate::pipeline::dirty::DirtyReason;
use crate::pipeline::executor::StageStatus;
use crate::pipeline::plan::Plan;
use crate::report::html::esc;

const BOX_W: usize = 170;
const BOX_H: usize = 34;
const GAP_X: usize = 16;
const GAP_Y: usize = 26;
const PAD: usize = 8;

/// A stage's status as the DAG colours it: (CSS class, fill, stroke, legend text).
pub const STATES: [(&str, &str, &str, &str); 3] = [
    ("fresh", "#d9f0d9", "#2e7d32", "fresh: cached for the current pipeline"),
    (
        "stale",
        "#ffe3bf",
        "#b26a00",
        "stale: runs again on the next `pipeline run`",
    ),
    ("never", "#eeeeee", "#777777", "never run"),
];

fn state(status: Option<&StageStatus>) -> usize {
    match status.and_then(|s| s.stale.as_deref()) {
        None => 0,
        Some(reasons) if reasons.iter().any(|r| matches!(r, DirtyReason::NeverRun)) => 2,
        Some(_) => 1,
    }
}

/// The SVG of `plan`'s DAG; `statuses` are in `plan.order`, as `executor::status` gives them.
pub fn svg(plan: &Plan, statuses: &[StageStatus]) -> String {
    let n = plan.spec.stages.len();
    let mut depth = vec![0usize; n];
    for &i in &plan.order {
        depth[i] = plan.inputs[i].iter().map(|&j| depth[j] + 1).max().unwrap_or(0);
    }
    let rows = depth.iter().copied().max().map_or(0, |d| d + 1);
    let mut slot = vec![0usize; n];
    let mut per_row = vec![0usize; rows];
    for &i in &plan.order {
        slot[i] = per_row[depth[i]];
        per_row[depth[i]] += 1;
    }
    let cols = per_row.iter().copied().max().unwrap_or(1).max(1);
    let (w, h) = (
        PAD * 2 + cols * BOX_W + (cols - 1) * GAP_X,
        PAD * 2 + rows * BOX_H + rows.saturating_sub(1) * GAP_Y,
    );
    let at = |i: usize| (PAD + slot[i] * (BOX_W + GAP_X), PAD + depth[i] * (BOX_H + GAP_Y));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg class=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" \
         role=\"img\" aria-label=\"the pipeline's stages and their inputs\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" \
         orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555\"/></marker></defs>"
    );
    for &i in &plan.order {
        let (x, y) = at(i);
        for &j in &plan.inputs[i] {
            let (jx, jy) = at(j);
            let _ = writeln!(
                s,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>",
                jx + BOX_W / 2,
                jy + BOX_H,
                x + BOX_W / 2,
                y
            );
        }
    }
    for (k, &i) in plan.order.iter().enumerate() {
        let stage = plan.stage(i);
        let (class, fill, stroke, _) = STATES[state(statuses.get(k))];
        let (x, y) = at(i);
        // Under the name: the kind where the name does not say it, and the status in words
        // (the colour is not the only cue).
        let state_text = if class == "never" { "never run" } else { class };
        let kind = stage.params.kind();
        let sub = if stage.name == kind {
            state_text.to_string()
        } else {
            format!("{} · {state_text}", clip(kind, 12))
        };
        let _ = writeln!(
            s,
            "<g class=\"stage {class}\"><title>{} ({}): {class}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"5\" fill=\"{fill}\" stroke=\"{stroke}\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\" font-family=\"sans-serif\">{}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" font-family=\"sans-serif\" fill=\"#555\">{}</text></g>",
            esc(&stage.name),
            stage.params.kind(),
            x + BOX_W / 2,
            y + 15,
            esc(&clip(&stage.name, 22)),
            x + BOX_W / 2,
            y + 28,
            esc(&sub)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `text` cut to `max` characters with an ellipsis, so a long name stays inside its box.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
