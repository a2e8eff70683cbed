//! Who may read which partners: bearer JWTs (RS256 or ES256) verified against the keys of a
//! local JWKS file, which is re-read when it changes (key rotation without a restart).
//!
//! A token names what its holder may do in `scope` (`scores:read`, `scores:list`,
//! `scores:watch`, space-separated) and which partners it may see in `partners` (a list of
//! ids, or `"*"` for all). `iss`, `aud` and `exp` are always checked, `nbf` when present.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

/// Seconds of clock difference tolerated between the token issuer and this host.
const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send metadata `authorization: Bearer <JWT>`")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("the token lacks scope {0}")]
    MissingScope(&'static str),
    #[error("the token does not allow {0}")]
    Forbidden(String),
    #[error("JWKS file {path}: {message}")]
    Jwks { path: PathBuf, message: String },
}

/// What an RPC needs the caller to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    List,
    Watch,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "scores:read",
            Scope::List => "scores:list",
            Scope::Watch => "scores:watch",
        }
    }
}

/// The partners a caller may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partners {
    All,
    Only(HashSet<String>),
}

/// A verified caller (or, without authentication configured, anyone).
#[derive(Clone, Debug)]
pub struct Caller {
    pub partners: Partners,
}

impl Caller {
    /// The caller when no authentication is configured.
    pub fn unrestricted() -> Caller {
        Caller { partners: Partners::All }
    }

    pub fn may_see(&self, partner_id: &str) -> bool {
        match &self.partners {
            Partners::All => true,
            Partners::Only(ids) => ids.contains(partner_id),
        }
    }

    /// Refuses unless every partner in `ids` is allowed. The refusal names only ids the
    /// caller itself sent, so it reveals nothing about which partners exist.
    pub fn require_all<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Result<(), AuthError> {
        let forbidden: Vec<&str> = ids.into_iter().filter(|id| !self.may_see(id)).map(String::as_str).collect();
        if forbidden.is_empty() {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!("partner(s) {}", forbidden.join(", "))))
        }
    }

    pub fn require_every_partner(&self) -> Result<(), AuthError> {
        match self.partners {
            Partners::All => Ok(()),
            Partners::Only(_) => Err(AuthError::Forbidden("all partners (needs \"partners\": \"*\")".into())),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    scope: String,
    #[serde(default)]
    partners: PartnersClaim,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum PartnersClaim {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl PartnersClaim {
    fn into_partners(self) -> Partners {
        let ids = match self {
            PartnersClaim::None => Vec::new(),
            PartnersClaim::One(id) => vec![id],
            PartnersClaim::Many(ids) => ids,
        };
        if ids.iter().any(|id| id == "*") { Partners::All } else { Partners::Only(ids.into_iter().collect()) }
    }
}

/// One usable key of the JWKS.
struct VerificationKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

struct LoadedKeys {
    /// The file's modification time and length when read: a change to either reloads it.
    stamp: Option<(SystemTime, u64)>,
    keys: Vec<VerificationKey>,
}

pub struct Authenticator {
    path: PathBuf,
    issuer: String,
    audience: String,
    keys: RwLock<LoadedKeys>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// The RS256 and ES256 keys of a JWKS document; other keys are skipped (with a warning), as
/// only these two algorithms are accepted.
fn parse_jwks(path: &Path, text: &str) -> Result<Vec<VerificationKey>, AuthError> {
    let fail = |message: String| AuthError::Jwks { path: path.to_owned(), message };
    let set: JwkSet = serde_json::from_str(text).map_err(|e| fail(format!("not a JWKS document: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => {
                tracing::warn!(path = %path.display(), kid = ?jwk.common.key_id, "JWKS key skipped: only RSA (RS256) and P-256 (ES256) keys are used");
                continue;
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(format!("key {:?}: {e}", jwk.common.key_id)))?;
        keys.push(VerificationKey { kid: jwk.common.key_id.clone(), algorithm, key });
    }
    Ok(keys)
}

fn read_jwks(path: &Path) -> Result<LoadedKeys, AuthError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuthError::Jwks { path: path.to_owned(), message: format!("cannot read: {e}") })?;
    Ok(LoadedKeys { stamp, keys: parse_jwks(path, &text)? })
}

impl Authenticator {
    /// Reads the JWKS file; a file that cannot be read or parsed stops the start-up.
    pub fn load(path: &Path, issuer: &str, audience: &str) -> Result<Authenticator, AuthError> {
        let keys = read_jwks(path)?;
        tracing::info!(path = %path.display(), keys = keys.keys.len(), "JWKS loaded");
        Ok(Authenticator {
            path: path.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: RwLock::new(keys),
        })
    }

    /// Re-reads the JWKS file if it changed. A broken new file keeps the old keys (and is
    /// logged): a bad deploy of the key file must not lock every caller out.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.path);
        if now == self.keys.read().expect("not poisoned").stamp {
            return;
        }
        match read_jwks(&self.path) {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.keys.len(), "JWKS reloaded");
                *self.keys.write().expect("not poisoned") = keys;
            }
            Err(e) => tracing::error!(error = %e, "JWKS changed but cannot be used; keeping the previous keys"),
        }
    }

    /// Checks the bearer token in `metadata` and that it carries `scope`.
    pub fn verify(&self, metadata: &tonic::metadata::MetadataMap, scope: Scope) -> Result<Caller, AuthError> {
        let header = metadata.get("authorization").ok_or(AuthError::MissingToken)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or(AuthError::MissingToken)?
            .trim();
        // Only RS256 and ES256 verify: `none`, HMAC (which would turn a public key into a
        // shared secret) and anything else are refused before any key is tried.
        let header = decode_header(token).map_err(|e| AuthError::InvalidToken(format!("unreadable header: {e}")))?;
        let (algorithm, kid) = (header.alg, header.kid);
        if !matches!(algorithm, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::InvalidToken(format!("algorithm {algorithm:?} is not accepted (RS256, ES256)")));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let keys = self.keys.read().expect("not poisoned");
        let candidates = keys
            .keys
            .iter()
            .filter(|k| k.algorithm == algorithm && (kid.is_none() || k.kid == kid))
            .collect::<Vec<_>>();
        if candidates.is_empty() {
            return Err(AuthError::InvalidToken(format!("no {algorithm:?} key with kid {kid:?} in the JWKS")));
        }
        let mut last_error = String::new();
        for key in candidates {
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    if !data.claims.scope.split_whitespace().any(|s| s == scope.name()) {
                        return Err(AuthError::MissingScope(scope.name()));
                    }
                    return Ok(Caller { partners: data.claims.partners.into_partners() });
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(AuthError::InvalidToken(last_error))
    }
}
