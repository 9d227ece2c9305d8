//! `run --json` and `status --json`: one JSON object per line, the events of README.md's
//! "Machine-readable runs", as a CI system reading stdout sees them.

use serde_json::Value;

use crate::support::{BASIC, Project};

const STAGES: [&str; 5] = ["ingest", "split", "resize", "mean_subtract", "normalize"];

/// Every line of stdout parsed as one JSON object.
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
        .collect()
}

/// `(event, stage)` of each event.
fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["stage"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_run_is_a_stream_of_stage_events_ending_in_finished() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    let first = events(&p.run(&["run", "pipeline.yaml", "--json"]).ok().stdout);
    let mut expected: Vec<(String, String)> = STAGES
        .iter()
        .flat_map(|s| [("started".to_string(), s.to_string()), ("ran".into(), s.to_string())])
        .collect();
    expected.push(("finished".into(), String::new()));
    assert_eq!(kinds(&first), expected);
    let ran = &first[1];
    assert_eq!(ran["kind"], "ingest");
    assert_eq!(ran["rows"], 12);
    assert_eq!(ran["reasons"][0]["reason"], "never_run");
    assert_eq!(ran["reasons"][0]["text"], "never run");
    assert_eq!(ran["fingerprint"].as_str().unwrap().len(), 64);
    assert!(ran["seconds"].as_f64().unwrap() >= 0.0);
    let finished = first.last().unwrap();
    assert_eq!(
        (finished["ran"].as_u64(), finished["cached"].as_u64()),
        (Some(5), Some(0))
    );

    let second = events(&p.run(&["run", "pipeline.yaml", "--json"]).ok().stdout);
    let cached: Vec<(String, String)> = STAGES.iter().map(|s| ("cached".to_string(), s.to_string())).collect();
    assert_eq!(kinds(&second)[..5], cached[..]);
    assert_eq!(
        second[2]["fingerprint"], first[5]["fingerprint"],
        "resize is the same artifact"
    );
    assert_eq!(second[5]["cached"], 5);

    let status = events(
        &p.run(&["status", "pipeline.yaml", "--json", "--set", "resize.size=[6, 6]"])
            .ok()
            .stdout,
    );
    let fresh: Vec<bool> = status.iter().map(|e| e["fresh"].as_bool().unwrap()).collect();
    assert_eq!(fresh, [true, true, false, false, false]);
    assert_eq!(status[2]["event"], "status");
    assert_eq!(status[2]["reasons"][0]["reason"], "param_changed");
    assert_eq!(status[2]["reasons"][0]["param"], "size");
    assert_eq!(status[3]["reasons"][0]["reason"], "input_changed");
    assert_eq!(status[3]["reasons"][0]["input"], "resize");
}

#[test]
fn a_failing_stage_is_a_failed_event_naming_it_and_the_exit_code_says_so() {
    let p = Project::new();
    p.kaggle_images(&["cat", "dog"], 6).pipeline(BASIC);
    p.write("images/cat.text.png", "this is not an image\n");
    let run = p.run(&["run", "pipeline.yaml", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let events = events(&run.stdout);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "failed", "{}", run.stdout);
    assert_eq!(last["stage"], "resize");
    assert_contains!(last["error"].as_str().unwrap(), "cat.text.png");
    assert_contains!(run.stderr, "cat.text.png", "the error is on stderr as without --json");
    assert!(events.iter().all(|e| e["event"] != "finished"));
}
