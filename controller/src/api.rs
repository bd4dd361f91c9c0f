//! HTTP routes. `app(state)` is the whole API, so tests drive it with `oneshot`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sdp_spec::record::Kind;
use sdp_spec::types::{check_host, check_name};
use sdp_spec::wire::{AgentReport, ApplyRequest, SourceDocument};
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;
use sdp_spec::parse::parse_any;

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/apply", post(apply))
        .route("/v1/records/{kind}", get(list_records))
        .route(
            "/v1/records/{kind}/{name}",
            get(get_record).put(put_record).delete(delete_record),
        )
        .route("/v1/records/{kind}/{name}/history", get(history))
        .route("/v1/sandboxes", get(list_status))
        .route("/v1/sandboxes/{name}/status", get(sandbox_status))
        .route("/v1/agents", get(list_agents))
        .route("/v1/agents/{name}", get(agent_view))
        .route("/v1/agents/{name}/assignments", get(assignments))
        .route("/v1/agents/{name}/report", post(report))
        .fallback(|| async { ApiError::NotFound("no such endpoint; the API is under /v1".into()) })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Errors raised before a handler runs (bad path encoding, body too large,
/// wrong method) come as plain text; give them the API's JSON shape too.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let error = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    (
        status,
        Json(sdp_spec::wire::ErrorBody {
            error,
            field: None,
            details: vec![],
        }),
    )
        .into_response()
}

fn kind_param(kind: &str) -> Result<Kind, ApiError> {
    Kind::parse(kind).ok_or_else(|| {
        ApiError::bad_request(
            format!("unknown kind `{kind}`; allowed: {}", Kind::names()),
            Some("kind"),
        )
    })
}

fn name_param(name: &str) -> Result<(), ApiError> {
    check_name(name).map_err(|m| ApiError::bad_request(m, Some("name")))
}

fn applied_by(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-sdp-user")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().filter(|c| !c.is_control()).take(64).collect())
}

fn body_text(body: &Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("request body is not UTF-8 text", None))
}

/// A JSON `ApplyRequest` (`{"documents": [...]}`), or one TOML or JSON
/// record as the whole body.
async fn apply(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = body_text(&body)?;
    let is_batch = text.trim_start().starts_with('{')
        && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
            .is_ok_and(|m| m.contains_key("documents"));
    let mut req = if is_batch {
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize::<_, ApplyRequest>(&mut de).map_err(|e| {
            let field = e.path().to_string();
            ApiError::bad_request(
                format!("malformed apply request: {}", e.inner()),
                (field != ".").then_some(field.as_str()),
            )
        })?
    } else {
        ApplyRequest {
            documents: vec![SourceDocument {
                file: "<body>".into(),
                content: text,
            }],
            ..ApplyRequest::default()
        }
    };
    if req.applied_by.is_none() {
        req.applied_by = applied_by(&headers);
    }
    Ok(Json(st.apply(req).await?).into_response())
}

async fn put_record(
    State(st): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = kind_param(&kind)?;
    name_param(&name)?;
    let text = body_text(&body)?;
    let doc = parse_any(&text, "<body>").map_err(ApiError::Spec)?;
    if doc.record.kind() != kind || doc.record.name().as_str() != name {
        return Err(ApiError::bad_request(
            format!(
                "the body is {} but the URL names {kind}/{name}",
                doc.record.key()
            ),
            Some("name"),
        ));
    }
    let resp = st
        .apply(ApplyRequest {
            documents: vec![SourceDocument {
                file: "<body>".into(),
                content: text,
            }],
            dry_run: false,
            applied_by: applied_by(&headers),
        })
        .await?;
    let code = match resp.results.first().map(|r| r.action) {
        Some(sdp_spec::wire::ApplyAction::Created) => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok((code, Json(resp)).into_response())
}

async fn list_records(
    State(st): State<AppState>,
    Path(kind): Path<String>,
) -> Result<Response, ApiError> {
    let kind = kind_param(&kind)?;
    Ok(Json(st.list(kind)).into_response())
}

async fn get_record(
    State(st): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = kind_param(&kind)?;
    name_param(&name)?;
    let rec = st
        .get(kind, &name)
        .ok_or_else(|| ApiError::NotFound(format!("{kind} `{name}` not found")))?;
    let wants_toml = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("toml"));
    if wants_toml {
        return Ok((
            [(header::CONTENT_TYPE, "application/toml")],
            rec.spec.to_toml(),
        )
            .into_response());
    }
    Ok(Json(rec).into_response())
}

async fn delete_record(
    State(st): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = kind_param(&kind)?;
    name_param(&name)?;
    let by = applied_by(&headers).unwrap_or_else(|| "anonymous".into());
    let revision = st.delete(kind, &name, &by).await?;
    Ok(Json(serde_json::json!({ "revision": revision })).into_response())
}

async fn history(
    State(st): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = kind_param(&kind)?;
    name_param(&name)?;
    Ok(Json(st.history(kind, &name).await?).into_response())
}

async fn list_status(State(st): State<AppState>) -> Json<Vec<sdp_spec::wire::SandboxStatus>> {
    Json(st.statuses(None))
}

async fn sandbox_status(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    let status = st
        .sandbox_status(&name)
        .ok_or_else(|| ApiError::NotFound(format!("sandbox `{name}` not found")))?;
    Ok(Json(status).into_response())
}

async fn list_agents(State(st): State<AppState>) -> Json<Vec<sdp_spec::wire::AgentInfo>> {
    Json(st.agents())
}

async fn agent_view(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    name_param(&name)?;
    let view = st
        .agent_view(&name)
        .ok_or_else(|| ApiError::NotFound(format!("agent `{name}` has never connected")))?;
    Ok(Json(view).into_response())
}

#[derive(Debug, Deserialize)]
struct PollQuery {
    /// Answer as soon as the revision passes this.
    since: Option<u64>,
    /// Answer as soon as the agent's work differs from this etag.
    etag: Option<String>,
    /// Seconds to hold the request open (bounded by the controller's maximum).
    wait: Option<u64>,
    /// The agent's advertised address, registered on every poll.
    advertise: Option<String>,
}

/// Long-poll: the agent's assignments, as soon as they change, or after `wait`.
async fn assignments(
    State(st): State<AppState>,
    Path(agent): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    name_param(&agent)?;
    let Query(q) = Query::<PollQuery>::try_from_uri(&uri)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text()), None))?;
    if let Some(adv) = q.advertise.as_deref() {
        check_host(adv).map_err(|m| ApiError::bad_request(m, Some("advertise")))?;
    }
    st.touch_agent(&agent, q.advertise.as_deref()).await?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(st.settings.max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let mut revisions = st.subscribe();
    let mut shutdown = st.shutdown_signal();
    loop {
        revisions.borrow_and_update();
        let current = st.assignments(&agent);
        let changed = match (&q.etag, q.since) {
            (Some(etag), _) => *etag != current.etag,
            (None, Some(since)) => current.revision > since,
            (None, None) => true,
        };
        if changed || *shutdown.borrow() {
            return Ok(Json(current).into_response());
        }
        tokio::select! {
            r = revisions.changed() => if r.is_err() { return Ok(Json(current).into_response()) },
            _ = shutdown.changed() => return Ok(Json(current).into_response()),
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(current).into_response()),
        }
    }
}

async fn report(
    State(st): State<AppState>,
    Path(agent): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    name_param(&agent)?;
    let report: AgentReport = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed report: {e}"), None))?;
    if report.agent != agent {
        return Err(ApiError::bad_request(
            format!("report is from `{}` but posted for `{agent}`", report.agent),
            Some("agent"),
        ));
    }
    st.put_report(report).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
