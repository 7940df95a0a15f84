//! The connector's choice of an ingress rule for the authority and path the
//! edge sent (`connector::ingress::Ingress::find`), over the rules of
//! `examples/connector.yaml`. The input is `AUTHORITY\nPATH?QUERY` as the
//! tunnel carries them: any of it picks one rule, never panics.
#![no_main]

use connector::ingress::{Ingress, RuleConfig};
use connector::origin::OriginRequest;
use libfuzzer_sys::fuzz_target;

fn example_rules() -> Ingress {
    let rule = |hostname: Option<&str>, path: Option<&str>, service: &str| RuleConfig {
        hostname: hostname.map(str::to_string),
        path: path.map(str::to_string),
        service: service.to_string(),
        ..Default::default()
    };
    let rules = [
        rule(
            Some("app.example.com"),
            Some("^/api/"),
            "http://127.0.0.1:8000",
        ),
        rule(Some("app.example.com"), None, "http://127.0.0.1:3000"),
        rule(
            Some("*.internal.example.com"),
            None,
            "https://127.0.0.1:8443",
        ),
        rule(None, None, "http_status:404"),
    ];
    Ingress::new(&rules, &OriginRequest::default()).expect("the example rules are valid")
}

fuzz_target!(|data: &[u8]| {
    thread_local!(static RULES: Ingress = example_rules());
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (authority, path) = text.split_once('\n').unwrap_or((text, "/"));
    RULES.with(|ingress| {
        let (index, rule) = ingress.find(authority, path);
        assert!(
            std::ptr::eq(rule, &ingress.rules()[index]),
            "find returned rule #{index} and another rule"
        );
    });
});
