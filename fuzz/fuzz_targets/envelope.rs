//! The envelope decoder ingest runs on every body, and the salvage reader for bodies it refuses:
//! arbitrary bytes never panic, and what decodes keeps its id non-empty.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = domain::envelope::decode(data) {
        assert!(!envelope.id.is_empty(), "a decoded envelope has an id");
    }
    let _ = domain::envelope::salvage(data, 1_700_000_000);
});
