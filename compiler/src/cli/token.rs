//! `aegis token issue ...`: print a signed agent JWT.

use super::exit;
use crate::token::{issue, parse_ttl, TokenRequest};
use std::path::PathBuf;

pub struct Args {
    pub key: PathBuf,
    pub kid: String,
    pub issuer: String,
    pub audience: String,
    pub agent: String,
    pub tenant: Option<String>,
    pub scope: Option<String>,
    pub ttl: String,
}

pub fn run(a: &Args) -> i32 {
    let ttl = match parse_ttl(&a.ttl) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let key = match crate::keys::read_signing_key(&a.key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let token = issue(
        &key,
        &TokenRequest {
            kid: &a.kid,
            issuer: &a.issuer,
            audience: &a.audience,
            agent: &a.agent,
            tenant: a.tenant.as_deref(),
            scope: a.scope.as_deref(),
            ttl_secs: ttl,
            now: aegis_cases::runner::now_unix(),
        },
    );
    println!("{token}");
    exit::OK
}
