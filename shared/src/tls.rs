//! TLS for the HTTP clients (model APIs, streamable-HTTP MCP servers): rustls with the
//! *ring* crypto provider (the one lettre's SMTP client uses too), and the platform's
//! certificate store (rustls-platform-verifier).
//!
//! [`install`] must run before an HTTPS client is built; it is idempotent, and the
//! places that build clients call it.

/// Installs *ring* as the process-wide rustls provider (no-op after the first call).
pub fn install() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
