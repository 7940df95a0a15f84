//! Dashboard panel queries as Grafana runs them with every variable on All.

/// `expr` with `$datacenter`, `$cohort`, `$version` as `.*`, `$component`
/// as both components and `$__rate_interval` as `1m`.
pub fn with_all_selected(expr: &str) -> String {
    expr.replace("$datacenter", ".*")
        .replace("$cohort", ".*")
        .replace("$version", ".*")
        .replace("$component", "edge|connector")
        .replace("$__rate_interval", "1m")
}
