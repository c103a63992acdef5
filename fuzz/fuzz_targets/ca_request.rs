//! The CA's request body (certs/src/api.rs `CreateCertificateRequest`, decoded by ambit-ca from
//! every POST) and what the CA does with it once the caller is authorised: identity parsing,
//! lifetime clamping and issuance from the CSR inside (certs/src/ca.rs).
//!
//! Contract: never panics; a decoded message re-encodes to one that decodes equal; a bad request
//! is refused with a caller error (4xx), never an internal one; anything issued verifies against
//! the CA's bundle, for exactly the identity asked, for the CSR's key, within the maximum
//! lifetime.
#![no_main]

#[path = "common/ca.rs"]
mod common;

use std::time::Duration;

use certs::api::CreateCertificateRequest;
use certs::ca::MAX_WORKLOAD_TTL;
use certs::SpiffeId;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = CreateCertificateRequest::decode(data) else {
        return;
    };
    let encoded = message.encode_to_vec();
    assert_eq!(
        CreateCertificateRequest::decode(encoded.as_slice()).as_ref(),
        Ok(&message)
    );
    let Ok(identity) = message.identity.parse::<SpiffeId>() else {
        return;
    };
    // As ambit-ca: 0 or negative means the default, anything else is capped.
    let ttl = match u64::try_from(message.validity_seconds) {
        Ok(0) | Err(_) => None,
        Ok(seconds) => Some(Duration::from_secs(seconds).min(MAX_WORKLOAD_TTL)),
    };
    match common::ca().issue(&message.csr, &identity, ttl) {
        Ok(issued) => {
            let der = common::csr_der(&message.csr);
            common::check_issued(&issued, &identity, der.as_deref());
        }
        Err(error) => common::assert_caller_error(&error),
    }
});
