//! The known keys of the connector's config file and the type of each, for
//! [`daemon::config_check`]: a file is checked whole, so an operator sees
//! every misspelt key and every bad value at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use daemon::config_check::{Field, Shape, duration, typed};
use daemon::logging::LogFormat;

/// `origin_request`, at the top level and in each rule ([`crate::origin::OriginRequest`]).
pub static ORIGIN_REQUEST: Shape = Shape::Map(&[
    Field::optional("connect_timeout", Shape::Value(duration)),
    Field::optional("response_timeout", Shape::Value(duration)),
    Field::optional("request_body_idle_timeout", Shape::Value(duration)),
    Field::optional("ca_pool", Shape::Value(typed::<PathBuf>)),
    Field::optional("no_tls_verify", Shape::Value(typed::<bool>)),
    Field::optional("http_host_header", Shape::Value(typed::<String>)),
    Field::optional("keep_alive_connections", Shape::Value(typed::<usize>)),
    Field::optional("keep_alive_timeout", Shape::Value(duration)),
    Field::optional("http2_origin", Shape::Value(typed::<bool>)),
    Field::optional("proxy_protocol", Shape::Value(typed::<String>)),
]);

/// One ingress rule ([`crate::ingress::RuleConfig`]).
pub static RULE: Shape = Shape::Map(&[
    Field::optional("hostname", Shape::Value(typed::<String>)),
    Field::optional("path", Shape::Value(typed::<String>)),
    Field::required("service", Shape::Value(typed::<String>)),
    Field::optional("origin_request", ORIGIN_REQUEST),
]);

/// The whole file ([`crate::config::FileConfig`]).
pub static FILE: Shape = Shape::Map(&[
    Field::optional("edges", Shape::Value(typed::<Vec<String>>)),
    Field::optional("token_file", Shape::Value(typed::<PathBuf>)),
    Field::optional("ca_cert", Shape::Value(typed::<PathBuf>)),
    Field::optional("edge_server_name", Shape::Value(typed::<String>)),
    Field::optional(
        "danger_accept_invalid_edge_certs",
        Shape::Value(typed::<bool>),
    ),
    Field::optional("admin", Shape::Value(typed::<SocketAddr>)),
    Field::optional("ha_connections", Shape::Value(typed::<usize>)),
    Field::optional("grace_period", Shape::Value(duration)),
    Field::optional("backoff_base", Shape::Value(duration)),
    Field::optional("backoff_max", Shape::Value(duration)),
    Field::optional("log_format", Shape::Value(typed::<LogFormat>)),
    Field::optional("origin_request", ORIGIN_REQUEST),
    Field::optional("ingress", Shape::List(&RULE)),
]);

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::config::FileConfig;
    use crate::ingress::RuleConfig;
    use crate::origin::OriginRequest;

    /// The fields serde knows, from its own "expected one of" message.
    fn serde_fields<T: DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
        let err = serde_yaml::from_str::<T>("zzzz_not_a_field: 1\n").unwrap_err();
        let text = err.to_string();
        let list = text.split("expected one of").nth(1).unwrap_or(&text);
        let mut names: Vec<String> = list
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    fn shape_fields(shape: &Shape) -> Vec<String> {
        let Shape::Map(fields) = shape else {
            panic!("not a map")
        };
        let mut names: Vec<String> = fields.iter().map(|f| f.name.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_shapes_know_exactly_the_fields_of_the_structs() {
        assert_eq!(shape_fields(&FILE), serde_fields::<FileConfig>());
        assert_eq!(shape_fields(&RULE), serde_fields::<RuleConfig>());
        assert_eq!(
            shape_fields(&ORIGIN_REQUEST),
            serde_fields::<OriginRequest>()
        );
    }
}
