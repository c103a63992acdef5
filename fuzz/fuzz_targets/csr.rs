//! CSR parsing and verification on the CA's issue path (certs/src/ca.rs `issue`): PEM text as
//! a node sends it, or arbitrary DER wrapped in a `CERTIFICATE REQUEST` block so mutations
//! reach the ASN.1 and signature checks.
//!
//! Contract: never panics; a bad CSR is a caller error (4xx), never an internal one; an accepted
//! CSR yields a chain that verifies against the CA's bundle, for exactly the authorised
//! identity, certifying the CSR's own key.
#![no_main]

#[path = "common/ca.rs"]
mod common;

use certs::SpiffeId;
use libfuzzer_sys::fuzz_target;

/// `D<der>`, or `P<pem text>`.
enum Input<'a> {
    Pem(&'a str),
    Der(&'a [u8]),
}

fn input(data: &[u8]) -> Option<Input<'_>> {
    match data.split_first()? {
        (b'D', der) => Some(Input::Der(der)),
        (_, text) => std::str::from_utf8(text).ok().map(Input::Pem),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = input(data) else {
        return;
    };
    let identity: SpiffeId = "spiffe://cluster.local/ns/fuzz/sa/fuzz"
        .parse()
        .expect("identity");
    let (pem_text, der) = match input {
        Input::Pem(text) => (text.to_owned(), common::csr_der(text)),
        Input::Der(der) => (
            pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.to_vec())),
            Some(der.to_vec()),
        ),
    };
    match common::ca().issue(&pem_text, &identity, None) {
        Ok(issued) => common::check_issued(&issued, &identity, der.as_deref()),
        Err(error) => common::assert_caller_error(&error),
    }
});
