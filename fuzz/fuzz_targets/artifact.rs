//! What the cache holds, on arbitrary bytes: stored, view and segmented Arrow artifacts
//! through both readers, and records through the cache's lookup.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pipeline::fuzz::artifact(data);
});
