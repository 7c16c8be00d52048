//! The OpenAPI 3.1 description of the API, generated from the handlers' and records'
//! types (utoipa), served at `/openapi.json`; CI checks it with a validator.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{batches, dlq, health, jobs, metrics, servers};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mcpq",
        description = "mcpq's HTTP API: submit jobs that run MCP tools, wait for their results, follow batches, manage dead letters. Every route but /health needs `Authorization: Bearer <token>`."
    ),
    paths(
        jobs::submit,
        jobs::list,
        jobs::status,
        jobs::result,
        jobs::cancel,
        jobs::run_now,
        batches::submit,
        batches::list,
        batches::status,
        batches::results,
        dlq::list,
        dlq::requeue,
        servers::list,
        health::health,
        metrics::metrics,
    ),
    modifiers(&Bearer),
    tags(
        (name = "jobs", description = "One job at a time"),
        (name = "batches", description = "Many jobs as one"),
        (name = "dlq", description = "The dead-letter set"),
        (name = "servers", description = "The MCP servers jobs may use"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the routes name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
