//! Redis over TLS: a private TLS-only `redis-server` with certificates made here (a
//! test CA, a server certificate for 127.0.0.1, a client certificate for mTLS), and
//! the real `mcpq` and `mcpq-worker` binaries configured with `rediss://` and `[redis]`.

use std::path::Path;
use std::time::Duration;

use mcpq_tests::redis_sentinel::SentinelSet;
use mcpq_tests::redis_tls::{write_file, ServerCerts, TlsRedis};
use mcpq_tests::{text, TestEnv, TEST_QUEUE};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

/// Certificate files of one test, in their own directory (removed on drop).
struct Pki {
    dir: std::path::PathBuf,
    ca: Ca,
    server: ServerCerts,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "mcpq-tls-pki-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::generate()
        ));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let ca = ca("mcpq test CA");
        let (cert, key) = leaf(&ca, "redis", ExtendedKeyUsagePurpose::ServerAuth);
        let server = ServerCerts {
            cert: write_file(&dir, "server.pem", &cert),
            key: write_file(&dir, "server.key", &key),
            ca: write_file(&dir, "ca.pem", &ca.pem),
        };
        Pki { dir, ca, server }
    }

    /// Writes the CA and a fresh client certificate into `dir` as `ca.pem`,
    /// `client.pem`, `client.key` (relative names in a config there).
    fn give_client_files(&self, dir: &Path) {
        write_file(dir, "ca.pem", &self.ca.pem);
        let (cert, key) = leaf(&self.ca, "mcpq", ExtendedKeyUsagePurpose::ClientAuth);
        write_file(dir, "client.pem", &cert);
        write_file(dir, "client.key", &key);
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env_on(redis: &TlsRedis, tag: &str, redis_table: &str) -> TestEnv {
    TestEnv::on_redis(
        &redis.url(),
        tag,
        TEST_QUEUE,
        &format!("[redis]\n{redis_table}\n"),
        "",
    )
}

/// Submits one echo job and waits for it through the CLI; asserts it succeeded.
fn echo_round_trip(env: &TestEnv, words: &str) {
    let id = env.submit_call(
        "echo",
        "echo",
        &format!(r#"{{"text":"{words}"}}"#),
        &["--timeout", "30s"],
    );
    let out = env.mcpq(&["wait", &id, "--timeout", "30s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("step 0 echo/echo: {words}")
    );
}

/// `mcpq submit` of an echo job: its output.
fn try_submit(env: &TestEnv) -> std::process::Output {
    env.mcpq(&[
        "submit",
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
        "--args",
        r#"{"text":"x"}"#,
    ])
}

#[test]
fn jobs_run_over_tls_when_redis_ca_file_names_the_servers_ca() {
    let pki = Pki::new("ca");
    let redis = TlsRedis::start("ca", &pki.server, false);
    // A relative ca_file: read next to the config file.
    let env = env_on(&redis, "tls-ca", "ca_file = \"ca.pem\"");
    pki.give_client_files(&env.dir);
    let worker = env.started_worker(&[]);
    echo_round_trip(&env, "over tls");
    assert!(
        !worker
            .log_text()
            .contains("does not check the server's certificate"),
        "no insecure warning without insecure = true"
    );
}

#[test]
fn a_server_certificate_from_another_ca_exits_3_and_says_to_set_ca_file() {
    let pki = Pki::new("wrong-ca");
    let redis = TlsRedis::start("wrong-ca", &pki.server, false);
    let other = ca("some other CA");
    for (tag, table) in [
        ("tls-other-ca", "ca_file = \"other-ca.pem\""),
        // No ca_file: the platform's roots, which do not hold the test CA either.
        ("tls-platform-roots", ""),
    ] {
        let env = env_on(&redis, tag, table);
        write_file(&env.dir, "other-ca.pem", &other.pem);
        let out = try_submit(&env);
        let stderr = text(&out.stderr);
        eprintln!("{tag}: mcpq submit said: {}", stderr.trim());
        assert_eq!(out.status.code(), Some(3), "{tag}: {stderr}");
        assert!(
            stderr.contains("the server's TLS certificate is not trusted (unknown issuer)")
                && stderr.contains("set redis.ca_file"),
            "{tag}: {stderr}"
        );
    }
}

#[test]
fn mtls_needs_cert_file_and_key_file_and_works_with_them() {
    let pki = Pki::new("mtls");
    let redis = TlsRedis::start("mtls", &pki.server, true);

    let without = env_on(&redis, "tls-no-client-cert", "ca_file = \"ca.pem\"");
    pki.give_client_files(&without.dir);
    let out = try_submit(&without);
    let stderr = text(&out.stderr);
    eprintln!("no client certificate: mcpq submit said: {}", stderr.trim());
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("client certificate") && stderr.contains("redis.cert_file"),
        "{stderr}"
    );

    let with = env_on(
        &redis,
        "tls-client-cert",
        "ca_file = \"ca.pem\"\ncert_file = \"client.pem\"\nkey_file = \"client.key\"",
    );
    pki.give_client_files(&with.dir);
    let _worker = with.started_worker(&[]);
    echo_round_trip(&with, "mutual");
}

#[test]
fn insecure_connects_without_ca_file_and_says_so_in_the_log() {
    let pki = Pki::new("insecure");
    let redis = TlsRedis::start("insecure", &pki.server, false);
    let env = env_on(&redis, "tls-insecure", "insecure = true");
    let worker = env.started_worker(&[]);
    echo_round_trip(&env, "unchecked");
    assert!(
        worker
            .log_text()
            .contains("does not check the server's certificate"),
        "the worker warns about insecure = true:\n{}",
        worker.log_text()
    );
}

#[test]
fn a_missing_or_malformed_tls_file_is_a_config_error_naming_key_and_file() {
    let pki = Pki::new("bad-files");
    let redis = TlsRedis::start("bad-files", &pki.server, false);
    for (tag, table, key, file) in [
        (
            "tls-missing-ca",
            "ca_file = \"nope.pem\"",
            "redis.ca_file",
            "nope.pem",
        ),
        (
            "tls-garbage-ca",
            "ca_file = \"garbage.pem\"",
            "redis.ca_file",
            "garbage.pem",
        ),
        (
            "tls-garbage-key",
            "cert_file = \"client.pem\"\nkey_file = \"garbage.pem\"",
            "redis.key_file",
            "garbage.pem",
        ),
    ] {
        let env = env_on(&redis, tag, table);
        pki.give_client_files(&env.dir);
        write_file(&env.dir, "garbage.pem", "not PEM at all\n");
        let out = try_submit(&env);
        let stderr = text(&out.stderr);
        eprintln!("{tag}: mcpq submit said: {}", stderr.trim());
        assert_eq!(out.status.code(), Some(2), "{tag}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(file),
            "{tag}: {stderr}"
        );
    }
}

#[test]
fn a_sentinel_deployment_over_tls_serves_jobs_across_a_failover() {
    let pki = Pki::new("sentinel");
    let set = SentinelSet::start_tls("tls", &pki.server);
    let env = TestEnv::on_redis(
        &set.url(),
        "tls-sentinel",
        TEST_QUEUE,
        "[redis]\nca_file = \"ca.pem\"\n",
        "",
    );
    pki.give_client_files(&env.dir);
    let worker = env.started_worker(&[]);
    echo_round_trip(&env, "before the failover");
    let old = set.master_port().expect("master");
    let new = set.failover(Duration::from_secs(30));
    assert_ne!(old, new);
    echo_round_trip(&env, "after the failover");
    assert!(
        worker.log_text().contains("Redis master moved from"),
        "the worker followed the master over TLS:\n{}",
        worker.log_text()
    );
}
