//! Image ingest on arbitrary bytes: decode (with size limits) and resize, as `resize` does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pipeline::fuzz::image(data);
});
