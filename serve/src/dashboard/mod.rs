//! The dashboard: `mcpq serve`'s web pages for operators, at `/`.
//!
//! Server-rendered HTML (minijinja templates compiled into the binary, auto-escaped:
//! job data, emails and tool results are hostile input and never reach a page as
//! markup), one small stylesheet and one small script, both embedded: no CDN, no
//! JavaScript build step, works offline.
//!
//! Pages and the Redis calls each makes (none scans the whole keyspace or all jobs;
//! `cargo bench --bench dashboard` loads each at 1,000 and at 100,000 jobs):
//! - `/` overview: per partition the stats script (`queue::stats`), `HMGET` of
//!   `{ns}:totals`, the queues script (`queue::queues`: at most 256 named queues, 3
//!   `LLEN`s and 30 entries looked at each) and, for the chart, `TYPE` + `HMGET` of the
//!   per-minute hashes `{ns}:ended:MINUTE` of the last 15 minutes (`queue::history`); the live workers'
//!   heartbeats (`queue::workers`). The page polls `/ui/overview.json` (the same reads)
//!   every 2 s: live counts, queues and chart, no reload.
//! - `/jobs`: one page of the job index (`queue::listing::list_page`: at most 50 jobs,
//!   reading at most 5,000 index entries with `?status=`, `?queue=`; `?batch=` reads
//!   the batch's list; `?cursor=`); `?q=` a job id, or an idempotency key (one `GET` of
//!   `{ns}:idem:KEY`), goes to its page.
//! - `/jobs/{id}`: the job's record with its result (`HMGET` + its attempts, through the
//!   bounded reader of `/v1/jobs/{id}/result`), its envelope (a read-only script: read
//!   only when at most 1 MiB), its webhook deliveries (`HGET` of its count, then `TYPE` +
//!   `HMGET` of at most 20); Cancel, Run now (a failed job waiting for its retry, a
//!   delayed one) and, when dead, Requeue. It polls `/ui/jobs/{id}` (`HMGET`) every
//!   second for its status.
//! - `/dead`: the newest 200 dead jobs (`queue::control::dead_list`: `ZREVRANGE`, then
//!   `TYPE` + `HMGET` each), filtered by error kind and by server; requeue one, the
//!   checked ones, all (`control::requeue_all`) or those shown; purge those older than a
//!   duration (`control::purge_dead`).
//! - `/batches`: the newest 50 batches (`queue::batch::list`) with progress bars, rate
//!   and ETA; `/batches/{id}`: one batch's counts (`queue::batch::status`), polled every
//!   second at `/ui/batches/{id}`, and the link to its results export.
//! - `/servers`: per configured MCP server, each live worker's own report
//!   (`queue::servers::read_by_worker`: `TYPE`, then `HMGET` of the configured servers'
//!   fields of `{ns}:servers:worker:W`, for at most 100 live workers): health, sessions, calls in flight, crashes since the
//!   worker started, the last error with its stderr tail, tools.
//! - `/schedules`: the configured cron schedules with their last run (one `HMGET` of
//!   `{ns}:schedules`) and next run; each rate-limited endpoint's usage now (one
//!   read-only script each, `queue::limits::usage`: calls in the window, slots held,
//!   tokens in use, a 429's pause).
//!
//! A browser's request that fails before a handler (an unknown page, a form axum
//! refuses) gets the HTML error page (`json_errors`), not the API's JSON.
//!
//! Auth ([`session`]): a login form trades a bearer token for a signed session cookie;
//! every action is a POST carrying the session's CSRF token, from the same origin, and
//! runs the same handler as the HTTP API (`/v1/...`), logged with the token's name.

pub mod session;

use std::sync::OnceLock;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use mcpq_core::queue::results::now_ms;
use mcpq_core::queue::{
    control, history, listing, queues, servers, stats, webhooks, workers, JobStatus,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{local_caller, Caller};
use crate::error::ApiError;
use crate::state::AppState;
use session::{same_origin, set_cookie, Session, Sessions};

/// The statuses `/jobs` filters by.
const STATUSES: [&str; 8] = [
    "queued",
    "scheduled",
    "running",
    "failed",
    "succeeded",
    "dead",
    "cancelled",
    "waiting",
];

/// Jobs per page of `/jobs`.
const PAGE: usize = 50;
/// Dead jobs read for `/dead` (the newest).
const DEAD_PAGE: usize = 200;

/// The dashboard's routes (their own auth: a session cookie, not a bearer token).
pub fn router(state: AppState, sessions: Sessions) -> Router {
    let pages = Router::new()
        .route("/", get(overview))
        .route("/ui/overview.json", get(overview_json))
        .route("/jobs", get(jobs_page))
        .route("/jobs/{id}", get(job_page))
        .route("/ui/jobs/{id}", get(job_status_json))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/run-now", post(run_now))
        .route("/dead", get(dead_page))
        .route("/batches", get(batches_page))
        .route("/batches/{id}", get(batch_page))
        .route("/ui/batches/{id}", get(batch_json))
        .route("/servers", get(servers_page))
        .route("/schedules", get(schedules_page))
        .route("/dead/{id}/requeue", post(requeue))
        .route("/dead/requeue", post(requeue_selected))
        .route("/dead/requeue-matching", post(requeue_matching))
        .route("/dead/purge", post(purge))
        .route("/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), sessions.clone()),
            require_session,
        ))
        .with_state(state.clone());
    let timeout = state.config.serve.request_timeout;
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .with_state((state, sessions))
        .merge(pages)
        .layer(middleware::from_fn(common_headers))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
}

/// On every dashboard answer: no MIME sniffing, and nothing cached (job data).
async fn common_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    response
}

/// Lets a request through with its [`Session`] (and a [`Caller`] for the API's
/// handlers); a page without one goes to the login form, a POST without its CSRF token
/// or from another origin is 403.
async fn require_session(
    State((_, sessions)): State<(AppState, Sessions)>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut new_cookie = None;
    if sessions.open() {
        // No token: the loopback rules of the API for every request, minus the Origin
        // check (a page of this dashboard sends one), which `same_origin` does below.
        let mut headers = request.headers().clone();
        headers.remove(header::ORIGIN);
        if let Err(e) = local_caller(&headers) {
            return e.into_response();
        }
    }
    let session = match sessions.of_request(request.headers(), now_ms()) {
        Some(s) => s,
        None if sessions.open() => match sessions.anonymous(now_ms()) {
            Some((s, cookie)) => {
                new_cookie = Some(cookie);
                s
            }
            None => return forbidden("no session key").into_response(),
        },
        None if request.method() == axum::http::Method::GET => {
            return Redirect::to("/login").into_response();
        }
        None => return forbidden("log in first").into_response(),
    };
    if request.method() != axum::http::Method::GET && !same_origin(request.headers()) {
        return forbidden("a request from another site").into_response();
    }
    let set = new_cookie.map(|c| set_cookie(Some(&c), request.headers()));
    request.extensions_mut().insert(Caller(session.who.clone()));
    request.extensions_mut().insert(session);
    let mut response = next.run(request).await;
    if let Some(set) = set {
        if let Ok(v) = set.parse() {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

/// The dashboard's error page (for errors raised outside its handlers: an unknown
/// page, a form that does not deserialize; see `json_errors`).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    Page::error(status, message).into_response()
}

fn forbidden(why: &str) -> Page {
    Page::error(StatusCode::FORBIDDEN, &format!("Forbidden: {why}."))
}

/// The form of every action: its CSRF token.
#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
}

fn check_csrf(session: &Session, form: &ActionForm) -> Result<(), Page> {
    if Sessions::check_csrf(session, &form.csrf) {
        Ok(())
    } else {
        Err(forbidden(
            "the form's CSRF token is missing or wrong (reload the page)",
        ))
    }
}

/// A rendered page, or an error page.
struct Page {
    status: StatusCode,
    html: String,
}

impl Page {
    fn render(template: &str, context: Value) -> Page {
        match templates()
            .get_template(template)
            .and_then(|t| t.render(context))
        {
            Ok(html) => Page {
                status: StatusCode::OK,
                html,
            },
            Err(e) => {
                tracing::error!(template, error = %e, "dashboard template failed");
                Page::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The page could not be rendered.",
                )
            }
        }
    }

    fn error(status: StatusCode, message: &str) -> Page {
        let html = templates()
            .get_template("error.html")
            .and_then(|t| t.render(json!({"status": status.as_u16(), "message": message})))
            .unwrap_or_else(|_| "error".into());
        Page { status, html }
    }
}

impl From<ApiError> for Page {
    fn from(e: ApiError) -> Page {
        if e.status.is_server_error() {
            // Logged by the API's error type; the page does not repeat Redis's words.
            let status = e.status;
            let _ = e.into_response();
            return Page::error(status, "The request failed (see the server's log).");
        }
        Page::error(e.status, &e.message)
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::REFERRER_POLICY, "same-origin"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            Html(self.html),
        )
            .into_response()
    }
}

/// Scripts and styles only from this server; no inline script runs, no frame shows us.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        // `{{ ms | time }}`: a Unix time in ms as UTC (RFC 3339), `-` for none.
        env.add_filter("time", |ms: Option<u64>| match ms {
            Some(ms) => {
                use std::fmt::Write;
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                let mut out = String::new();
                // Past the year 9999 humantime refuses: the raw number then.
                match write!(out, "{}", humantime::format_rfc3339_millis(at)) {
                    Ok(()) => out,
                    Err(_) => format!("{ms} ms"),
                }
            }
            None => "-".to_string(),
        });
        // `{{ ms | age }}`: a duration in ms as `850 ms`, `4.2 s`, `3.1 min`, `2.0 h`.
        env.add_filter("age", |ms: Option<u64>| match ms {
            None => "-".to_string(),
            Some(ms) if ms < 1000 => format!("{ms} ms"),
            Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
            Some(ms) if ms < 3_600_000 => format!("{:.1} min", ms as f64 / 60_000.0),
            Some(ms) => format!("{:.1} h", ms as f64 / 3_600_000.0),
        });
        // `.html` names: every value is HTML-escaped unless marked safe (none is).
        for (name, text) in [
            ("base.html", include_str!("templates/base.html")),
            ("macros.html", include_str!("templates/macros.html")),
            ("error.html", include_str!("templates/error.html")),
            ("login.html", include_str!("templates/login.html")),
            ("overview.html", include_str!("templates/overview.html")),
            ("jobs.html", include_str!("templates/jobs.html")),
            ("job.html", include_str!("templates/job.html")),
            ("dead.html", include_str!("templates/dead.html")),
            ("batches.html", include_str!("templates/batches.html")),
            ("batch.html", include_str!("templates/batch.html")),
            ("servers.html", include_str!("templates/servers.html")),
            ("schedules.html", include_str!("templates/schedules.html")),
            ("done.html", include_str!("templates/done.html")),
        ] {
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(name, error = %e, "dashboard template does not parse");
            }
        }
        env
    })
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login_form(State((_, sessions)): State<(AppState, Sessions)>) -> Response {
    if sessions.open() {
        return Redirect::to("/").into_response();
    }
    Page::render("login.html", json!({})).into_response()
}

async fn login(
    State((_, sessions)): State<(AppState, Sessions)>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return forbidden("a login from another site").into_response();
    }
    match sessions.login(form.token.as_bytes(), now_ms()) {
        Some((session, cookie)) => {
            tracing::info!(caller = %session.who, "dashboard login");
            (
                [(header::SET_COOKIE, set_cookie(Some(&cookie), &headers))],
                Redirect::to("/"),
            )
                .into_response()
        }
        None => {
            tracing::info!("dashboard login refused: not a configured token");
            let mut page = Page::render("login.html", json!({"failed": true}));
            page.status = StatusCode::UNAUTHORIZED;
            page.into_response()
        }
    }
}

async fn logout(
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(page) = check_csrf(&session, &form) {
        return page.into_response();
    }
    tracing::info!(caller = %session.who, "dashboard logout (the cookie is removed; a copy of it stays valid until it expires)");
    (
        [(header::SET_COOKIE, set_cookie(None, &headers))],
        Redirect::to("/login"),
    )
        .into_response()
}

/// What the overview shows, as JSON (the page's first render and its live updates).
async fn overview_data(state: &AppState) -> Result<Value, ApiError> {
    let conn = state.conn();
    let keys = state.producer.keys();
    let counts = stats::read(&conn, keys).await?;
    let totals = stats::totals(&conn, keys).await?;
    let live = workers::live(&conn, keys).await?;
    let queues: Vec<Value> = queues::list(&mut conn.clone(), keys)
        .await?
        .into_iter()
        .map(|q| {
            let mut v = serde_json::to_value(&q).unwrap_or_default();
            if let Some(map) = v.as_object_mut() {
                map.insert("oldest_ms".into(), json!(q.oldest_queued_age_ms.max()));
                map.insert("total".into(), json!(q.queued.total()));
            }
            v
        })
        .collect();
    let history = history::read(&conn, keys, counts.read_at_ms).await?;
    // Jobs ended per second over the last full slot (the newest one is still filling).
    let rate =
        history.iter().rev().nth(1).map(|s| {
            s.succeeded.saturating_add(s.dead) as f64 / (history::SLOT_MS as f64 / 1000.0)
        });
    Ok(json!({
        "queues": queues,
        "history": history,
        "rate": rate.map(|r| (r * 10.0).round() / 10.0),
        "stats": counts,
        "queued_total": counts.queued_total(),
        "oldest_queued_age_ms": counts.oldest_queued_age(),
        "totals": totals,
        "workers": live,
    }))
}

async fn overview(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Page, Page> {
    let data = overview_data(&state).await?;
    Ok(Page::render(
        "overview.html",
        json!({"session": session_json(&session), "data": data, "page": "overview"}),
    ))
}

async fn overview_json(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    overview_data(&state).await.map(Json)
}

fn session_json(session: &Session) -> Value {
    json!({"who": session.who, "csrf": session.csrf})
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    status: Option<String>,
    batch: Option<String>,
    queue: Option<String>,
    cursor: Option<String>,
    q: Option<String>,
}

async fn jobs_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(query): Query<JobsQuery>,
) -> Result<Response, Page> {
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        if let Ok(id) = crate::jobs::parse_id(q) {
            return Ok(Redirect::to(&format!("/jobs/{id}")).into_response());
        }
        // Not an id: an idempotency key (one GET where the producer put it).
        let keys = state.producer.keys();
        let found: Option<String> = if q.len() <= MAX_KEY {
            let part = match keys.partitions() {
                0 | 1 => 0,
                n => mcpq_core::queue::partition::of_key(q, n),
            };
            redis::cmd("GET")
                .arg(keys.at(part).idempotency(q))
                .query_async(&mut state.conn())
                .await
                .map_err(|e| ApiError::from(mcpq_core::queue::QueueError::from(e)))?
        } else {
            None
        };
        return match found.as_deref().map(crate::jobs::parse_id) {
            Some(Ok(id)) => Ok(Redirect::to(&format!("/jobs/{id}")).into_response()),
            _ => Err(Page::error(
                StatusCode::NOT_FOUND,
                "No job has that id or idempotency key (a key is remembered for queue.idempotency_ttl).",
            )),
        };
    }
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            JobStatus::parse(s)
                .ok_or_else(|| Page::error(StatusCode::BAD_REQUEST, "Unknown status."))?,
        ),
        None => None,
    };
    let batch = match query.batch.as_deref().filter(|b| !b.is_empty()) {
        Some(b) => Some(crate::jobs::parse_id(b)?.to_string()),
        None => None,
    };
    let queue = crate::jobs::parse_queue(query.queue.as_deref())?;
    let filter = listing::JobFilter {
        status,
        batch: batch.clone(),
        queue: queue.clone(),
    };
    let page = listing::list_page(
        &mut state.conn(),
        state.producer.keys(),
        &filter,
        PAGE,
        query.cursor.as_deref(),
    )
    .await
    .map_err(ApiError::from)?;
    Ok(Page::render(
        "jobs.html",
        json!({
            "session": session_json(&session),
            "page": "jobs",
            "jobs": page.jobs,
            "next": page.next,
            "status": status.map(|s| s.as_str()),
            "batch": batch,
            "queue": queue,
            "statuses": STATUSES,
        }),
    )
    .into_response())
}

async fn job_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Page, Page> {
    let id = crate::jobs::parse_id(&id)?.to_string();
    // One read of the record with its result (possibly megabytes: the bounded reader,
    // as `/v1/jobs/{id}/result`, parsed off the runtime), none of its payload.
    let Some(mut record) = state.results.read_record(&id).await? else {
        return Err(Page::error(
            StatusCode::NOT_FOUND,
            "No such job (or its record expired).",
        ));
    };
    // A small result is pretty-printed; a big one is shown as stored, its first SHOWN
    // bytes (pretty-printing hostile, deeply nested JSON can multiply its size a
    // hundredfold).
    let result = match record.result.take() {
        Some(r) => Some(
            tokio::task::spawn_blocking(move || {
                let compact = serde_json::to_string(&r).unwrap_or_default();
                if compact.len() <= SHOWN {
                    shown(serde_json::to_string_pretty(&r).unwrap_or(compact))
                } else {
                    shown(compact)
                }
            })
            .await
            .map_err(|_| {
                Page::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The page could not be rendered.",
                )
            })?,
        ),
        None => None,
    };
    let envelope = envelope(&state, &id).await?;
    let webhooks = webhooks::of_job(&mut state.conn(), state.producer.keys(), &id)
        .await
        .map_err(ApiError::from)?;
    let ended = record.status.is_finished();
    let dead = record.status == JobStatus::Dead;
    let waiting = matches!(record.status, JobStatus::Failed | JobStatus::Scheduled);
    Ok(Page::render(
        "job.html",
        json!({
            "session": session_json(&session),
            "page": "jobs",
            "job": record,
            "result": result,
            "envelope": envelope,
            "webhooks": webhooks,
            "can_cancel": !ended,
            "can_requeue": dead,
            "can_run_now": waiting,
        }),
    ))
}

/// The job's envelope as submitted (its payload), pretty-printed, or a line saying why
/// it is not shown: read only when at most [`MAX_ENVELOPE`] bytes (checked in the same
/// script that reads it, so a payload someone else made huge is never read).
async fn envelope(state: &AppState, id: &str) -> Result<Option<String>, Page> {
    use mcpq_core::queue::{Payload, ResultStore};
    let store = ResultStore::new(state.conn(), state.producer.keys().clone());
    let raw = match store
        .payload_within(id, MAX_ENVELOPE)
        .await
        .map_err(ApiError::from)?
    {
        Payload::None => return Ok(None),
        Payload::TooLong(len) => {
            return Ok(Some(format!(
                "({len} bytes: too big to show here; `mcpq dlq show` or the record in Redis has it)"
            )))
        }
        Payload::Read(raw) => raw,
    };
    Ok(Some(match serde_json::from_slice::<Value>(&raw) {
        Ok(v) if raw.len() <= SHOWN => shown(serde_json::to_string_pretty(&v).unwrap_or_default()),
        _ => shown(String::from_utf8_lossy(&raw).into_owned()),
    }))
}

/// A job's status, for its page's live update.
async fn job_status_json(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = crate::jobs::parse_id(&id)?.to_string();
    let record = state.producer.status(&id).await?;
    Ok(Json(json!({"status": record.map(|r| r.status.as_str())})))
}

/// Longest envelope a job's page reads (its first [`SHOWN`] bytes are shown).
const MAX_ENVELOPE: u64 = 1024 * 1024;

/// Most bytes of a result or an envelope a job's page shows (the rest of a result is
/// one click away, at `/v1/jobs/{id}/result`).
const SHOWN: usize = 256 * 1024;

/// `text` cut to [`SHOWN`] bytes (at a character boundary), saying so.
fn shown(mut text: String) -> String {
    if text.len() > SHOWN {
        let mut at = SHOWN;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let more = text.len() - at;
        text.truncate(at);
        text.push_str(&format!(
            "\n... ({more} more bytes: GET /v1/jobs/ID/result)"
        ));
    }
    text
}

async fn cancel(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect, Page> {
    job_action(&session, &form, &id, |id| {
        crate::jobs::cancel(State(state), Extension(caller), Path(id))
    })
    .await
}

async fn run_now(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect, Page> {
    job_action(&session, &form, &id, |id| {
        crate::jobs::run_now(State(state), Extension(caller), Path(id))
    })
    .await
}

/// The steps of every action on one job: its form's CSRF token, the id, then `run`
/// (the HTTP API's own handler, so the same checks and log line), then back to the
/// job's page.
async fn job_action<T, Fut>(
    session: &Session,
    form: &ActionForm,
    id: &str,
    run: impl FnOnce(String) -> Fut,
) -> Result<Redirect, Page>
where
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    check_csrf(session, form)?;
    let id = crate::jobs::parse_id(id)?.to_string();
    run(id.clone()).await?;
    Ok(Redirect::to(&format!("/jobs/{id}")))
}

#[derive(Debug, Deserialize)]
struct DeadQuery {
    kind: Option<String>,
    server: Option<String>,
}

/// Whether dead job `j` matches the kind and server filters (empty: any).
fn dead_matches(j: &control::DeadJob, kind: &str, server: &str) -> bool {
    (kind.is_empty() || j.error_kind == kind)
        && (server.is_empty() || j.server.as_deref() == Some(server))
}

async fn dead_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(query): Query<DeadQuery>,
) -> Result<Page, Page> {
    let (jobs, total) = control::dead_list(&mut state.conn(), state.producer.keys(), DEAD_PAGE)
        .await
        .map_err(ApiError::from)?;
    let kind = query.kind.filter(|k| !k.is_empty());
    let server = query.server.filter(|s| !s.is_empty());
    let mut kinds: Vec<String> = jobs.iter().map(|j| j.error_kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let mut servers: Vec<String> = jobs.iter().filter_map(|j| j.server.clone()).collect();
    servers.sort();
    servers.dedup();
    // A dead-set member is whatever was written there: only a real job id gets links
    // and action forms (a planted `../jobs/X/cancel?` would aim a click elsewhere).
    let shown: Vec<Value> = jobs
        .into_iter()
        .filter(|j| {
            dead_matches(
                j,
                kind.as_deref().unwrap_or_default(),
                server.as_deref().unwrap_or_default(),
            )
        })
        .map(|j| {
            let valid = crate::jobs::parse_id(&j.id).is_ok();
            let mut v = serde_json::to_value(&j).unwrap_or_default();
            if let Some(map) = v.as_object_mut() {
                map.insert("valid".into(), json!(valid));
            }
            v
        })
        .collect();
    Ok(Page::render(
        "dead.html",
        json!({
            "session": session_json(&session),
            "page": "dead",
            "jobs": shown,
            "total": total,
            "read": DEAD_PAGE,
            "kind": kind,
            "kinds": kinds,
            "server": server,
            "servers": servers,
        }),
    ))
}

async fn requeue(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect, Page> {
    job_action(&session, &form, &id, |id| {
        crate::dlq::requeue(State(state), Extension(caller), Path(id))
    })
    .await
}

/// Longest idempotency key looked up.
const MAX_KEY: usize = 1024;

/// The bulk actions' forms: the CSRF token and the ids checked (repeated `id` fields),
/// or the kind filter, or the age.
#[derive(Debug, Deserialize)]
struct BulkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    server: String,
    #[serde(default)]
    older_than: String,
}

/// Requeues the dead jobs checked on `/dead` (at most the page's [`DEAD_PAGE`]).
async fn requeue_selected(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Page, Page> {
    let csrf = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    check_csrf(&session, &ActionForm { csrf })?;
    let ids: Vec<String> = pairs
        .into_iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v)
        .take(DEAD_PAGE)
        .collect();
    let mut requeued = 0;
    for id in &ids {
        let id = crate::jobs::parse_id(id)?.to_string();
        let mut conn = state.conn();
        if control::requeue(&mut conn, state.producer.keys(), &id)
            .await
            .map_err(ApiError::from)?
            == control::Requeued::Yes
        {
            requeued += 1;
        }
    }
    tracing::info!(caller = %session.who, requeued, asked = ids.len(), "dead jobs requeued (selected)");
    Ok(done_page(
        &session,
        &format!("{requeued} of {} selected dead jobs requeued.", ids.len()),
    ))
}

/// Requeues every dead job (no filter), or those of one error kind and/or server among
/// the newest [`DEAD_PAGE`].
async fn requeue_matching(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<BulkForm>,
) -> Result<Page, Page> {
    check_csrf(
        &session,
        &ActionForm {
            csrf: form.csrf.clone(),
        },
    )?;
    let keys = state.producer.keys();
    let mut conn = state.conn();
    let requeued = if form.kind.is_empty() && form.server.is_empty() {
        control::requeue_all(&mut conn, keys)
            .await
            .map_err(ApiError::from)?
    } else {
        let (jobs, _) = control::dead_list(&mut conn, keys, DEAD_PAGE)
            .await
            .map_err(ApiError::from)?;
        let mut n = 0;
        for job in jobs
            .iter()
            .filter(|j| dead_matches(j, &form.kind, &form.server))
        {
            if control::requeue(&mut conn, keys, &job.id)
                .await
                .map_err(ApiError::from)?
                == control::Requeued::Yes
            {
                n += 1;
            }
        }
        n
    };
    tracing::info!(caller = %session.who, requeued, kind = %form.kind, server = %form.server, "dead jobs requeued (matching)");
    Ok(done_page(
        &session,
        &format!("{requeued} dead jobs requeued."),
    ))
}

/// Deletes dead jobs older than `older_than` (a duration: `7d`, `12h`).
async fn purge(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<BulkForm>,
) -> Result<Page, Page> {
    check_csrf(
        &session,
        &ActionForm {
            csrf: form.csrf.clone(),
        },
    )?;
    let age = humantime::parse_duration(form.older_than.trim()).map_err(|_| {
        Page::error(
            StatusCode::BAD_REQUEST,
            "older than: a duration such as 7d or 12h.",
        )
    })?;
    let purged = control::purge_dead(&mut state.conn(), state.producer.keys(), age)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(caller = %session.who, purged, older_than = %form.older_than, "dead jobs purged");
    Ok(done_page(
        &session,
        &format!(
            "{purged} dead jobs older than {} purged.",
            form.older_than.trim()
        ),
    ))
}

/// The page after a bulk action: what it did, and the way back.
fn done_page(session: &Session, message: &str) -> Page {
    Page::render(
        "done.html",
        json!({"session": session_json(session), "page": "dead", "message": message}),
    )
}

/// Batches listed on `/batches`.
const BATCH_PAGE: usize = 50;

/// A batch's counts with its percent, rate (jobs ended per second since it was made)
/// and ETA (seconds, at that rate), as its pages show them.
fn batch_view(b: &mcpq_core::queue::batch::BatchStatus, now: u64) -> Value {
    let done = b.done();
    let until = b.finished_at.unwrap_or(now);
    let secs = until.saturating_sub(b.created_at) as f64 / 1000.0;
    let rate = (secs > 0.0).then(|| done as f64 / secs);
    let eta = match rate {
        Some(r) if r > 0.0 && b.pending > 0 => Some((b.pending as f64 / r).ceil() as u64),
        _ => None,
    };
    let mut v = serde_json::to_value(b).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("done".into(), json!(done));
        map.insert("percent".into(), json!((b.percent() * 10.0).round() / 10.0));
        map.insert(
            "rate".into(),
            json!(rate.map(|r| (r * 10.0).round() / 10.0)),
        );
        map.insert("eta_s".into(), json!(eta));
    }
    v
}

async fn batches_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Page, Page> {
    let batches =
        mcpq_core::queue::batch::list(&mut state.conn(), state.producer.keys(), BATCH_PAGE)
            .await
            .map_err(ApiError::from)?;
    let now = now_ms();
    let views: Vec<Value> = batches.iter().map(|b| batch_view(b, now)).collect();
    Ok(Page::render(
        "batches.html",
        json!({"session": session_json(&session), "page": "batches", "batches": views}),
    ))
}

async fn batch_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Page, Page> {
    let id = crate::jobs::parse_id(&id)?.to_string();
    let Some(b) = mcpq_core::queue::batch::status(&mut state.conn(), state.producer.keys(), &id)
        .await
        .map_err(ApiError::from)?
    else {
        return Err(Page::error(
            StatusCode::NOT_FOUND,
            "No such batch (or it expired).",
        ));
    };
    Ok(Page::render(
        "batch.html",
        json!({"session": session_json(&session), "page": "batches", "batch": batch_view(&b, now_ms())}),
    ))
}

/// A batch's counts, for its page's live update.
async fn batch_json(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = crate::jobs::parse_id(&id)?.to_string();
    let b = mcpq_core::queue::batch::status(&mut state.conn(), state.producer.keys(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no batch {id} (or it expired)")))?;
    Ok(Json(batch_view(&b, now_ms())))
}

async fn servers_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Page, Page> {
    let conn = state.conn();
    let keys = state.producer.keys();
    let newest = servers::read_all(&conn, keys)
        .await
        .map_err(ApiError::from)?;
    let live: Vec<String> = workers::live(&conn, keys)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|w| w.info.id)
        .collect();
    let names: Vec<&str> = state.config.servers.keys().map(String::as_str).collect();
    let by_worker = servers::read_by_worker(&conn, keys, &live, &names)
        .await
        .map_err(ApiError::from)?;
    // Per configured server, one row per live worker that reported it; a server only
    // an older worker reported (no report of its own) shows its newest report.
    let list: Vec<Value> = state
        .config
        .servers
        .iter()
        .map(|(name, s)| {
            let mut reports: Vec<&servers::ServerReport> =
                by_worker.values().filter_map(|r| r.get(name)).collect();
            if reports.is_empty() {
                reports.extend(newest.get(name));
            }
            json!({
                "name": name,
                "transport": if s.url.is_some() { "http" } else { "stdio" },
                "pooled": s.pool,
                "reports": reports,
                "crashes": reports.iter().fold(0u64, |n, r| n.saturating_add(r.crashes)),
            })
        })
        .collect();
    Ok(Page::render(
        "servers.html",
        json!({"session": session_json(&session), "page": "servers", "servers": list,
               "workers_live": live.len(), "workers_read": servers::MAX_WORKERS_READ}),
    ))
}

/// Most limited endpoints the schedules-and-limits page reads (one script each).
const MAX_LIMITS_SHOWN: usize = 100;

async fn schedules_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Page, Page> {
    use mcpq_core::queue::limits::{self, Limits};
    use mcpq_core::queue::schedules::{last_runs, LastRun};
    let keys = state.producer.keys();
    let schedules = state.config.resolved_schedules();
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    let last = last_runs(&mut state.conn(), keys, &names)
        .await
        .map_err(ApiError::from)?;
    let now = now_ms() as i64;
    let rows: Vec<Value> = schedules
        .iter()
        .map(|s| {
            let (last_tick, last_job, problem) = match last.get(&s.name) {
                Some(LastRun::Fired(f)) => (Some(f.tick), Some(f.job.clone()), None),
                Some(LastRun::Unreadable(why)) => (None, None, Some(why.clone())),
                _ => (None, None, None),
            };
            json!({
                "name": s.name,
                "cron": s.pattern,
                "timezone": s.timezone.name(),
                "catch_up": s.catch_up.as_str(),
                "last_tick": last_tick.map(|t| t.max(0) as u64),
                "last_job": last_job,
                "problem": problem,
                "next": s.next_after(now).map(|t| t.max(0) as u64),
            })
        })
        .collect();
    // Every endpoint with a limit: the servers', then the model API's.
    let mut endpoints: Vec<(String, Limits)> = state
        .config
        .servers
        .iter()
        .map(|(name, s)| (limits::server_endpoint(name), Limits::of_server(s)))
        .collect();
    if let Some(llm) = &state.config.llm {
        endpoints.push((limits::LLM_ENDPOINT.to_string(), Limits::of_llm(llm)));
    }
    endpoints.retain(|(_, l)| !l.is_none());
    let mut limited = Vec::new();
    for (endpoint, l) in endpoints.into_iter().take(MAX_LIMITS_SHOWN) {
        let usage = limits::usage(state.conn(), &keys.at(0), &endpoint, &l)
            .await
            .map_err(ApiError::from)?;
        limited.push(json!({
            "endpoint": endpoint,
            "rate": l.rate.map(|r| r.to_string()),
            "rate_count": l.rate.map(|r| r.count),
            "max_concurrent": l.max_concurrent,
            "tokens": l.tokens.map(|r| r.to_string()),
            "tokens_count": l.tokens.map(|r| r.count),
            "usage": usage,
        }));
    }
    Ok(Page::render(
        "schedules.html",
        json!({"session": session_json(&session), "page": "schedules",
               "schedules": rows, "limits": limited}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(name: &str, context: Value) -> String {
        templates()
            .get_template(name)
            .and_then(|t| t.render(context))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
    }

    #[test]
    fn every_page_renders_and_escapes_what_it_is_given() {
        let evil = "<script>alert(1)</script>\"'&";
        let session = json!({"who": evil, "csrf": "c0ffee"});
        let job = json!({
            "id": evil, "kind": "agent", "status": "dead", "priority": "normal",
            "attempts": 1, "max_attempts": 3, "failures": 1, "rescues": 0,
            "worker": evil, "submitted_at": 1, "started_at": 2, "finished_at": 3,
            "error": {"kind": "tool_error", "message": evil, "server": evil, "tool": evil,
                      "stderr_tail": evil, "retryable": false},
            "progress": {"progress": 1, "total": 2, "message": evil},
            "history": [{"attempt": 1, "worker": evil, "started_at": 2, "ended_at": 3,
                         "outcome": evil, "error": {"kind": evil, "message": evil, "stderr_tail": evil}}],
        });
        let pages = [
            ("login.html", json!({"failed": true})),
            ("error.html", json!({"status": 404, "message": evil})),
            (
                "overview.html",
                json!({"session": session, "page": "overview", "data": {
                    "stats": {"queued": {"high": 1, "normal": 2, "low": 3}, "scheduled": 4,
                              "running": 5, "dead": 6},
                    "queued_total": 6, "oldest_queued_age_ms": 7, "totals": {"succeeded": 8},
                    "rate": 1.5, "history": [{"at": 0, "succeeded": 1, "dead": 0, "retried": 0}],
                    "queues": [{"name": evil, "paused": true,
                                "queued": {"high": 1, "normal": 2, "low": 3},
                                "oldest_ms": 70_000, "started_last_minute": 4}],
                    "workers": [{"id": evil, "host": evil, "pid": 1, "running": 0,
                                 "concurrency": 4, "heartbeat_age_ms": 5, "version": evil}]}}),
            ),
            (
                "jobs.html",
                json!({"session": session, "page": "jobs", "statuses": STATUSES,
                       "status": "dead", "batch": evil, "next": evil,
                       "jobs": [{"id": evil, "status": "dead", "kind": evil, "attempts": 1,
                                 "error_kind": evil, "batch": evil}]}),
            ),
            (
                "job.html",
                json!({"session": session, "page": "jobs", "job": job, "result": evil,
                       "envelope": evil, "can_cancel": true, "can_requeue": true,
                       "can_run_now": true,
                       "webhooks": [{"id": evil, "target": evil, "state": evil, "attempts": 1,
                                     "last_attempt_at": 2, "last_status": 500,
                                     "last_response": evil}]}),
            ),
            (
                "dead.html",
                json!({"session": session, "page": "dead", "total": 1, "read": DEAD_PAGE,
                       "kind": evil, "kinds": [evil], "server": evil, "servers": [evil],
                       "jobs": [{"id": evil, "kind": evil, "error_kind": evil,
                                 "error": evil, "attempts": 1, "server": evil, "valid": true},
                                {"id": "../jobs/x/cancel?", "kind": evil, "error_kind": evil,
                                 "error": evil, "attempts": 1, "valid": false}]}),
            ),
            (
                "batches.html",
                json!({"session": session, "page": "batches", "batches": [
                    {"id": evil, "percent": 50.0, "done": 1, "total": 2, "succeeded": 1,
                     "dead": 0, "cancelled": 0, "pending": 1, "rate": 0.5, "eta_s": 2,
                     "created_at": 1}]}),
            ),
            (
                "batch.html",
                json!({"session": session, "page": "batches", "batch": {
                    "id": evil, "percent": 50.0, "done": 1, "total": 2, "succeeded": 1,
                    "dead": 0, "cancelled": 0, "pending": 1, "rate": null, "eta_s": null,
                    "created_at": 1, "finished_at": null, "then": evil, "source": evil}}),
            ),
            (
                "servers.html",
                json!({"session": session, "page": "servers", "workers_live": 101, "workers_read": 100, "servers": [
                    {"name": evil, "transport": "stdio", "pooled": true, "crashes": 2, "reports": [{
                        "worker": evil, "reported_at": 1, "health": evil,
                        "health_clears_in_ms": 5, "pooled": true, "sessions": 1,
                        "in_flight": 0, "tools": [{"name": evil, "description": evil}],
                        "crashes": 2, "last_error": {"at": 1, "message": evil, "stderr_tail": evil}}]},
                    {"name": "quiet", "transport": "http", "pooled": false, "crashes": 0, "reports": []}]}),
            ),
            (
                "schedules.html",
                json!({"session": session, "page": "schedules",
                       "schedules": [{"name": evil, "cron": evil, "timezone": evil, "catch_up": "none",
                                      "last_tick": 1, "last_job": evil, "problem": null, "next": 2},
                                     {"name": "b", "cron": "* * * * *", "timezone": "UTC", "catch_up": "all",
                                      "last_tick": null, "last_job": null, "problem": evil, "next": null}],
                       "limits": [{"endpoint": evil, "rate": "10/s", "rate_count": 10,
                                   "max_concurrent": 2, "tokens": "100/min", "tokens_count": 100,
                                   "usage": {"calls_in_window": 3, "slots_held": 1,
                                             "paused_ms": 1500, "tokens_used": 7}}]}),
            ),
            (
                "done.html",
                json!({"session": session, "page": "dead", "message": evil}),
            ),
        ];
        for (name, context) in pages {
            let html = render(name, context);
            assert!(
                !html.contains("<script>alert"),
                "{name} let markup through:\n{html}"
            );
            assert!(!html.contains("'&"), "{name}");
            assert!(html.contains("/assets/app.js"), "{name}");
            if name != "login.html" && name != "error.html" {
                assert!(html.contains("&lt;script&gt;"), "{name} lost the text");
            }
        }
    }
}
