//! `rollout serve`: the controller's HTTP API (Salt pillar of assigned
//! releases, rollout status, metrics, Alertmanager's webhook). Every setting
//! is checked (exposure first, before anything is read or bound), then the
//! API serves until a signal.

use std::process::ExitCode;

use rollout::auth::BearerToken;
use rollout::cli::{Connect, ServeArgs};

use super::shared::{fail, open_store};

pub async fn run(connect: Connect, args: ServeArgs) -> ExitCode {
    let ServeArgs {
        listen,
        webhook_token_file,
        api_token_file,
        tls_cert,
        tls_key,
    } = args;
    let tls = tls_cert.zip(tls_key);
    let config = |e: &dyn std::fmt::Display| fail(daemon::EXIT_CONFIG as u8, &e.to_string());
    if let Err(e) = rollout::serve::check_exposure(listen, api_token_file.is_some(), tls.is_some())
    {
        return config(&e);
    }
    let webhook_token = match webhook_token_file.as_deref() {
        None => {
            tracing::warn!(
                "no --webhook-token-file: the Alertmanager webhook refuses every delivery"
            );
            None
        }
        Some(path) => match BearerToken::read("webhook", path) {
            Ok(token) => Some(token),
            Err(e) => return config(&e),
        },
    };
    let api_token = match api_token_file
        .as_deref()
        .map(|p| BearerToken::read("API", p))
    {
        None => None,
        Some(Ok(token)) => Some(token),
        Some(Err(e)) => return config(&e),
    };
    let tls = match tls.map(|(cert, key)| rollout::https::server_config(&cert, &key)) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return config(&e),
    };
    let store = match open_store(&connect).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return config(&format!("cannot listen on {listen}: {e}")),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let signal = daemon::signal::shutdown().await;
        tracing::info!(signal, "stopping");
        stop.cancel();
    });
    // The bound address, so `--listen 127.0.0.1:0` can be found.
    let listen = listener.local_addr().unwrap_or(listen);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%listen, scheme, api_token = api_token.is_some(), "rollout controller API listening");
    let api = rollout::serve::Api {
        store,
        webhook_token,
        api_token,
    };
    match rollout::serve::serve(listener, tls, api, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("serve failed: {e}")),
    }
}
