//! The audit hash chain: how a record's hash is computed, how checkpoints are
//! signed, and how a stored chain is checked, naming the first broken record.
//!
//! Every record holds the hash of the one before it, so editing, removing,
//! inserting or reordering records shows up as a hash that does not match.
//! That alone does not stop someone with write access from rewriting the
//! whole tail of the chain with fresh hashes, or from cutting it short:
//! checkpoints, signed by the service key, pin a `(seq, hash)` pair, and the
//! chain head the store keeps apart pins the last record.
//!
//! This module holds no I/O: the store feeds records and checkpoints in and
//! gets a [`Report`] back.

use aegis_engine::trust::{check_trust, hex, key_fingerprint};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Domain tag of a record hash; a new hash layout gets a new tag.
const RECORD_TAG: &[u8] = b"aegis-audit-v1";
/// Domain tag of a checkpoint signature, so that no other message signed by
/// the service key (tokens, bundles) can pass for a checkpoint.
const CHECKPOINT_TAG: &[u8] = b"aegis-audit-checkpoint-v1";

/// The `prev_hash` of record 1.
pub const GENESIS: [u8; 32] = [0; 32];

/// One audit event as stored. `seq` starts at 1 and has no gaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `*` for service-wide events.
    pub tenant: String,
    /// Who: `admin:bootstrap`, `approver:alice`, `gateway:edge-1`, `service`.
    pub actor: String,
    /// What: `approval.decided`, `lease.granted`, `bundle.published`, ...
    pub kind: String,
    /// The object's id: approval id, lease id, bundle revision, agent id.
    pub subject: String,
    /// JSON object text with the event's details, stored verbatim.
    pub data: String,
    /// [`GENESIS`] for seq 1.
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// An event about to be appended: a [`Record`] without its place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEvent<'a> {
    pub at_ms: i64,
    pub tenant: &'a str,
    pub actor: &'a str,
    pub kind: &'a str,
    pub subject: &'a str,
    pub data: &'a str,
}

impl Record {
    /// The record's content, as it was hashed.
    pub fn event(&self) -> NewEvent<'_> {
        NewEvent {
            at_ms: self.at_ms,
            tenant: &self.tenant,
            actor: &self.actor,
            kind: &self.kind,
            subject: &self.subject,
            data: &self.data,
        }
    }

    /// Whether `hash` is the hash of this record's seq, prev_hash and content.
    pub fn is_intact(&self) -> bool {
        record_hash(self.seq, &self.prev_hash, &self.event()) == self.hash
    }
}

/// SHA-256 over the domain tag and every field, strings length-prefixed and
/// integers fixed-width (big endian), so that no two different records share
/// a preimage (`tenant "ab", actor "c"` differs from `tenant "a", actor "bc"`).
pub fn record_hash(seq: i64, prev: &[u8; 32], e: &NewEvent<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    put_bytes(&mut h, RECORD_TAG);
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(e.at_ms.to_be_bytes());
    for field in [e.tenant, e.actor, e.kind, e.subject, e.data] {
        put_bytes(&mut h, field.as_bytes());
    }
    h.finalize().into()
}

fn put_bytes(h: &mut Sha256, bytes: &[u8]) {
    // usize fits in u64 on every target Rust supports.
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// Builds record `seq` after the record whose hash is `prev`.
pub fn link(seq: i64, prev: [u8; 32], e: &NewEvent<'_>) -> Record {
    Record {
        seq,
        at_ms: e.at_ms,
        tenant: e.tenant.to_owned(),
        actor: e.actor.to_owned(),
        kind: e.kind.to_owned(),
        subject: e.subject.to_owned(),
        data: e.data.to_owned(),
        prev_hash: prev,
        hash: record_hash(seq, &prev, e),
    }
}

/// A signed statement that record `seq` of the chain had hash `hash` at
/// `at_ms` (Unix milliseconds). `key` is the signer's Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: [u8; 32],
    pub at_ms: i64,
    pub key: [u8; 32],
    pub sig: [u8; 64],
}

fn checkpoint_message(seq: i64, hash: &[u8; 32], at_ms: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + CHECKPOINT_TAG.len() + 8 + 32 + 8);
    m.extend_from_slice(&(CHECKPOINT_TAG.len() as u64).to_be_bytes());
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&at_ms.to_be_bytes());
    m
}

/// Signs the statement that record `seq` has hash `hash`.
pub fn sign_checkpoint(key: &SigningKey, seq: i64, hash: [u8; 32], at_ms: i64) -> Checkpoint {
    let sig = key.sign(&checkpoint_message(seq, &hash, at_ms));
    Checkpoint {
        seq,
        hash,
        at_ms,
        key: key.verifying_key().to_bytes(),
        sig: sig.to_bytes(),
    }
}

impl Checkpoint {
    /// Whether `sig` is `key`'s signature of this checkpoint (strict Ed25519:
    /// no malleable or small-order forms). Says nothing about trusting `key`.
    pub fn signature_ok(&self) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.key) else {
            return false;
        };
        let sig = Signature::from_bytes(&self.sig);
        key.verify_strict(&checkpoint_message(self.seq, &self.hash, self.at_ms), &sig)
            .is_ok()
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Records read, including those after the first break.
    pub records: u64,
    /// The last seq whose content and link to the one before verified, with
    /// every record before it; 0 when none did.
    pub verified_upto: i64,
    /// The last checkpoint that verified and matched the chain.
    pub last_checkpoint: Option<i64>,
    /// `None` when the whole chain verified.
    pub first_break: Option<Break>,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The first seq that cannot be trusted.
    pub seq: i64,
    pub kind: BreakKind,
    /// One sentence for people.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The record's hash does not match its content.
    Edited,
    /// A record is missing: a gap in seq, or a prev_hash that is not the hash
    /// of the record before.
    Missing,
    /// A record comes after one with a higher seq, or a seq repeats.
    OutOfOrder,
    /// A checkpoint's signature does not verify.
    BadCheckpointSignature,
    /// A checkpoint is signed by a key that is not trusted.
    UntrustedCheckpointKey,
    /// A checkpoint names a seq or hash the chain does not have (for example
    /// records deleted at the end).
    CheckpointMismatch,
    /// The chain head kept by the store is not the last record.
    HeadMismatch,
}

/// Checks a chain read in the order given (the store reads it by seq) against
/// its checkpoints and, when the store keeps one, its head (last seq and hash).
/// Checkpoints count only when signed by one of `trusted` (the trust rule of
/// [`aegis_engine::trust::check_trust`]: with no trusted keys any valid
/// signature counts, which proves nothing about who signed, so the service
/// passes its own keys). Reports the first break by seq.
pub fn verify(
    records: impl IntoIterator<Item = Record>,
    checkpoints: &[Checkpoint],
    trusted: &[[u8; 32]],
    head: Option<(i64, [u8; 32])>,
) -> Report {
    let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    let mut walk = Walk {
        records: 0,
        expected: 1,
        prev: GENESIS,
        verified_upto: 0,
        last_checkpoint: None,
        trusted,
    };
    let mut records = records.into_iter();
    let first_break = walk.run(&mut records, &sorted, head);
    // The count covers the whole chain even when it broke early.
    for _ in records {
        walk.records += 1;
    }
    Report {
        records: walk.records,
        verified_upto: walk.verified_upto,
        last_checkpoint: walk.last_checkpoint,
        first_break,
    }
}

struct Walk<'t> {
    records: u64,
    /// The seq the next record must have.
    expected: i64,
    /// The hash the next record's prev_hash must be.
    prev: [u8; 32],
    verified_upto: i64,
    last_checkpoint: Option<i64>,
    trusted: &'t [[u8; 32]],
}

impl Walk<'_> {
    fn run(
        &mut self,
        records: &mut impl Iterator<Item = Record>,
        checkpoints: &[&Checkpoint],
        head: Option<(i64, [u8; 32])>,
    ) -> Option<Break> {
        let mut checkpoints = checkpoints.iter().copied().peekable();
        while let Some(r) = records.next() {
            self.records += 1;
            if r.seq != self.expected {
                return Some(self.misplaced(&r, records));
            }
            if !r.is_intact() {
                return Some(Break {
                    seq: r.seq,
                    kind: BreakKind::Edited,
                    message: format!(
                        "record {} was edited: its content does not hash to its stored hash {}",
                        r.seq,
                        short(&r.hash)
                    ),
                });
            }
            if r.prev_hash != self.prev {
                return Some(Break {
                    seq: r.seq,
                    kind: BreakKind::Missing,
                    message: format!(
                        "record {} does not follow record {}: its prev_hash {} is not the hash {} \
                         of record {}, so records were removed or replaced in between",
                        r.seq,
                        r.seq.saturating_sub(1),
                        short(&r.prev_hash),
                        short(&self.prev),
                        r.seq.saturating_sub(1),
                    ),
                });
            }
            self.prev = r.hash;
            self.verified_upto = r.seq;
            self.expected = r.seq.saturating_add(1);
            // Checkpoints below the first seq cannot match any record; they
            // come out here along with those of this record.
            while let Some(c) = checkpoints.next_if(|c| c.seq <= r.seq) {
                if let Err(b) = self.checkpoint(c, &r) {
                    return Some(b);
                }
            }
        }
        self.at_end(checkpoints, head)
    }

    /// A record whose seq is not the next one: an edited seq, a gap, or
    /// records out of order.
    fn misplaced(&mut self, r: &Record, rest: &mut impl Iterator<Item = Record>) -> Break {
        let expected = self.expected;
        if record_hash(expected, &r.prev_hash, &r.event()) == r.hash {
            return Break {
                seq: expected,
                kind: BreakKind::Edited,
                message: format!(
                    "record {expected} was edited: its seq was changed to {}",
                    r.seq
                ),
            };
        }
        if r.seq < expected {
            return Break {
                seq: expected,
                kind: BreakKind::OutOfOrder,
                message: format!(
                    "record {} comes after record {}: records are out of order",
                    r.seq,
                    expected.saturating_sub(1)
                ),
            };
        }
        // A higher seq: either the expected record comes later (out of
        // order) or it is gone.
        let mut later = false;
        for other in rest {
            self.records += 1;
            later |= other.seq == expected;
        }
        if later {
            return Break {
                seq: expected,
                kind: BreakKind::OutOfOrder,
                message: format!(
                    "record {expected} comes after record {}: records are out of order",
                    r.seq
                ),
            };
        }
        let gone = if r.seq == expected.saturating_add(1) {
            format!("record {expected} is missing")
        } else {
            format!(
                "records {expected} to {} are missing",
                r.seq.saturating_sub(1)
            )
        };
        let message = if expected == 1 {
            format!("{gone}: the chain starts at record {}", r.seq)
        } else {
            format!(
                "{gone}: record {} follows record {}",
                r.seq,
                expected.saturating_sub(1)
            )
        };
        Break {
            seq: expected,
            kind: BreakKind::Missing,
            message,
        }
    }

    /// Checks checkpoint `c`, whose seq is at most `r`'s, against record `r`.
    fn checkpoint(&mut self, c: &Checkpoint, r: &Record) -> Result<(), Break> {
        self.trust(c)?;
        if c.seq != r.seq {
            return Err(Break {
                seq: c.seq,
                kind: BreakKind::CheckpointMismatch,
                message: format!(
                    "a checkpoint names record {}, which no chain has: seq starts at 1",
                    c.seq
                ),
            });
        }
        if c.hash != r.hash {
            return Err(Break {
                seq: c.seq,
                kind: BreakKind::CheckpointMismatch,
                message: format!(
                    "record {} has hash {} but its signed checkpoint says {}: the chain was \
                     rewritten from here or earlier",
                    c.seq,
                    short(&r.hash),
                    short(&c.hash)
                ),
            });
        }
        self.last_checkpoint = Some(c.seq);
        Ok(())
    }

    /// Signature and signer of a checkpoint.
    fn trust(&self, c: &Checkpoint) -> Result<(), Break> {
        if !c.signature_ok() {
            return Err(Break {
                seq: c.seq,
                kind: BreakKind::BadCheckpointSignature,
                message: format!(
                    "the checkpoint of record {} has a bad signature: it was forged or altered",
                    c.seq
                ),
            });
        }
        if check_trust(Some(&c.key), self.trusted).is_err() {
            return Err(Break {
                seq: c.seq,
                kind: BreakKind::UntrustedCheckpointKey,
                message: format!(
                    "the checkpoint of record {} is signed by key `{}`, which is not trusted",
                    c.seq,
                    key_fingerprint(&c.key)
                ),
            });
        }
        Ok(())
    }

    /// Checkpoints past the last record and the head, once every record
    /// verified. Several problems: the one with the lowest seq wins.
    fn at_end<'c>(
        &self,
        checkpoints: impl Iterator<Item = &'c Checkpoint>,
        head: Option<(i64, [u8; 32])>,
    ) -> Option<Break> {
        let last = self.verified_upto;
        let first_gone = last.saturating_add(1);
        let mut found: Vec<Break> = Vec::new();
        for c in checkpoints {
            found.push(match self.trust(c) {
                Err(b) => b,
                Ok(()) => Break {
                    seq: first_gone,
                    kind: BreakKind::CheckpointMismatch,
                    message: format!(
                        "the chain ends at record {last} but a signed checkpoint names record {}: \
                         {} missing",
                        c.seq,
                        span(first_gone, c.seq)
                    ),
                },
            });
        }
        if let Some((head_seq, head_hash)) = head {
            if head_seq > last {
                found.push(Break {
                    seq: first_gone,
                    kind: BreakKind::HeadMismatch,
                    message: format!(
                        "the chain ends at record {last} but its recorded head is record \
                         {head_seq}: {} missing",
                        span(first_gone, head_seq)
                    ),
                });
            } else if head_seq < last {
                found.push(Break {
                    seq: head_seq.saturating_add(1),
                    kind: BreakKind::HeadMismatch,
                    message: format!(
                        "the recorded head is record {head_seq} but the chain goes on to record \
                         {last}: {} were added behind the store's back",
                        span_plain(head_seq.saturating_add(1), last)
                    ),
                });
            } else if head_hash != self.prev {
                found.push(Break {
                    seq: last,
                    kind: BreakKind::HeadMismatch,
                    message: format!(
                        "record {last} has hash {} but the recorded head says {}",
                        short(&self.prev),
                        short(&head_hash)
                    ),
                });
            }
        }
        // `min_by_key` keeps the first of equals: signature problems, pushed
        // first, win over the head.
        found.into_iter().min_by_key(|b| b.seq)
    }
}

/// "record 7 is" / "records 7 to 9 are".
fn span(from: i64, to: i64) -> String {
    if from >= to {
        format!("record {from} is")
    } else {
        format!("records {from} to {to} are")
    }
}

/// "record 7" / "records 7 to 9".
fn span_plain(from: i64, to: i64) -> String {
    if from >= to {
        format!("record {from}")
    } else {
        format!("records {from} to {to}")
    }
}

/// The first 16 hex digits, enough to tell hashes apart in a sentence.
fn short(hash: &[u8; 32]) -> String {
    let mut s = hex(hash);
    s.truncate(16);
    s
}

/// For export: hashes as lowercase hex, `data` as a JSON value when it
/// parses (else as the stored string).
impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Record", 9)?;
        s.serialize_field("seq", &self.seq)?;
        s.serialize_field("at_ms", &self.at_ms)?;
        s.serialize_field("tenant", &self.tenant)?;
        s.serialize_field("actor", &self.actor)?;
        s.serialize_field("kind", &self.kind)?;
        s.serialize_field("subject", &self.subject)?;
        match serde_json::from_str::<serde_json::Value>(&self.data) {
            Ok(v) => s.serialize_field("data", &v)?,
            Err(_) => s.serialize_field("data", &self.data)?,
        }
        s.serialize_field("prev_hash", &hex(&self.prev_hash))?;
        s.serialize_field("hash", &hex(&self.hash))?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [&str; 5] = [
        "approval.created",
        "approval.decided",
        "lease.granted",
        "bundle.published",
        "token.issued",
    ];

    fn service_key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn chain(n: i64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        let mut prev = GENESIS;
        for seq in 1..=n {
            let subject = format!("ap_{seq}");
            let data = format!(r#"{{"n":{seq},"note":"event {seq}"}}"#);
            let r = link(
                seq,
                prev,
                &NewEvent {
                    at_ms: 1_700_000_000_000 + seq * 1000,
                    tenant: if seq % 3 == 0 { "*" } else { "acme" },
                    actor: "approver:alice",
                    kind: KINDS[(seq as usize) % KINDS.len()],
                    subject: &subject,
                    data: &data,
                },
            );
            prev = r.hash;
            out.push(r);
        }
        out
    }

    fn checkpoint_at(records: &[Record], seq: i64) -> Checkpoint {
        let r = &records[(seq - 1) as usize];
        sign_checkpoint(&service_key(), r.seq, r.hash, r.at_ms + 1)
    }

    fn trusted() -> [[u8; 32]; 1] {
        [service_key().verifying_key().to_bytes()]
    }

    fn head(records: &[Record]) -> Option<(i64, [u8; 32])> {
        records.last().map(|r| (r.seq, r.hash))
    }

    fn check(
        records: Vec<Record>,
        checkpoints: &[Checkpoint],
        head: Option<(i64, [u8; 32])>,
    ) -> Report {
        verify(records, checkpoints, &trusted(), head)
    }

    fn broken_at(report: &Report) -> (i64, BreakKind) {
        let b = report.first_break.as_ref().expect("a break");
        assert!(!b.message.is_empty() && !b.message.ends_with('.'));
        (b.seq, b.kind)
    }

    #[test]
    fn an_intact_chain_of_100_verifies() {
        let records = chain(100);
        let cps = [checkpoint_at(&records, 50), checkpoint_at(&records, 100)];
        let h = head(&records);
        let report = check(records, &cps, h);
        assert_eq!(
            report,
            Report {
                records: 100,
                verified_upto: 100,
                last_checkpoint: Some(100),
                first_break: None
            }
        );
        assert!(report.is_intact());
    }

    #[test]
    fn an_empty_chain_verifies() {
        assert!(check(Vec::new(), &[], None).is_intact());
        assert!(check(Vec::new(), &[], Some((0, GENESIS))).is_intact());
    }

    #[test]
    fn editing_any_field_of_one_record_names_it() {
        type Edit = fn(&mut Record);
        let edits: [(&str, Edit); 9] = [
            ("seq", |r| r.seq += 1),
            ("at_ms", |r| r.at_ms -= 1),
            ("tenant", |r| r.tenant.push('x')),
            ("actor", |r| r.actor = "admin:bootstrap".into()),
            ("kind", |r| r.kind = "approval.redeemed".into()),
            ("subject", |r| r.subject.push('0')),
            ("data", |r| r.data = r.data.replace("event", "evnet")),
            ("prev_hash", |r| r.prev_hash[31] ^= 1),
            ("hash", |r| r.hash[0] ^= 0x80),
        ];
        for (field, edit) in edits {
            let mut records = chain(100);
            let cps = [checkpoint_at(&records, 20), checkpoint_at(&records, 90)];
            let h = head(&records);
            edit(&mut records[36]);
            let report = check(records, &cps, h);
            assert_eq!(
                broken_at(&report),
                (37, BreakKind::Edited),
                "editing {field}"
            );
            assert_eq!(report.verified_upto, 36, "editing {field}");
            assert_eq!(report.last_checkpoint, Some(20), "editing {field}");
            assert_eq!(report.records, 100, "editing {field}");
        }
    }

    #[test]
    fn deleting_a_record_in_the_middle_names_it() {
        let mut records = chain(100);
        let h = head(&records);
        records.remove(49);
        let report = check(records, &[], h);
        assert_eq!(broken_at(&report), (50, BreakKind::Missing));
        assert_eq!(report.records, 99);
        assert_eq!(report.verified_upto, 49);
    }

    #[test]
    fn deleting_a_record_and_renumbering_the_rest_names_the_gap() {
        // Each later record rewritten with seq - 1 and a hash over its new
        // seq: the only thing left to catch is the broken link.
        let records = chain(100);
        let mut forged: Vec<Record> = records[..49].to_vec();
        for r in &records[50..] {
            let mut r = r.clone();
            r.seq -= 1;
            r.hash = record_hash(r.seq, &r.prev_hash, &r.event());
            forged.push(r);
        }
        let report = check(forged, &[], None);
        assert_eq!(broken_at(&report), (50, BreakKind::Missing));
    }

    #[test]
    fn deleting_the_first_records_names_record_1() {
        let mut records = chain(10);
        records.drain(..3);
        let report = check(records, &[], None);
        assert_eq!(broken_at(&report), (1, BreakKind::Missing));
        assert!(report
            .first_break
            .unwrap()
            .message
            .contains("records 1 to 3"));
    }

    #[test]
    fn deleting_the_last_records_past_a_checkpoint_names_the_first_gone() {
        let mut records = chain(100);
        let cps = [checkpoint_at(&records, 50), checkpoint_at(&records, 100)];
        records.truncate(95);
        let report = check(records, &cps, None);
        assert_eq!(broken_at(&report), (96, BreakKind::CheckpointMismatch));
        assert_eq!(report.verified_upto, 95);
        assert_eq!(report.last_checkpoint, Some(50));
        assert!(report
            .first_break
            .unwrap()
            .message
            .contains("records 96 to 100"));
    }

    #[test]
    fn deleting_the_last_records_past_the_head_names_the_first_gone() {
        let mut records = chain(100);
        let h = head(&records);
        records.truncate(95);
        let report = check(records, &[], h);
        assert_eq!(broken_at(&report), (96, BreakKind::HeadMismatch));
    }

    #[test]
    fn swapping_two_records_names_the_first_out_of_place() {
        let mut records = chain(100);
        records.swap(39, 40);
        let report = check(records, &[], None);
        assert_eq!(broken_at(&report), (40, BreakKind::OutOfOrder));
        assert_eq!(report.records, 100);

        // Swapping the rows' content and keeping the seqs in place.
        let mut records = chain(100);
        let (a, b) = (records[39].clone(), records[40].clone());
        records[39] = Record { seq: 40, ..b };
        records[40] = Record { seq: 41, ..a };
        let report = check(records, &[], None);
        assert_eq!(broken_at(&report), (40, BreakKind::Edited));
    }

    #[test]
    fn a_repeated_record_is_out_of_order() {
        let mut records = chain(10);
        records.insert(5, records[4].clone());
        let report = check(records, &[], None);
        assert_eq!(broken_at(&report), (6, BreakKind::OutOfOrder));
    }

    #[test]
    fn a_forged_checkpoint_names_its_record() {
        let records = chain(100);
        // Claims record 50 had another hash, keeping the real signature.
        let mut forged = checkpoint_at(&records, 50);
        forged.hash = records[10].hash;
        let report = check(records.clone(), &[forged], head(&records));
        assert_eq!(broken_at(&report), (50, BreakKind::BadCheckpointSignature));

        let mut garbled = checkpoint_at(&records, 60);
        garbled.sig[5] ^= 1;
        let report = check(
            records.clone(),
            &[checkpoint_at(&records, 10), garbled],
            None,
        );
        assert_eq!(broken_at(&report), (60, BreakKind::BadCheckpointSignature));
        assert_eq!(report.last_checkpoint, Some(10));

        // Past the end of the chain too.
        let mut beyond = checkpoint_at(&records, 100);
        beyond.seq = 120;
        let report = check(records, &[beyond], None);
        assert_eq!(broken_at(&report), (120, BreakKind::BadCheckpointSignature));
    }

    #[test]
    fn a_checkpoint_by_an_untrusted_key_names_its_record() {
        let records = chain(100);
        let r = &records[49];
        let other = SigningKey::from_bytes(&[9; 32]);
        let cp = sign_checkpoint(&other, r.seq, r.hash, r.at_ms);
        let report = check(records.clone(), &[cp], None);
        assert_eq!(broken_at(&report), (50, BreakKind::UntrustedCheckpointKey));
        assert!(report
            .first_break
            .unwrap()
            .message
            .contains(&key_fingerprint(&other.verifying_key().to_bytes())));
    }

    #[test]
    fn a_rewritten_tail_is_caught_by_the_next_checkpoint() {
        // Someone edits record 50 and rehashes everything after it: the
        // chain links up again, the signed checkpoint of record 60 does not.
        let records = chain(100);
        let cps = [checkpoint_at(&records, 40), checkpoint_at(&records, 60)];
        let mut rewritten: Vec<Record> = records[..49].to_vec();
        let mut prev = records[48].hash;
        for r in &records[49..] {
            let mut e = r.event();
            let data = r.data.replace("event", "nothing");
            if r.seq == 50 {
                e.data = &data;
            }
            let r = link(r.seq, prev, &e);
            prev = r.hash;
            rewritten.push(r);
        }
        let h = head(&rewritten);
        let report = check(rewritten, &cps, h);
        assert_eq!(broken_at(&report), (60, BreakKind::CheckpointMismatch));
        assert_eq!(report.last_checkpoint, Some(40));
    }

    #[test]
    fn a_head_that_is_not_the_last_record_is_named() {
        let records = chain(100);
        let other = Some((100, records[98].hash));
        assert_eq!(
            broken_at(&check(records.clone(), &[], other)),
            (100, BreakKind::HeadMismatch)
        );
        let behind = Some((97, records[96].hash));
        assert_eq!(
            broken_at(&check(records, &[], behind)),
            (98, BreakKind::HeadMismatch)
        );
    }

    #[test]
    fn the_first_break_by_seq_wins() {
        let mut records = chain(100);
        let mut bad = checkpoint_at(&records, 80);
        bad.sig[0] ^= 1;
        records[29].data = "{}".into();
        let report = check(records, &[bad], None);
        assert_eq!(broken_at(&report), (30, BreakKind::Edited));
    }

    #[test]
    fn no_two_field_splits_share_a_hash() {
        let e = NewEvent {
            at_ms: 1,
            tenant: "ab",
            actor: "c",
            kind: "k",
            subject: "s",
            data: "{}",
        };
        let moved = NewEvent {
            tenant: "a",
            actor: "bc",
            ..e
        };
        assert_ne!(
            record_hash(1, &GENESIS, &e),
            record_hash(1, &GENESIS, &moved)
        );
        assert_ne!(record_hash(1, &GENESIS, &e), record_hash(2, &GENESIS, &e));
    }

    #[test]
    fn report_and_record_serialize_for_export() {
        let mut records = chain(3);
        records.swap(0, 1);
        let report = serde_json::to_value(check(records, &[], None)).unwrap();
        assert_eq!(report["records"], 3);
        assert_eq!(report["verified_upto"], 0);
        assert_eq!(report["last_checkpoint"], serde_json::Value::Null);
        assert_eq!(report["first_break"]["seq"], 1);
        assert_eq!(report["first_break"]["kind"], "out_of_order");

        let mut r = chain(1).remove(0);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["data"]["note"], "event 1");
        assert_eq!(v["prev_hash"], "0".repeat(64));
        assert_eq!(v["hash"], hex(&r.hash));
        assert_eq!(v["seq"], 1);
        assert_eq!(v["actor"], "approver:alice");
        r.data = "not json".into();
        assert_eq!(serde_json::to_value(&r).unwrap()["data"], "not json");
    }
}
