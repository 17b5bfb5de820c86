//! The schema, one list of migrations for both SQLite and PostgreSQL.
//!
//! The SQL is the common subset of the two dialects: `BIGINT` and `TEXT`
//! only (hashes and keys as hex, bundle bytes as base64), `ON CONFLICT`,
//! partial indexes and `RETURNING`, so the same statements run on both and
//! the same tests prove both.

/// `(version, statements)`, applied in order, each version in one
/// transaction, recorded in `schema_migrations`.
pub const MIGRATIONS: &[(i64, &[&str])] = &[
    (
    1,
    &[
        // The audit chain: one row per event, and the head (last seq and
        // hash) kept apart so that deleting the newest rows is caught.
        "CREATE TABLE audit_head (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL)",
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, \
         '0000000000000000000000000000000000000000000000000000000000000000')",
        "CREATE TABLE audit (seq BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, tenant TEXT NOT NULL, \
         actor TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, data TEXT NOT NULL, \
         prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
        "CREATE TABLE audit_checkpoints (seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, \
         at_ms BIGINT NOT NULL, key TEXT NOT NULL, sig TEXT NOT NULL)",
        // Money is integer micro-dollars: no float drift in sums.
        "CREATE TABLE budget_days (tenant TEXT NOT NULL, agent TEXT NOT NULL, day TEXT NOT NULL, \
         limit_micros BIGINT NOT NULL, reserved_micros BIGINT NOT NULL, spent_micros BIGINT NOT NULL, \
         PRIMARY KEY (tenant, agent, day))",
        "CREATE TABLE leases (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, agent TEXT NOT NULL, \
         day TEXT NOT NULL, granted_micros BIGINT NOT NULL, spent_micros BIGINT NOT NULL, \
         state TEXT NOT NULL, created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL, \
         holder TEXT NOT NULL)",
        "CREATE INDEX leases_open ON leases (tenant, agent, day) WHERE state = 'open'",
        "CREATE TABLE approvals (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, agent TEXT NOT NULL, \
         tool TEXT NOT NULL, action TEXT NOT NULL, rule TEXT NOT NULL, reason TEXT NOT NULL, \
         policy_version TEXT NOT NULL, digest TEXT NOT NULL, summary TEXT NOT NULL, \
         status TEXT NOT NULL, created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL, \
         requested_by TEXT NOT NULL, decided_by TEXT, decided_ms BIGINT, comment TEXT, \
         redeemed_ms BIGINT)",
        // The same pending call asked twice is one approval.
        "CREATE UNIQUE INDEX approvals_pending ON approvals (tenant, agent, digest) \
         WHERE status = 'pending'",
        "CREATE INDEX approvals_by_status ON approvals (tenant, status, created_ms)",
        "CREATE TABLE agent_credentials (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, \
         agent TEXT NOT NULL, scope TEXT, secret_sha256 TEXT NOT NULL UNIQUE, \
         created_ms BIGINT NOT NULL, created_by TEXT NOT NULL, revoked_ms BIGINT)",
        "CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, purpose TEXT NOT NULL, \
         secret TEXT NOT NULL, public TEXT NOT NULL, created_ms BIGINT NOT NULL, \
         retire_ms BIGINT)",
        "CREATE TABLE bundles (revision BIGINT PRIMARY KEY, hash TEXT NOT NULL, signer TEXT NOT NULL, \
         policy_version TEXT NOT NULL, bytes TEXT NOT NULL, published_ms BIGINT NOT NULL, \
         published_by TEXT NOT NULL)",
    ],
),
    (
        2,
        &[
            // The notification outbox: written with the approval event,
            // delivered by a worker that claims a row with `lease_ms`.
            "CREATE TABLE notifications (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, \
             approval_id TEXT NOT NULL, event TEXT NOT NULL, channel TEXT NOT NULL, \
             target TEXT NOT NULL, status TEXT NOT NULL, attempts BIGINT NOT NULL, \
             next_ms BIGINT NOT NULL, lease_ms BIGINT NOT NULL, last_error TEXT, \
             created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, delivered_ms BIGINT)",
            "CREATE INDEX notifications_due ON notifications (next_ms) \
             WHERE status IN ('pending', 'retrying')",
            "CREATE INDEX notifications_by_tenant ON notifications (tenant, status, created_ms)",
            "CREATE INDEX notifications_by_approval ON notifications (approval_id)",
            // Where the bot posted an approval, for `chat.update`.
            "CREATE TABLE slack_messages (approval_id TEXT NOT NULL, target TEXT NOT NULL, \
             channel TEXT NOT NULL, ts TEXT NOT NULL, posted_ms BIGINT NOT NULL, \
             PRIMARY KEY (approval_id, target))",
            // Signatures of Slack interactions seen within the replay window.
            "CREATE TABLE slack_replays (signature TEXT PRIMARY KEY, seen_ms BIGINT NOT NULL)",
        ],
    ),
    (
        3,
        &[
            // Dashboard sign-ins: only a hash of the session id (the cookie)
            // is kept, so a copy of the store signs no one in.
            "CREATE TABLE dashboard_sessions (id_sha256 TEXT PRIMARY KEY, role TEXT NOT NULL, \
             tenant TEXT NOT NULL, subject TEXT NOT NULL, csrf TEXT NOT NULL, \
             created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL)",
            // Which bundle revision each gateway (token subject) fetched last.
            "CREATE TABLE gateway_fetches (subject TEXT PRIMARY KEY, tenant TEXT NOT NULL, \
             revision BIGINT NOT NULL, fetched_ms BIGINT NOT NULL)",
        ],
    ),
];
