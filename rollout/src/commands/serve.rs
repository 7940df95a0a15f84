//! `rollout serve`: the controller as a service. Every setting is checked
//! (exposure first, before anything is read or bound), then the worker
//! (when Salt is configured) and the API run until a signal.

use std::process::ExitCode;
use std::sync::Arc;

use rollout::auth::BearerToken;
use rollout::cli::{Connect, ServeArgs};

use super::shared::{database, fail};

pub async fn run(connect: Connect, args: ServeArgs) -> ExitCode {
    let ServeArgs {
        listen,
        webhook_token_file,
        api_token_file,
        open_reads,
        lease_ttl,
        tls_cert,
        tls_key,
    } = args;
    let tls = tls_cert.zip(tls_key);
    let config = |e: &dyn std::fmt::Display| fail(daemon::EXIT_CONFIG as u8, &e.to_string());
    if let Err(e) = rollout::api::check_exposure(listen, api_token_file.is_some(), tls.is_some()) {
        return config(&e);
    }
    if lease_ttl < std::time::Duration::from_secs(3) {
        return config(&format!(
            "--lease-ttl {} is too short: the lease is renewed every third of it; give 3s or more",
            humantime::format_duration(lease_ttl)
        ));
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
    let database = match database(&connect) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let controller = match connect.controller_if_configured() {
        Ok(c) => c.map(Arc::new),
        Err(e) => return config(&e),
    };
    let store = match super::shared::connect_store(&database).await {
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
    let holder = controller.as_ref().map(|_| rollout::worker::holder_name());
    let worker = match (&controller, &holder) {
        (Some(controller), Some(holder)) => {
            let worker = rollout::worker::Worker {
                store: store.clone(),
                controller: controller.clone(),
                holder: holder.clone(),
                lease_ttl,
            };
            Some(tokio::spawn(worker.run(cancel.clone())))
        }
        _ => {
            tracing::warn!(
                "no --salt-api: this controller serves the API but runs no rollouts \
                 (submit, resume and abort answer 503)"
            );
            None
        }
    };
    // The bound address, so `--listen 127.0.0.1:0` can be found.
    let listen = listener.local_addr().unwrap_or(listen);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%listen, scheme, api_token = api_token.is_some(), open_reads, runs_rollouts = worker.is_some(), "rollout controller API listening");
    let api = rollout::api::Api {
        store,
        webhook_token,
        api_token,
        open_reads,
        controller,
        holder,
    };
    let served = rollout::api::serve(listener, tls, api, cancel.clone()).await;
    // The API stopped (a signal, or it failed): stop the worker too, which
    // gives the lease up.
    cancel.cancel();
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("serve failed: {e}")),
    }
}
