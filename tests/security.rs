//! Security (issue 8): bearer JWTs against every RPC, mutual TLS, and Redis credentials,
//! against a real broker and a real redis-server. Keys and certificates are made here.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pcs::proto::{self, partner_score_service_client::PartnerScoreServiceClient};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Broker, Redis, free_port, produce_lines};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

const ISSUER: &str = "https://login.example.test/tenant";
const AUDIENCE: &str = "pcs-scores";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pcs-security-{name}-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An RSA key made by openssl (rcgen cannot make RSA keys): its PKCS#8 PEM and its JWK.
fn rsa_key(dir: &Path, kid: &str) -> (EncodingKey, Value) {
    let path = dir.join(format!("{kid}.pem"));
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed by scripts/test");
    assert!(made.success());
    let modulus = Command::new("openssl").args(["rsa", "-noout", "-modulus", "-in"]).arg(&path).output().unwrap();
    let hex = String::from_utf8(modulus.stdout).unwrap().trim().trim_start_matches("Modulus=").to_owned();
    let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let pem = std::fs::read(&path).unwrap();
    let jwk =
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"});
    (EncodingKey::from_rsa_pem(&pem).unwrap(), jwk)
}

/// A P-256 key (ES256): its encoding key and its JWK.
fn ec_key(kid: &str) -> (EncodingKey, Value) {
    let key = KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
    let jwk = json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..])});
    (EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(), jwk)
}

fn write_jwks(path: &Path, keys: &[&Value]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({ "keys": keys }).to_string()).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn claims(scope: &str, partners: Value) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "insights-feed", "iat": now(), "exp": now() + 600,
        "scope": scope, "partners": partners})
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

const ALL: &str = "scores:read scores:list scores:watch";

fn acr(event: &str, partner: &str) -> String {
    format!(
        r#"{{"type":"acr","event_id":"{event}","partner_id":"{partner}","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-06","amount_micros":"1000000"}}"#
    )
}

/// What each RPC answers for one token: the code of GetScore, BatchGetScores, ListScores
/// and WatchScores (on partner P2, or all four partners for Batch and List).
struct Answers {
    get: Code,
    batch: Code,
    list: Code,
    watch: Code,
    messages: Vec<String>,
}

async fn ask(client: &mut PartnerScoreServiceClient<Channel>, token: Option<&str>) -> Answers {
    let code = |r: Result<_, tonic::Status>, messages: &mut Vec<String>| match r {
        Ok(_) => Code::Ok,
        Err(s) => {
            messages.push(s.message().to_owned());
            s.code()
        }
    };
    let mut messages = Vec::new();
    let get =
        client.get_score(with_token(proto::GetScoreRequest { partner_id: "P2".into(), as_of: None }, token)).await;
    let get = code(get.map(drop), &mut messages);
    let batch = client
        .batch_get_scores(with_token(
            proto::BatchGetScoresRequest { partner_ids: vec!["P1".into(), "P2".into()] },
            token,
        ))
        .await;
    let batch = code(batch.map(drop), &mut messages);
    let list = client.list_scores(with_token(proto::ListScoresRequest::default(), token)).await;
    let list = code(list.map(drop), &mut messages);
    let watch = client
        .watch_scores(with_token(
            proto::WatchScoresRequest { partner_ids: vec!["P2".into()], all: false, resume_cursor: String::new() },
            token,
        ))
        .await;
    let watch = code(watch.map(drop), &mut messages);
    Answers { get, batch, list, watch, messages }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_on_every_rpc_and_nothing_leaks_about_forbidden_partners() {
    let broker = Broker::start();
    let redis = Redis::start();
    let dir = temp_dir("tokens");
    let (rsa, rsa_jwk) = rsa_key(&dir, "rsa-1");
    let (ec, ec_jwk) = ec_key("ec-1");
    let (stranger, _) = ec_key("ec-1");
    let jwks = dir.join("jwks.json");
    write_jwks(&jwks, &[&rsa_jwk, &ec_jwk]);

    let mut config = support::config(&broker, &redis, "tokens", "2024-07-10");
    config.jwks = Some(jwks.clone());
    config.jwt_issuer = Some(ISSUER.into());
    config.jwt_audience = Some(AUDIENCE.into());
    let service = support::Service::start(config).await;
    produce_lines(&broker.bootstrap, "tokens.events", &[acr("e1", "P1"), acr("e2", "P2"), acr("e3", "P3")].join("\n"))
        .await;
    let mut client = service.client().await;
    let everything = sign(Algorithm::RS256, "rsa-1", &rsa, &claims(ALL, json!("*")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get_score(with_token(proto::GetScoreRequest { partner_id: "P3".into(), as_of: None }, Some(&everything)))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "events never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Health and reflection stay open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(service.channel().await.unwrap());
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();

    let unauthenticated = Answers {
        get: Code::Unauthenticated,
        batch: Code::Unauthenticated,
        list: Code::Unauthenticated,
        watch: Code::Unauthenticated,
        messages: Vec::new(),
    };
    let mut expired = claims(ALL, json!("*"));
    expired["exp"] = json!(now() - 3600);
    let mut not_yet = claims(ALL, json!("*"));
    not_yet["nbf"] = json!(now() + 3600);
    let mut wrong_audience = claims(ALL, json!("*"));
    wrong_audience["aud"] = json!("another-service");
    let mut wrong_issuer = claims(ALL, json!("*"));
    wrong_issuer["iss"] = json!("https://evil.example.test/");
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(ALL, json!("*")).to_string())
    );
    let hmac_with_public_key = sign(
        Algorithm::HS256,
        "rsa-1",
        &EncodingKey::from_secret(rsa_jwk["n"].as_str().unwrap().as_bytes()),
        &claims(ALL, json!("*")),
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("not.a.token".into())),
        ("expired", Some(sign(Algorithm::RS256, "rsa-1", &rsa, &expired))),
        ("not yet valid", Some(sign(Algorithm::ES256, "ec-1", &ec, &not_yet))),
        ("wrong audience", Some(sign(Algorithm::RS256, "rsa-1", &rsa, &wrong_audience))),
        ("wrong issuer", Some(sign(Algorithm::ES256, "ec-1", &ec, &wrong_issuer))),
        ("bad signature", Some(sign(Algorithm::ES256, "ec-1", &stranger, &claims(ALL, json!("*"))))),
        ("alg none", Some(unsigned)),
        ("HS256 with the public key as secret", Some(hmac_with_public_key)),
        ("unknown kid", Some(sign(Algorithm::ES256, "ec-9", &ec, &claims(ALL, json!("*"))))),
    ];
    for (case, token) in &cases {
        let answers = ask(&mut client, token.as_deref()).await;
        assert_eq!(
            (answers.get, answers.batch, answers.list, answers.watch),
            (unauthenticated.get, unauthenticated.batch, unauthenticated.list, unauthenticated.watch),
            "{case}: {:?}",
            answers.messages
        );
    }

    // A valid token without the scope an RPC needs.
    let read_only = sign(Algorithm::RS256, "rsa-1", &rsa, &claims("scores:read", json!("*")));
    let answers = ask(&mut client, Some(&read_only)).await;
    assert_eq!(
        (answers.get, answers.batch, answers.list, answers.watch),
        (Code::Ok, Code::Ok, Code::PermissionDenied, Code::PermissionDenied)
    );
    assert!(answers.messages.iter().all(|m| m.contains("scores:")), "{:?}", answers.messages);

    // Another partner: P1 only. Asking for P2 (which exists) and P9 (which does not) gives
    // the same refusal, before any lookup.
    let p1_only = sign(Algorithm::ES256, "ec-1", &ec, &claims(ALL, json!(["P1"])));
    let answers = ask(&mut client, Some(&p1_only)).await;
    assert_eq!(
        (answers.get, answers.batch, answers.list, answers.watch),
        (Code::PermissionDenied, Code::PermissionDenied, Code::Ok, Code::PermissionDenied)
    );
    let refusal = |id: &str| {
        let mut client = client.clone();
        let token = p1_only.clone();
        let id = id.to_owned();
        async move {
            let status = client
                .get_score(with_token(proto::GetScoreRequest { partner_id: id, as_of: None }, Some(&token)))
                .await
                .unwrap_err();
            (status.code(), status.message().to_owned())
        }
    };
    let (existing, missing) = (refusal("P2").await, refusal("P9").await);
    assert_eq!((existing.0, existing.1.replace("P2", "X")), (missing.0, missing.1.replace("P9", "X")));
    for message in &answers.messages {
        assert!(!message.contains("P3"), "a refusal names only partners the caller asked for: {message}");
    }
    // ListScores shows P1 only; watching everyone needs "*".
    let listed =
        client.list_scores(with_token(proto::ListScoresRequest::default(), Some(&p1_only))).await.unwrap().into_inner();
    let ids: Vec<&str> = listed.scores.iter().map(|s| s.partner_id.as_str()).collect();
    assert_eq!(ids, ["P1"]);
    let all = proto::WatchScoresRequest { partner_ids: Vec::new(), all: true, resume_cursor: String::new() };
    let status = client.watch_scores(with_token(all.clone(), Some(&p1_only))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let batch = proto::BatchGetScoresRequest { partner_ids: vec!["P1".into()] };
    let got = client.batch_get_scores(with_token(batch, Some(&p1_only))).await.unwrap().into_inner();
    assert_eq!(got.scores.len(), 1);

    // A P1 watcher sees P1's change and nothing of P2's.
    let watch = proto::WatchScoresRequest { partner_ids: vec!["P1".into()], all: false, resume_cursor: String::new() };
    let mut stream = client.watch_scores(with_token(watch, Some(&p1_only))).await.unwrap().into_inner();
    produce_lines(&broker.bootstrap, "tokens.events", &[acr("e4", "P2"), acr("e5", "P1")].join("\n")).await;
    let change = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(change.score.unwrap().partner_id, "P1");

    // "*" sees everything, with either key type.
    for token in [everything.clone(), sign(Algorithm::ES256, "ec-1", &ec, &claims(ALL, json!(["*"])))] {
        let answers = ask(&mut client, Some(&token)).await;
        assert_eq!((answers.get, answers.batch, answers.list, answers.watch), (Code::Ok, Code::Ok, Code::Ok, Code::Ok));
        assert!(client.watch_scores(with_token(all.clone(), Some(&token))).await.is_ok());
    }

    // Key rotation: a new key in the file is used without a restart; a removed one is not.
    let (rotated, rotated_jwk) = ec_key("ec-2");
    write_jwks(&jwks, &[&rsa_jwk, &rotated_jwk]);
    let new_token = sign(Algorithm::ES256, "ec-2", &rotated, &claims(ALL, json!("*")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while ask(&mut client, Some(&new_token)).await.get != Code::Ok {
        assert!(Instant::now() < deadline, "the rotated JWKS was not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old_token = sign(Algorithm::ES256, "ec-1", &ec, &claims(ALL, json!("*")));
    assert_eq!(ask(&mut client, Some(&old_token)).await.get, Code::Unauthenticated);
    service.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A CA and a certificate it issued, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(subject: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![subject.to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

async fn tls_client(
    addr: &str,
    server_ca: &str,
    identity: Option<&Pki>,
) -> Result<PartnerScoreServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(server_ca)).domain_name("localhost");
    if let Some(p) = identity {
        tls = tls.identity(Identity::from_pem(&p.cert, &p.key));
    }
    let channel = Channel::from_shared(addr.to_owned()).unwrap().tls_config(tls)?.connect().await?;
    Ok(PartnerScoreServiceClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_trusted_clients_only() {
    let broker = Broker::start();
    let redis = Redis::start();
    let dir = temp_dir("mtls");
    let server = pki("localhost");
    let trusted = pki("insights-feed");
    let untrusted = pki("insights-feed");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut config = support::config(&broker, &redis, "mtls", "2024-07-10");
    config.tls_cert = Some(write("server.pem", &server.cert));
    config.tls_key = Some(write("server.key", &server.key));
    config.tls_client_ca = Some(write("clients-ca.pem", &trusted.ca));
    let addr = format!("https://localhost:{}", config.listen.port());
    let (shutdown, _) = tokio::sync::broadcast::channel(1);
    let task = tokio::spawn(pcs::service::serve(config, shutdown.clone()));

    let get = proto::GetScoreRequest { partner_id: "P1".into(), as_of: None };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = loop {
        if let Ok(c) = tls_client(&addr, &server.ca, Some(&trusted)).await {
            break c;
        }
        assert!(Instant::now() < deadline, "the TLS server never accepted the trusted client");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Served: the partner has no score yet, which the service says.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get_score(get.clone()).await {
            Err(s) if s.code() == Code::NotFound => break,
            other => assert!(Instant::now() < deadline, "trusted client not served: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (who, identity) in [("untrusted certificate", Some(&untrusted)), ("no certificate", None)] {
        let refused = match tls_client(&addr, &server.ca, identity).await {
            Err(_) => true,
            // The handshake fails: a transport error, never an answer from the service.
            Ok(mut c) => match c.get_score(get.clone()).await {
                Err(s) => {
                    eprintln!("{who}: {:?} {}", s.code(), s.message());
                    !matches!(s.code(), Code::NotFound | Code::Ok)
                }
                Ok(_) => false,
            },
        };
        assert!(refused, "a client with {who} was served");
    }
    // Plain text is refused too.
    let plain = format!("http://127.0.0.1:{}", addr.rsplit(':').next().unwrap());
    let plain_refused = match PartnerScoreServiceClient::connect(plain).await {
        Err(_) => true,
        Ok(mut c) => c.get_score(get.clone()).await.is_err(),
    };
    assert!(plain_refused);
    let _ = shutdown.send(());
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_credentials_work_and_never_reach_the_log() {
    const PASSWORD: &str = "s3cret-acl-Pa55word";
    const DEFAULT_PASSWORD: &str = "default-Pa55word-x9";
    let broker = Broker::start();
    let redis = Redis::start_with(&[
        "--requirepass",
        DEFAULT_PASSWORD,
        "--user",
        "pcs",
        "on",
        &format!(">{PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]);
    let topic = "creds.events";
    let dir = temp_dir("creds");
    // The log goes to a file: a debug log fills a pipe nobody reads and blocks the service.
    let run = |url: String, port: u16| {
        let log = dir.join(format!("{port}.log"));
        let child = support::serve_command(&broker, &redis, port)
            .env("PCS_REDIS_URL", url)
            .env("PCS_EVENTS_TOPIC", topic)
            .env("PCS_GROUP_ID", format!("creds-{port}"))
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .spawn()
            .unwrap();
        (child, log)
    };
    let port = free_port();
    let good = run(format!("redis://pcs:{PASSWORD}@127.0.0.1:{}", redis.port), port);
    let addr = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(channel) = Channel::from_shared(addr.clone()).unwrap().connect().await {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            if health.check(request).await.is_ok_and(|r| r.into_inner().status == 1) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the service never became SERVING with the ACL user");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce_lines(&broker.bootstrap, topic, &acr("c1", "P1")).await;
    loop {
        if let Ok(mut c) = PartnerScoreServiceClient::connect(addr.clone()).await
            && c.get_score(proto::GetScoreRequest { partner_id: "P1".into(), as_of: None }).await.is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the service never scored P1 through the ACL user");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A wrong password: the service runs, not serving, and logs why, without the password.
    let bad_port = free_port();
    let bad = run(format!("redis://pcs:wrong-{PASSWORD}@127.0.0.1:{}", redis.port), bad_port);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for ((mut child, log), expected) in [(good, "starting pcs serve"), (bad, "Password authentication failed")] {
        // SIGTERM: the service shuts down cleanly and its log is complete.
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        child.wait().unwrap();
        let log = std::fs::read_to_string(&log).unwrap() + &std::fs::read_to_string(log.with_extension("out")).unwrap();
        assert!(log.contains(expected), "the log lacks {expected:?}:\n{log}");
        assert!(!log.contains(PASSWORD), "the Redis password appeared in the log:\n{log}");
        assert!(!log.contains(DEFAULT_PASSWORD));
    }
    let _ = std::fs::remove_dir_all(dir);
}
