//! Compact JWS (EdDSA, RFC 8037) verification for agent identity tokens.
