//! The pipeline-file parser and planner on arbitrary bytes: problems are reported, never
//! panicked over.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pipeline::fuzz::pipeline_file(data);
});
