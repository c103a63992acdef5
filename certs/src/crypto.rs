//! The crypto the mesh uses, in one place: ring, TLS 1.3 AES-GCM suites only, and the
//! signature algorithms webpki verifies chains with. No other module of the crate is needed
//! here, so identity material and the TLS configs can both depend on it.

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};

/// The crypto provider for every mesh connection: ring, restricted to the TLS 1.3 AES-GCM suites.
pub fn crypto_provider() -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
        ],
        ..default_provider()
    }
}

/// The signature algorithms chains are verified with.
pub fn signature_algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}
