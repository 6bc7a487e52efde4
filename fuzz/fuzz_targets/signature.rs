//! The `Stripe-Signature` header parser and verifier on arbitrary input: the first line is the
//! header, the rest the body. Never panics; a header it signs itself always verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use domain::signature::{Tolerance, sign_header, signed_at, verify};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (header, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let secrets = [SecretString::from("whsec_fuzz"), SecretString::from("whsec_other")];
    if let Ok(header) = std::str::from_utf8(header) {
        let _ = signed_at(header);
        let _ = verify(header, body, &secrets, Tolerance::Secs(300), 1_700_000_000);
        let _ = verify(header, body, &secrets, Tolerance::Disabled, i64::MIN);
    }
    let own = sign_header("whsec_other", 1_700_000_000, body);
    let verified = verify(&own, body, &secrets, Tolerance::Secs(300), 1_700_000_000).expect("our own signature verifies");
    assert_eq!(verified.secret_index, 1);
});
