//! Who is calling: bearer JWTs signed by the service key, with a role and a
//! tenant. Agents hold no such token; they trade their credential for an
//! agent JWT at `POST /v1/tokens` (see [`crate::tokens`]).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Issuer and audience of service tokens: never accepted as agent tokens,
/// and agent tokens (another audience) are never accepted here.
pub const SERVICE_AUDIENCE: &str = "aegis-control";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Approver,
    Viewer,
    Gateway,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "approver" => Some(Role::Approver),
            "viewer" => Some(Role::Viewer),
            "gateway" => Some(Role::Gateway),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
            Role::Gateway => "gateway",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: Role,
    /// A tenant name, or `*` for all tenants.
    pub tenant: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

/// Signs a service token.
pub fn issue(key: &SigningKey, kid: &str, claims: &Claims) -> String {
    let header = Header {
        alg: "EdDSA".into(),
        typ: Some("JWT".into()),
        kid: kid.into(),
    };
    let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let c = serde_json::to_vec(claims).unwrap_or_default();
    let signed = format!("{}.{}", enc(&h), enc(&c));
    let sig = key.sign(signed.as_bytes());
    format!("{signed}.{}", enc(&sig.to_bytes()))
}

/// Checks a service token's signature (by one of `keys`, found by kid),
/// audience and lifetime.
pub fn verify(token: &str, keys: &[(String, VerifyingKey)], now: i64) -> Result<Claims, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the bearer token is not a JWT".into());
    };
    let dec = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| "the bearer token is not a JWT".to_owned())
    };
    let header: Header =
        serde_json::from_slice(&dec(h)?).map_err(|_| "the bearer token has a bad header")?;
    if header.alg != "EdDSA" {
        return Err(format!(
            "bearer token algorithm `{}` is not accepted",
            header.alg
        ));
    }
    let Some((_, key)) = keys.iter().find(|(kid, _)| *kid == header.kid) else {
        return Err(format!(
            "the bearer token's key `{}` is not a key of this service",
            header.kid
        ));
    };
    let sig: [u8; 64] = dec(s)?
        .try_into()
        .map_err(|_| "the bearer token's signature is malformed")?;
    let signed_len = h.len() + 1 + c.len();
    let signed = token.get(..signed_len).unwrap_or_default();
    key.verify_strict(signed.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| "the bearer token's signature is invalid")?;
    let claims: Claims = serde_json::from_slice(&dec(c)?)
        .map_err(|e| format!("the bearer token's claims are not a service token: {e}"))?;
    if claims.aud != SERVICE_AUDIENCE {
        return Err("the bearer token is not for this service (audience)".into());
    }
    // An empty tenant would match the empty filter that means "every
    // tenant" to a `*` token.
    if !valid_tenant(&claims.tenant) {
        return Err("the bearer token names no valid tenant".into());
    }
    if claims.exp <= now {
        return Err("the bearer token has expired".into());
    }
    if claims.iat > now + 60 {
        return Err("the bearer token is not valid yet".into());
    }
    Ok(claims)
}

/// Whether `tenant` may be a service token's tenant: `*` or a name.
pub fn valid_tenant(tenant: &str) -> bool {
    tenant == "*" || crate::api::name("tenant", tenant).is_ok()
}

/// The authenticated caller of an API call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub tenant: String,
    pub subject: String,
}

impl Caller {
    /// Fails unless the caller has one of `roles` (admins pass every check).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            return Ok(());
        }
        let want: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::forbidden(
            "wrong_role",
            format!(
                "this call needs the role {}; the token has `{}`",
                want.join(" or "),
                self.role.as_str()
            ),
        ))
    }

    /// Whether the caller may see `tenant`'s data.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant == "*" || self.tenant == tenant
    }

    /// Fails unless the caller may act on `tenant`.
    pub fn require_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        if self.sees(tenant) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "other_tenant",
                format!("the token is for tenant `{}`, not `{tenant}`", self.tenant),
            ))
        }
    }

    /// The tenant a list call reads: the one `asked` for (if the caller
    /// may see it), else the caller's own; empty means every tenant (a `*`
    /// caller that asked for none).
    pub fn list_tenant(&self, asked: Option<&str>) -> Result<String, ApiError> {
        match (asked, self.tenant.as_str()) {
            (Some(t), _) => {
                self.require_tenant(t)?;
                Ok(t.to_owned())
            }
            (None, "*") => Ok(String::new()),
            (None, own) => Ok(own.to_owned()),
        }
    }

    /// The audit log's name for the caller: `role:subject`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.subject)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized("missing `Authorization: Bearer <token>` header")
            })?;
        let text = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("the authorization header is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("the authorization header must be `Bearer <token>`")
            })?;
        let claims = verify(
            token.trim(),
            &state.keys.service_verifiers(),
            crate::store::now_ms() / 1000,
        )
        .map_err(ApiError::unauthorized)?;
        Ok(Caller {
            role: claims.role,
            tenant: claims.tenant,
            subject: claims.sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(key: &SigningKey, tenant: &str) -> String {
        issue(
            key,
            "k1",
            &Claims {
                iss: SERVICE_AUDIENCE.into(),
                aud: SERVICE_AUDIENCE.into(),
                sub: "s".into(),
                role: Role::Viewer,
                tenant: tenant.into(),
                iat: 1000,
                exp: 2000,
            },
        )
    }

    #[test]
    fn tenant_is_a_name_or_all() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let keys = [("k1".to_owned(), key.verifying_key())];
        for ok in ["*", "acme", "default"] {
            assert_eq!(
                verify(&token(&key, ok), &keys, 1500).map(|c| c.tenant),
                Ok(ok.to_owned())
            );
        }
        for bad in ["", "a\nb"] {
            assert_eq!(
                verify(&token(&key, bad), &keys, 1500).map(|c| c.tenant),
                Err("the bearer token names no valid tenant".to_owned()),
                "{bad:?}"
            );
        }
    }
}
