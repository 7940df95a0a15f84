//! Alertmanager's webhook body, as `rollout serve` reads it before it routes
//! alerts to rollouts (`rollout::alerts::parse_webhook`). The body comes from
//! the network: any bytes give alerts or an error, never a panic, and every
//! alert read has what routing relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollout::alerts::parse_webhook;

fuzz_target!(|data: &[u8]| {
    let Ok(alerts) = parse_webhook(data) else {
        return;
    };
    for alert in &alerts {
        assert!(
            !alert.fingerprint.trim().is_empty(),
            "an alert without fingerprint was accepted"
        );
        // What the store records and the logs print for each alert.
        let _ = alert.starts_at_ms();
        let _ = alert.describe();
    }
});
