//! Sequences of requests to hearth-core, checked after every step (see `hearth_fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

thread_local! {
    // The spec is slow to parse: once per process, not per input.
    static HARNESS: hearth_fuzz::Harness = hearth_fuzz::Harness::new();
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| h.fuzz(data));
});
