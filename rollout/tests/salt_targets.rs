//! The salt-api client against a local stand-in for salt-api that records
//! every lowstate it is sent: list targets go out as JSON arrays of checked
//! minion ids, and an id that could name other minions is never sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Json;
use axum::routing::post;
use rollout::salt::{SaltApi, SaltError, SaltSecret};
use serde_json::{Value, json};

/// A salt-api that logs anyone in and answers every call with `true` for
/// each minion named in a list target.
async fn stand_in() -> (SaltApi, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = Router::new()
        .route(
            "/login",
            post(|| async { Json(json!({"return": [{"token": "t"}]})) }),
        )
        .route("/", post(answer))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = SaltApi::new(&url, "rollout", SaltSecret("s".into())).unwrap();
    (api, seen)
}

async fn answer(
    State(seen): State<Arc<Mutex<Vec<Value>>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    seen.lock().unwrap().push(body.clone());
    let low = &body[0];
    let ret = match low["tgt"].as_array() {
        Some(ids) if low["client"] == "local_async" => json!({"jid": low["jid"], "minions": ids}),
        Some(ids) => Value::Object(
            ids.iter()
                .map(|id| (id.as_str().unwrap().to_string(), json!(true)))
                .collect(),
        ),
        None => json!({}),
    };
    Json(json!({"return": [ret]}))
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn list_targets_are_sent_as_json_arrays() {
    let (salt, seen) = stand_in().await;
    let hosts = ids(&["edge-ams-1", "edge-fra-2"]);
    let answered = salt
        .ping_list(&hosts, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(answered.values().all(|up| *up), "{answered:?}");
    salt.apply_async(&hosts, "edge", "20261129000000000000")
        .await
        .unwrap();
    salt.apply(&hosts, Some("edge"), Duration::from_secs(1))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for body in &seen {
        let low = &body[0];
        assert_eq!(low["tgt_type"], "list", "{body}");
        assert_eq!(low["tgt"], json!(["edge-ams-1", "edge-fra-2"]), "{body}");
    }
}

#[tokio::test]
async fn an_id_that_could_name_other_minions_is_never_sent() {
    let (salt, seen) = stand_in().await;
    for bad in ["edge-ams-1,edge-fra-2", "edge ams", "$(reboot)", "..", ""] {
        let hosts = ids(&["edge-ams-1", bad]);
        let e = salt
            .apply(&hosts, Some("edge"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, SaltError::InvalidTarget(_)), "{bad:?}: {e}");
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        let e = salt
            .ping_list(&hosts, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, SaltError::InvalidTarget(_)), "{bad:?}: {e}");
        let e = salt.apply_async(&hosts, "edge", "1").await.unwrap_err();
        assert!(matches!(e, SaltError::InvalidTarget(_)), "{bad:?}: {e}");
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing reaches salt-api");
}

/// A salt-api whose first job lookup fails with 503, then answers.
async fn flaky_lookups() -> (SaltApi, Arc<Mutex<u32>>) {
    let lookups: Arc<Mutex<u32>> = Arc::default();
    let app = Router::new()
        .route(
            "/login",
            post(|| async { Json(json!({"return": [{"token": "t"}]})) }),
        )
        .route(
            "/",
            post(
                |State(n): State<Arc<Mutex<u32>>>, Json(_): Json<Value>| async move {
                    let mut n = n.lock().unwrap();
                    *n += 1;
                    if *n == 1 {
                        return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                    }
                    let state = json!({"result": true, "changes": {}, "comment": "ok"});
                    let done = json!({"edge-ams-1": {"warren-edge": state}});
                    Ok(Json(json!({"return": [{"data": done}]})))
                },
            ),
        )
        .with_state(lookups.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = SaltApi::new(&url, "rollout", SaltSecret("s".into())).unwrap();
    (api, lookups)
}

#[tokio::test]
async fn a_job_lookup_that_fails_once_is_asked_again() {
    let (salt, lookups) = flaky_lookups().await;
    let report = salt
        .wait_job(
            "20261129000000000000",
            &ids(&["edge-ams-1"]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(*lookups.lock().unwrap(), 2);
    assert_eq!(report.jid.as_deref(), Some("20261129000000000000"));
    assert_eq!(
        report.hosts["edge-ams-1"],
        rollout::salt::HostOutcome::Success { changed: 0 }
    );

    // Past the job's deadline, the failure is the answer.
    let (salt, lookups) = flaky_lookups().await;
    let e = salt
        .wait_job(
            "20261129000000000001",
            &ids(&["edge-ams-1"]),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SaltError::Status { status: 503, .. }), "{e}");
    assert_eq!(*lookups.lock().unwrap(), 1);
}
