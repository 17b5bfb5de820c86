//! Compact JWS (EdDSA, RFC 8037) verification for agent identity tokens.
//!
//! Agents present a short-lived JWT signed with Ed25519; [`verify`] turns it
//! into a [`Principal`] (agent, tenant, scope) or a [`JwtError`]. The trusted
//! keys are parsed once at configure time into [`VerifyingKeys`]; a
//! verification then runs on fixed stack buffers and never touches the heap.
//!
//! Deliberately narrow, because every option a JWT library offers is an
//! attack surface: compact serialization only, `alg` must be `EdDSA` (or the
//! RFC 9864 name `Ed25519`), keys are chosen only by `kid` among the
//! configured ones (embedded `jwk`/`jku`/`x5u`/`x5c` are never trusted),
//! `crit` is rejected, and a duplicate member anywhere at the top level of the
//! header or the claims rejects the token, so no two parsers can disagree on
//! which `exp` or `sub` counts.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::json::{Event, JStr, Parser};

mod cache;
#[cfg(feature = "issue")]
pub mod issue;
pub use cache::{CacheHit, CacheStats, TokenCache, TokenCacheConfig};

/// Longest token accepted, in bytes (the whole compact JWS).
pub const MAX_TOKEN_LEN: usize = 8192;
/// Longest accepted base64url header.
const MAX_HEADER_B64: usize = 1024;
/// Most top-level members accepted in the header or the claims.
const MAX_MEMBERS: usize = 64;
/// Nesting accepted inside claims we do not read.
const MAX_DEPTH: usize = 32;
/// Base64url of a 64-byte Ed25519 signature, without padding.
const SIG_B64_LEN: usize = 86;

const fn decoded_cap(b64_len: usize) -> usize {
    b64_len.div_ceil(4) * 3
}

/// How agent tokens are checked: the `kind: Identity` document, as the
/// IR and the bundle both carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityConfig {
    /// Required value of `iss`.
    pub issuer: String,
    /// Required value of `aud` (or one element of it when it is an array).
    pub audience: String,
    pub keys: Vec<TrustedKey>,
    /// Claim naming the agent (usually `sub`).
    pub agent_claim: String,
    /// Claim naming the tenant (usually `tenant`); optional in tokens.
    pub tenant_claim: String,
    /// Claim holding space-separated scopes (usually `scope`); optional.
    pub scope_claim: String,
    /// When set, `iat` is required and may not be older than this.
    pub max_age_secs: Option<u64>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub skew_secs: u64,
    /// Trust `x-aegis-agent` / `x-aegis-tenant` headers instead of tokens.
    /// [`verify`] ignores it; the caller decides whether to call it at all.
    pub insecure_agent_header: bool,
    /// The request header (lower case) that carries the agent's token:
    /// `authorization` by default. The filter removes it before forwarding.
    pub token_header: String,
}

/// The header agents send their token in unless the identity document
/// names another.
pub const DEFAULT_TOKEN_HEADER: &str = "authorization";

/// A trusted Ed25519 public key and the `kid` tokens name it by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub kid: String,
    pub key: [u8; 32],
}

impl IdentityConfig {
    /// A configuration with the usual claim names (`sub`, `tenant`,
    /// `scope`), no maximum age and 60 seconds of skew.
    pub fn new(issuer: &str, audience: &str, keys: Vec<TrustedKey>) -> Self {
        IdentityConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            keys,
            agent_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            scope_claim: "scope".into(),
            max_age_secs: None,
            skew_secs: 60,
            insecure_agent_header: false,
            token_header: DEFAULT_TOKEN_HEADER.into(),
        }
    }
}

/// The trusted keys, decoded once at configure time.
#[derive(Debug, Clone)]
pub struct VerifyingKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl VerifyingKeys {
    /// Fails on bytes that are not an Ed25519 point, on weak (small order)
    /// keys and on two keys sharing a `kid`.
    pub fn new(cfg: &IdentityConfig) -> Result<Self, JwtError> {
        let mut keys: Vec<(String, VerifyingKey)> = Vec::with_capacity(cfg.keys.len());
        for k in &cfg.keys {
            let vk = VerifyingKey::from_bytes(&k.key).map_err(|_| JwtError::InvalidKey)?;
            if vk.is_weak() {
                return Err(JwtError::InvalidKey);
            }
            if keys.iter().any(|(kid, _)| *kid == k.kid) {
                return Err(JwtError::DuplicateKid);
            }
            keys.push((k.kid.clone(), vk));
        }
        Ok(VerifyingKeys { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn select(&self, kid: Option<JStr<'_>>) -> Result<&VerifyingKey, JwtError> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(k, _)| kid.eq_bytes(k.as_bytes()))
                .map(|(_, vk)| vk)
                .ok_or(JwtError::UnknownKid),
            None => match self.keys.as_slice() {
                [(_, vk)] => Ok(vk),
                [] => Err(JwtError::UnknownKid),
                _ => Err(JwtError::MissingKid),
            },
        }
    }
}

/// A string of at most `N` bytes stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> InlineStr<N> {
    pub const CAPACITY: usize = N;

    pub const fn new() -> Self {
        InlineStr {
            buf: [0; N],
            len: 0,
        }
    }

    /// `None` when `s` does not fit.
    pub fn try_from_str(s: &str) -> Option<Self> {
        let mut out = Self::new();
        out.buf.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        out.len = s.len();
        Some(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ever filled with whole UTF-8 strings.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decodes a JSON string into a fresh value; `None` if it does not fit.
    fn from_json(s: JStr<'_>) -> Option<Self> {
        let mut out = Self::new();
        if !s.escaped {
            out.buf.get_mut(..s.raw.len())?.copy_from_slice(s.raw);
            out.len = s.raw.len();
        } else {
            for b in s.bytes() {
                *out.buf.get_mut(out.len)? = b;
                out.len += 1;
            }
        }
        // Decoded JSON strings are valid UTF-8; checked anyway so that
        // `as_str` never has to hide anything.
        core::str::from_utf8(out.as_bytes()).ok()?;
        Some(out)
    }
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> core::ops::Deref for InlineStr<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The agent claim: non-empty, no control characters.
    pub agent: InlineStr<128>,
    /// The tenant claim when the token has one (non-empty).
    pub tenant: Option<InlineStr<128>>,
    /// The scope claim as given (space-separated); empty when absent.
    pub scope: InlineStr<512>,
}

impl Principal {
    /// The individual scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_str().split(' ').filter(|s| !s.is_empty())
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }
}

/// Why a token was refused (or a key configuration rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts, bad base64url (padding included), header
    /// or claims not a JSON object, and the like.
    Malformed,
    /// Longer than [`MAX_TOKEN_LEN`], or too many members.
    TooLarge,
    /// `alg` missing or anything but `EdDSA` / `Ed25519`.
    UnsupportedAlg,
    /// `typ` present and not `JWT` / `at+jwt`.
    UnsupportedType,
    /// The header has `crit`.
    CriticalHeader,
    /// A member name appears twice in the header or the claims.
    Duplicate,
    /// No `kid` while several keys are trusted.
    MissingKid,
    /// `kid` names no trusted key (or no key is trusted at all).
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    /// `iat` older than the configured maximum age.
    TooOld,
    WrongIssuer,
    WrongAudience,
    /// A required claim is absent. `agent`, `tenant` and `scope` stand for
    /// the configured claim names; the others are the registered names.
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an unacceptable value.
    BadClaim(&'static str),
    /// Configuration: a trusted key is not a usable Ed25519 public key.
    InvalidKey,
    /// Configuration: two trusted keys share one `kid`.
    DuplicateKid,
}

fn is_role(claim: &str) -> bool {
    matches!(claim, "agent" | "tenant" | "scope")
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed => f.write_str("token is malformed"),
            JwtError::TooLarge => f.write_str("token is too large"),
            JwtError::UnsupportedAlg => f.write_str("token algorithm is not EdDSA"),
            JwtError::UnsupportedType => f.write_str("token type is not JWT"),
            JwtError::CriticalHeader => f.write_str("token has critical header parameters"),
            JwtError::Duplicate => f.write_str("token has a duplicate member"),
            JwtError::MissingKid => f.write_str("token has no key id"),
            JwtError::UnknownKid => f.write_str("token key id is not trusted"),
            JwtError::BadSignature => f.write_str("token signature is invalid"),
            JwtError::Expired => f.write_str("token expired"),
            JwtError::NotYetValid => f.write_str("token is not valid yet"),
            JwtError::IssuedInFuture => f.write_str("token was issued in the future"),
            JwtError::TooOld => f.write_str("token is too old"),
            JwtError::WrongIssuer => f.write_str("token issuer is not trusted"),
            JwtError::WrongAudience => f.write_str("token audience does not match"),
            JwtError::MissingClaim(c) if is_role(c) => write!(f, "token has no {c} claim"),
            JwtError::MissingClaim(c) => write!(f, "token has no `{c}` claim"),
            JwtError::BadClaim(c) if is_role(c) => write!(f, "token {c} claim is invalid"),
            JwtError::BadClaim(c) => write!(f, "token claim `{c}` is invalid"),
            JwtError::InvalidKey => f.write_str("trusted key is not a valid ed25519 public key"),
            JwtError::DuplicateKid => f.write_str("two trusted keys share a key id"),
        }
    }
}

impl core::error::Error for JwtError {}

fn malformed<T>(_: T) -> JwtError {
    JwtError::Malformed
}

fn jstr_eq(a: &JStr<'_>, b: &JStr<'_>) -> bool {
    if !a.escaped && !b.escaped {
        a.raw == b.raw
    } else {
        a.bytes().eq(b.bytes())
    }
}

/// Top-level member names seen so far, to reject duplicates.
struct Members<'a> {
    names: [JStr<'a>; MAX_MEMBERS],
    len: usize,
}

impl<'a> Members<'a> {
    fn new() -> Self {
        const EMPTY: JStr<'static> = JStr {
            raw: b"",
            start: 0,
            escaped: false,
        };
        Members {
            names: [EMPTY; MAX_MEMBERS],
            len: 0,
        }
    }

    fn insert(&mut self, name: JStr<'a>) -> Result<(), JwtError> {
        let seen = self.names.get(..self.len).unwrap_or_default();
        if seen.iter().any(|n| jstr_eq(n, &name)) {
            return Err(JwtError::Duplicate);
        }
        *self.names.get_mut(self.len).ok_or(JwtError::TooLarge)? = name;
        self.len += 1;
        Ok(())
    }
}

/// Reads the next member of the top-level object: `None` at its end (and
/// checks that nothing follows it).
fn next_member<'a>(
    p: &mut Parser<'a>,
    seen: &mut Members<'a>,
) -> Result<Option<(JStr<'a>, Event<'a>)>, JwtError> {
    match p.next().map_err(malformed)? {
        Some(Event::Key(k)) => {
            seen.insert(k)?;
            match p.next().map_err(malformed)? {
                Some(v) => Ok(Some((k, v))),
                None => Err(JwtError::Malformed),
            }
        }
        Some(Event::ObjEnd) => match p.next().map_err(malformed)? {
            None => Ok(None),
            Some(_) => Err(JwtError::Malformed),
        },
        _ => Err(JwtError::Malformed),
    }
}

/// Skips a value nobody reads (still validated by the parser).
fn skip(p: &mut Parser<'_>, v: Event<'_>) -> Result<(), JwtError> {
    match v {
        Event::ObjStart | Event::ArrStart => p.skip_container().map_err(malformed),
        _ => Ok(()),
    }
}

fn open_object<'a>(buf: &'a [u8]) -> Result<Parser<'a>, JwtError> {
    let mut p = Parser::new(buf, MAX_DEPTH);
    match p.next().map_err(malformed)? {
        Some(Event::ObjStart) => Ok(p),
        _ => Err(JwtError::Malformed),
    }
}

fn decode<'b>(b64: &[u8], out: &'b mut [u8]) -> Result<&'b [u8], JwtError> {
    let n = URL_SAFE_NO_PAD
        .decode_slice(b64, &mut *out)
        .map_err(malformed)?;
    out.get(..n).ok_or(JwtError::Malformed)
}

/// `typ`, compared without regard to ASCII case as RFC 7515 asks, with the
/// optional `application/` prefix.
fn typ_ok(typ: JStr<'_>) -> bool {
    let Some(t) = InlineStr::<32>::from_json(typ) else {
        return false;
    };
    let t = t.as_str();
    let t = match t.get(..12) {
        Some(pre) if pre.eq_ignore_ascii_case("application/") => t.get(12..).unwrap_or_default(),
        _ => t,
    };
    t.eq_ignore_ascii_case("jwt") || t.eq_ignore_ascii_case("at+jwt")
}

/// Checks the header and returns the `kid`, if any.
fn check_header(buf: &[u8]) -> Result<Option<JStr<'_>>, JwtError> {
    let mut p = open_object(buf)?;
    let mut seen = Members::new();
    let mut alg = None;
    let mut typ = None;
    let mut kid = None;
    let mut crit = false;
    while let Some((k, v)) = next_member(&mut p, &mut seen)? {
        if k.eq_bytes(b"alg") {
            match v {
                Event::Str(s) => alg = Some(s),
                other => {
                    skip(&mut p, other)?;
                    return Err(JwtError::UnsupportedAlg);
                }
            }
        } else if k.eq_bytes(b"typ") {
            match v {
                Event::Str(s) => typ = Some(s),
                other => {
                    skip(&mut p, other)?;
                    return Err(JwtError::UnsupportedType);
                }
            }
        } else if k.eq_bytes(b"kid") {
            match v {
                Event::Str(s) => kid = Some(s),
                _ => return Err(JwtError::Malformed),
            }
        } else {
            crit |= k.eq_bytes(b"crit");
            skip(&mut p, v)?;
        }
    }
    match alg {
        Some(a) if a.eq_bytes(b"EdDSA") || a.eq_bytes(b"Ed25519") => {}
        _ => return Err(JwtError::UnsupportedAlg),
    }
    if crit {
        return Err(JwtError::CriticalHeader);
    }
    if let Some(t) = typ {
        if !typ_ok(t) {
            return Err(JwtError::UnsupportedType);
        }
    }
    Ok(kid)
}

// Roles a claim name can play; one name may play several if the
// configuration says so (an odd but harmless setup).
const ISS: u8 = 1;
const AUD: u8 = 1 << 1;
const EXP: u8 = 1 << 2;
const NBF: u8 = 1 << 3;
const IAT: u8 = 1 << 4;
const AGENT: u8 = 1 << 5;
const TENANT: u8 = 1 << 6;
const SCOPE: u8 = 1 << 7;

fn role_name(roles: u8) -> &'static str {
    match roles.trailing_zeros() {
        0 => "iss",
        1 => "aud",
        2 => "exp",
        3 => "nbf",
        4 => "iat",
        5 => "agent",
        6 => "tenant",
        _ => "scope",
    }
}

fn roles_of(k: &JStr<'_>, cfg: &IdentityConfig) -> u8 {
    let mut r = 0;
    for (name, bit) in [
        (&b"iss"[..], ISS),
        (b"aud", AUD),
        (b"exp", EXP),
        (b"nbf", NBF),
        (b"iat", IAT),
        (cfg.agent_claim.as_bytes(), AGENT),
        (cfg.tenant_claim.as_bytes(), TENANT),
        (cfg.scope_claim.as_bytes(), SCOPE),
    ] {
        if k.eq_bytes(name) {
            r |= bit;
        }
    }
    r
}

fn number(n: &str, role: u8) -> Result<f64, JwtError> {
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(JwtError::BadClaim(role_name(role))),
    }
}

#[derive(Default)]
struct Claims<'a> {
    iss: Option<JStr<'a>>,
    aud_present: bool,
    aud_ok: bool,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    agent: Option<JStr<'a>>,
    tenant: Option<JStr<'a>>,
    scope: Option<JStr<'a>>,
}

fn read_claims<'a>(buf: &'a [u8], cfg: &IdentityConfig) -> Result<Claims<'a>, JwtError> {
    let mut p = open_object(buf)?;
    let mut seen = Members::new();
    let mut c = Claims::default();
    let aud = cfg.audience.as_bytes();
    while let Some((k, v)) = next_member(&mut p, &mut seen)? {
        let roles = roles_of(&k, cfg);
        if roles == 0 {
            skip(&mut p, v)?;
            continue;
        }
        match v {
            Event::Str(s) => {
                let not_str = roles & (EXP | NBF | IAT);
                if not_str != 0 {
                    return Err(JwtError::BadClaim(role_name(not_str)));
                }
                if roles & ISS != 0 {
                    c.iss = Some(s);
                }
                if roles & AUD != 0 {
                    c.aud_present = true;
                    c.aud_ok = s.eq_bytes(aud);
                }
                if roles & AGENT != 0 {
                    c.agent = Some(s);
                }
                if roles & TENANT != 0 {
                    c.tenant = Some(s);
                }
                if roles & SCOPE != 0 {
                    c.scope = Some(s);
                }
            }
            Event::Num(n) => {
                let not_num = roles & !(EXP | NBF | IAT);
                if not_num != 0 {
                    return Err(JwtError::BadClaim(role_name(not_num)));
                }
                if roles & EXP != 0 {
                    c.exp = Some(number(n, EXP)?);
                }
                if roles & NBF != 0 {
                    c.nbf = Some(number(n, NBF)?);
                }
                if roles & IAT != 0 {
                    c.iat = Some(number(n, IAT)?);
                }
            }
            Event::ArrStart if roles == AUD => {
                c.aud_present = true;
                loop {
                    match p.next().map_err(malformed)? {
                        Some(Event::Str(s)) => c.aud_ok |= s.eq_bytes(aud),
                        Some(Event::ArrEnd) => break,
                        _ => return Err(JwtError::BadClaim("aud")),
                    }
                }
            }
            _ => {
                let not_arr = roles & !AUD;
                let role = if not_arr != 0 { not_arr } else { AUD };
                return Err(JwtError::BadClaim(role_name(role)));
            }
        }
    }
    Ok(c)
}

/// Decodes an identity string claim: must fit, and no control characters
/// (they would end up in headers and logs).
fn identity_str<const N: usize>(s: JStr<'_>, role: &'static str) -> Result<InlineStr<N>, JwtError> {
    let v = InlineStr::<N>::from_json(s).ok_or(JwtError::BadClaim(role))?;
    if v.is_empty() || v.as_str().chars().any(char::is_control) {
        return Err(JwtError::BadClaim(role));
    }
    Ok(v)
}

/// The time claims of a token: all a verified token needs to be judged
/// again at another time (see [`TokenCache`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validity {
    pub exp: f64,
    pub nbf: Option<f64>,
    pub iat: Option<f64>,
}

impl Validity {
    /// `exp`, `nbf`, `iat` and the maximum age at unix time `now`, with the
    /// configured skew.
    pub fn check(&self, cfg: &IdentityConfig, now: i64) -> Result<(), JwtError> {
        // Unix times fit f64 exactly; f64 also takes fractional claims and
        // cannot overflow.
        let now = now as f64;
        let skew = cfg.skew_secs as f64;
        if now > self.exp + skew {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = self.nbf {
            if now + skew < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(iat) = self.iat {
            if iat > now + skew {
                return Err(JwtError::IssuedInFuture);
            }
        }
        if let Some(max_age) = cfg.max_age_secs {
            let iat = self.iat.ok_or(JwtError::MissingClaim("iat"))?;
            if now - iat > max_age as f64 {
                return Err(JwtError::TooOld);
            }
        }
        Ok(())
    }
}

fn check_claims(
    c: &Claims<'_>,
    cfg: &IdentityConfig,
    now: i64,
) -> Result<(Principal, Validity), JwtError> {
    match c.iss {
        None => return Err(JwtError::MissingClaim("iss")),
        Some(iss) if !iss.eq_bytes(cfg.issuer.as_bytes()) => return Err(JwtError::WrongIssuer),
        Some(_) => {}
    }
    if !c.aud_present {
        return Err(JwtError::MissingClaim("aud"));
    }
    if !c.aud_ok {
        return Err(JwtError::WrongAudience);
    }
    let validity = Validity {
        exp: c.exp.ok_or(JwtError::MissingClaim("exp"))?,
        nbf: c.nbf,
        iat: c.iat,
    };
    validity.check(cfg, now)?;
    let agent = c.agent.ok_or(JwtError::MissingClaim("agent"))?;
    let agent = identity_str::<128>(agent, "agent")?;
    let tenant = match c.tenant {
        Some(t) => Some(identity_str::<128>(t, "tenant")?),
        None => None,
    };
    let scope = match c.scope {
        Some(s) => {
            let v = InlineStr::<512>::from_json(s).ok_or(JwtError::BadClaim("scope"))?;
            if v.as_str().chars().any(char::is_control) {
                return Err(JwtError::BadClaim("scope"));
            }
            v
        }
        None => InlineStr::new(),
    };
    Ok((
        Principal {
            agent,
            tenant,
            scope,
        },
        validity,
    ))
}

/// Verifies a compact JWS (the caller strips `Bearer `) at unix time `now`.
///
/// Order: size and shape, header, signature, then claims: nothing in the
/// payload is looked at before the signature holds. Allocates nothing
/// (one caveat: with ed25519-dalek's `std` feature, as in native builds with
/// `compile`, a failed signature check boxes that library's error source;
/// the filter builds the engine without `std`).
pub fn verify(
    token: &[u8],
    cfg: &IdentityConfig,
    keys: &VerifyingKeys,
    now: i64,
) -> Result<Principal, JwtError> {
    verify_with_validity(token, cfg, keys, now).map(|(p, _)| p)
}

/// [`verify`], and the token's time claims, so that a cache can judge the
/// token again later without its signature.
pub fn verify_with_validity(
    token: &[u8],
    cfg: &IdentityConfig,
    keys: &VerifyingKeys,
    now: i64,
) -> Result<(Principal, Validity), JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.splitn(4, |&b| b == b'.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    if header_b64.len() > MAX_HEADER_B64 {
        return Err(JwtError::TooLarge);
    }

    let mut header_buf = [0u8; decoded_cap(MAX_HEADER_B64)];
    let header = decode(header_b64, &mut header_buf)?;
    let kid = check_header(header)?;
    let key = keys.select(kid)?;

    if sig_b64.len() != SIG_B64_LEN {
        return Err(JwtError::BadSignature);
    }
    let mut sig = [0u8; 64];
    if URL_SAFE_NO_PAD.decode_slice(sig_b64, &mut sig) != Ok(64) {
        return Err(JwtError::Malformed);
    }
    let signed = token
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or(JwtError::Malformed)?;
    key.verify_strict(signed, &Signature::from_bytes(&sig))
        .map_err(|_| JwtError::BadSignature)?;

    let mut payload_buf = [0u8; decoded_cap(MAX_TOKEN_LEN)];
    let payload = decode(payload_b64, &mut payload_buf)?;
    let claims = read_claims(payload, cfg)?;
    check_claims(&claims, cfg, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_str_bounds() {
        assert_eq!(
            InlineStr::<4>::try_from_str("abcd").unwrap().as_str(),
            "abcd"
        );
        assert!(InlineStr::<4>::try_from_str("abcde").is_none());
        assert!(InlineStr::<4>::new().is_empty());
    }

    #[test]
    fn typ_values() {
        let j = |s: &'static str| JStr {
            raw: s.as_bytes(),
            start: 0,
            escaped: s.contains('\\'),
        };
        for ok in [
            "JWT",
            "jwt",
            "at+jwt",
            "application/at+JWT",
            "Application/jwt",
        ] {
            assert!(typ_ok(j(ok)), "{ok}");
        }
        for bad in ["JWS", "", "dpop+jwt", "application/", "application/jose"] {
            assert!(!typ_ok(j(bad)), "{bad}");
        }
    }

    #[test]
    fn messages_are_lowercase_sentences() {
        for e in [
            JwtError::Expired,
            JwtError::MissingClaim("agent"),
            JwtError::MissingClaim("exp"),
            JwtError::BadClaim("aud"),
            JwtError::UnsupportedAlg,
        ] {
            let s = alloc::format!("{e}");
            assert!(s.starts_with("token"), "{s}");
            assert!(!s.ends_with('.'));
        }
        assert_eq!(
            alloc::format!("{}", JwtError::MissingClaim("agent")),
            "token has no agent claim"
        );
    }
}
