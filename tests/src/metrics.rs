//! Reading a Prometheus text exposition the way a person would grep it.

/// Sum of every sample of `name` whose labels include all of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Fetches `http://admin/metrics`; empty on error.
pub async fn scrape(admin: std::net::SocketAddr) -> String {
    let url = format!("http://{admin}/metrics");
    match crate::http::plain_client().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_matching_series() {
        let text = "# HELP x\nx{a=\"1\",b=\"2\"} 3\nx{a=\"1\",b=\"3\"} 4\nxy{a=\"1\"} 100\nx 5\n";
        assert_eq!(super::sum(text, "x", &[("a", "1")]), 7.0);
        assert_eq!(super::sum(text, "x", &[]), 12.0);
        assert_eq!(super::sum(text, "x", &[("b", "3")]), 4.0);
    }
}
