//! The typed event model the fold reads, in both API shapes (seeds: Stripe's fixtures as
//! 2022-11-15 and 2025-03-31.basil events): arbitrary bytes never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = domain::stripe::decode(data);
    let _ = domain::stripe::decode(&domain::stripe::without_nul_escapes(data));
});
