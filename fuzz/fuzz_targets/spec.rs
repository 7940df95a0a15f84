//! The rollout spec, from YAML text to a checked spec or the list of its
//! problems (`rollout::spec::Spec::from_yaml`, used by `rollout validate`,
//! `plan`, `apply` and the API that accepts specs). Any text gives one or the
//! other, never a panic; a checked spec survives the store, which keeps it as
//! JSON and checks it again on load.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollout::spec::{Spec, SpecError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Spec::from_yaml(text) {
        Ok(spec) => {
            let stored = spec.to_json();
            let loaded = Spec::from_json(&stored)
                .unwrap_or_else(|e| panic!("a valid spec does not load from the store: {e}"));
            assert_eq!(loaded, spec, "the store gives back another spec");
        }
        Err(SpecError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "refused without a problem");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
