//! `GET /healthz` (the process answers: liveness) and `GET /readyz` (it can do its work: the
//! database answers and has every migration this binary knows). `/readyz` is on the public
//! port, so it says which of the two is wrong but not the error: that goes to the log.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// How long `/readyz` waits for the database before it calls it unreachable.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /healthz`: 200 while the process serves requests, whatever the database does.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 `{"ready": true}`, or 503 with what is wrong: the database is
/// unreachable, or migrations are pending (the details go to the log).
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let pending = tokio::time::timeout(READY_TIMEOUT, state.store().pending_migrations()).await;
    let (ready, body) = match pending {
        Err(_) => (
            false,
            json!({
                "ready": false,
                "database": format!("unreachable: no answer within {} s", READY_TIMEOUT.as_secs()),
            }),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: the database is unreachable");
            (
                false,
                json!({ "ready": false, "database": "unreachable: see the service's log" }),
            )
        }
        Ok(Ok(pending)) if !pending.is_empty() => {
            tracing::warn!(pending = %pending.join(", "), "readyz: migrations are pending");
            (
                false,
                json!({
                    "ready": false,
                    "database": "reachable",
                    "migrations": format!("{} pending: run `sangha migrate`", pending.len()),
                }),
            )
        }
        Ok(Ok(_)) => (
            true,
            json!({ "ready": true, "database": "reachable", "migrations": "applied" }),
        ),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
