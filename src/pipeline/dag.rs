//! The stage graph of a plan as text, Graphviz dot or Mermaid (`pipeline dag`, the report).

use crate::pipeline::plan::Plan;

/// How [`dag`] draws the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

/// Renders the stage graph as text, Graphviz dot or Mermaid.
pub fn dag(plan: &Plan, format: DagFormat) -> String {
    let mut s = String::new();
    let label = |i: usize| {
        let st = plan.stage(i);
        format!("{} ({})", st.name, st.params.kind())
    };
    match format {
        DagFormat::Text => {
            for &i in &plan.order {
                let inputs: Vec<&str> = plan.inputs[i].iter().map(|&j| plan.stage(j).name.as_str()).collect();
                if inputs.is_empty() {
                    s.push_str(&format!("{}\n", label(i)));
                } else {
                    s.push_str(&format!("{} <- {}\n", label(i), inputs.join(", ")));
                }
            }
        }
        DagFormat::Dot => {
            s.push_str(&format!("digraph \"{}\" {{\n  rankdir=LR;\n", plan.spec.name));
            for &i in &plan.order {
                s.push_str(&format!("  \"{}\" [label=\"{}\"];\n", plan.stage(i).name, label(i)));
            }
            for &i in &plan.order {
                for &j in &plan.inputs[i] {
                    s.push_str(&format!(
                        "  \"{}\" -> \"{}\";\n",
                        plan.stage(j).name,
                        plan.stage(i).name
                    ));
                }
            }
            s.push_str("}\n");
        }
        DagFormat::Mermaid => {
            s.push_str("graph LR\n");
            for &i in &plan.order {
                s.push_str(&format!("  {}[\"{}\"]\n", plan.stage(i).name, label(i)));
            }
            for &i in &plan.order {
                for &j in &plan.inputs[i] {
                    s.push_str(&format!("  {} --> {}\n", plan.stage(j).name, plan.stage(i).name));
                }
            }
        }
    }
    s
}
