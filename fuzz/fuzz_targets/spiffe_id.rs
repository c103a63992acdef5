//! `SpiffeId` parsing (identity/src/lib.rs, re-exported by certs): every URI SAN of every peer
//! certificate and every identity a node asks the CA for goes through it.
//!
//! Contract: never panics; an accepted ID prints back exactly as written (parsing is strict, so
//! there is one spelling per identity) and parses again to the same value; `SpiffeId::new`
//! accepts its parts; building from parts and parsing agree both ways.
#![no_main]

use identity::SpiffeId;
use libfuzzer_sys::fuzz_target;

enum Input<'a> {
    /// A whole URI, as found in a certificate or a CA request.
    Uri(&'a str),
    /// Parts, as the CA and the tests build identities.
    Parts {
        trust_domain: &'a str,
        namespace: &'a str,
        service_account: &'a str,
    },
}

/// `U<uri>` or `P<trust domain>\n<namespace>\n<service account>`.
fn input(data: &[u8]) -> Option<Input<'_>> {
    let (&mode, rest) = data.split_first()?;
    let text = std::str::from_utf8(rest).ok()?;
    if mode == b'P' {
        let mut parts = text.splitn(3, '\n');
        Some(Input::Parts {
            trust_domain: parts.next()?,
            namespace: parts.next()?,
            service_account: parts.next()?,
        })
    } else {
        Some(Input::Uri(text))
    }
}

fuzz_target!(|data: &[u8]| match input(data) {
    None => {}
    Some(Input::Uri(text)) => {
        let parsed = text.parse::<SpiffeId>();
        match parsed {
            Ok(id) => {
                let printed = id.to_string();
                assert_eq!(printed, text, "an accepted ID must print as written");
                assert_eq!(id.to_uri(), printed);
                assert_eq!(printed.parse::<SpiffeId>().as_ref(), Ok(&id));
                let rebuilt =
                    SpiffeId::new(id.trust_domain(), id.namespace(), id.service_account());
                assert_eq!(
                    rebuilt.as_ref(),
                    Ok(&id),
                    "the parts of a parsed ID must be valid"
                );
            }
            Err(error) => {
                assert!(!error.to_string().is_empty());
            }
        }
    }
    Some(Input::Parts {
        trust_domain,
        namespace,
        service_account,
    }) => {
        if let Ok(id) = SpiffeId::new(trust_domain, namespace, service_account) {
            assert_eq!(id.trust_domain(), trust_domain);
            assert_eq!(id.namespace(), namespace);
            assert_eq!(id.service_account(), service_account);
            let printed = id.to_string();
            assert_eq!(
                printed.parse::<SpiffeId>().as_ref(),
                Ok(&id),
                "an ID built from valid parts must parse back: {printed:?}"
            );
        }
    }
});
