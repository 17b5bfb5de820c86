//! gzip request bodies (RFC 1952), for tools that declare
//! `encodings: [gzip]`.
//!
//! A compressed body is judged on what it inflates to, so it must inflate
//! the same way for the gate and the upstream: exactly one member, a valid
//! header, a CRC-32 and length that match, nothing after it, and never more
//! than `max_body_bytes` of output (a small body that inflates to gigabytes
//! stops at the limit). Inflating writes into a buffer sized once; nothing
//! is allocated per request. A body DLP rewrites is sent on as gzip again,
//! with stored (uncompressed) deflate blocks: valid for every decoder, and
//! no compressor in the filter.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GzipError {
    /// Not a gzip member header (magic, method, reserved flags).
    Header,
    /// The deflate stream is broken or cut short.
    Corrupt,
    /// Inflates past the limit.
    TooLarge { limit: u32 },
    /// CRC-32 or length in the trailer does not match.
    Checksum,
    /// Data after the first member (decoders disagree on reading it).
    Trailing,
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GzipError::Header => f.write_str("gzip body: not a gzip header"),
            GzipError::Corrupt => f.write_str("gzip body: corrupt or truncated deflate data"),
            GzipError::TooLarge { limit } => {
                write!(
                    f,
                    "gzip body inflates past the {limit} bytes a body may have"
                )
            }
            GzipError::Checksum => f.write_str("gzip body: checksum or length mismatch"),
            GzipError::Trailing => f.write_str("gzip body: data after the first member"),
        }
    }
}

/// Reusable inflate state and output buffer.
pub struct Inflater {
    state: Box<DecompressorOxide>,
    out: Vec<u8>,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("capacity", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// Room for `limit` inflated bytes (0: none until sized).
    pub fn new(limit: usize) -> Self {
        Inflater {
            state: Box::default(),
            out: alloc::vec![0; limit],
        }
    }

    /// Inflates one gzip member into the buffer and returns the bytes.
    pub fn inflate(&mut self, body: &[u8], limit: u32) -> Result<&[u8], GzipError> {
        let data = skip_header(body).ok_or(GzipError::Header)?;
        if self.out.len() < limit as usize {
            // Once per scratch not made by `Scratch::for_bundle`.
            self.out.resize(limit as usize, 0);
        }
        let room = limit as usize;
        let out = self.out.get_mut(..room).unwrap_or_default();
        self.state.init();
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        let (status, used, n) = decompress(&mut self.state, data, out, 0, flags);
        match status {
            TINFLStatus::Done => {}
            TINFLStatus::HasMoreOutput => return Err(GzipError::TooLarge { limit }),
            _ => return Err(GzipError::Corrupt),
        }
        let rest = data.get(used..).unwrap_or_default();
        let (trailer, extra) = match (rest.get(..8), rest.get(8..)) {
            (Some(t), Some(e)) => (t, e),
            _ => return Err(GzipError::Corrupt),
        };
        if !extra.is_empty() {
            return Err(GzipError::Trailing);
        }
        let inflated = out.get(..n).unwrap_or_default();
        let word = |at: usize| {
            trailer
                .get(at..at + 4)
                .and_then(|w| <[u8; 4]>::try_from(w).ok())
                .map(u32::from_le_bytes)
        };
        if word(0) != Some(crc32(inflated)) || word(4) != u32::try_from(n).ok() {
            return Err(GzipError::Checksum);
        }
        Ok(inflated)
    }
}

const FTEXT: u8 = 1;
const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;

/// The deflate data after a gzip member header.
fn skip_header(b: &[u8]) -> Option<&[u8]> {
    let (head, mut rest) = (b.get(..10)?, b.get(10..)?);
    if head.first() != Some(&0x1f) || head.get(1) != Some(&0x8b) || head.get(2) != Some(&8) {
        return None;
    }
    let flags = *head.get(3)?;
    if flags & !(FTEXT | FHCRC | FEXTRA | FNAME | FCOMMENT) != 0 {
        return None;
    }
    if flags & FEXTRA != 0 {
        let len = usize::from(u16::from_le_bytes([*rest.first()?, *rest.get(1)?]));
        rest = rest.get(2 + len..)?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = rest.iter().position(|&c| c == 0)?;
            rest = rest.get(end + 1..)?;
        }
    }
    if flags & FHCRC != 0 {
        rest = rest.get(2..)?;
    }
    Some(rest)
}

/// Appends `data` to `out` as one gzip member of stored deflate blocks.
pub fn write_stored(data: &[u8], out: &mut Vec<u8>) {
    // Header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        let len = c.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
}

// Evaluated at compile time: an index out of bounds would fail the build,
// it cannot panic at run time.
#[allow(clippy::indexing_slicing)]
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE), as gzip's trailer carries it.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        let i = usize::from((c as u8) ^ b);
        CRC_TABLE.get(i).copied().unwrap_or(0) ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `printf 'hello' | gzip -n | base64`
    const HELLO: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9,
        0x07, 0x00, 0x86, 0xa6, 0x10, 0x36, 0x05, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn crc() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"hello"), 0x3610_a686);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn inflates_one_member() {
        let mut z = Inflater::new(64);
        assert_eq!(z.inflate(HELLO, 64), Ok(&b"hello"[..]));
        // Reusable.
        assert_eq!(z.inflate(HELLO, 64), Ok(&b"hello"[..]));
        assert_eq!(z.inflate(HELLO, 4), Err(GzipError::TooLarge { limit: 4 }));
    }

    #[test]
    fn refuses_what_decoders_could_read_differently() {
        let mut z = Inflater::new(64);
        let mut two = HELLO.to_vec();
        two.extend_from_slice(HELLO);
        assert_eq!(z.inflate(&two, 64), Err(GzipError::Trailing));
        let mut bad_crc = HELLO.to_vec();
        bad_crc[17] ^= 1;
        assert_eq!(z.inflate(&bad_crc, 64), Err(GzipError::Checksum));
        let mut bad_len = HELLO.to_vec();
        bad_len[21] = 6;
        assert_eq!(z.inflate(&bad_len, 64), Err(GzipError::Checksum));
        assert_eq!(z.inflate(&HELLO[..20], 64), Err(GzipError::Corrupt));
        assert_eq!(z.inflate(b"hello", 64), Err(GzipError::Header));
        let mut reserved = HELLO.to_vec();
        reserved[3] = 0x20;
        assert_eq!(z.inflate(&reserved, 64), Err(GzipError::Header));
        // A name in the header is skipped.
        let mut named = HELLO[..10].to_vec();
        named[3] = FNAME;
        named.extend_from_slice(b"a.txt\0");
        named.extend_from_slice(&HELLO[10..]);
        assert_eq!(z.inflate(&named, 64), Ok(&b"hello"[..]));
    }

    #[test]
    fn stored_round_trip() {
        let mut z = Inflater::new(200_000);
        for data in [&b""[..], b"x", &[7u8; 70_000][..], &[1u8; 0xffff][..]] {
            let mut gz = Vec::new();
            write_stored(data, &mut gz);
            assert_eq!(z.inflate(&gz, 200_000), Ok(data), "{}", data.len());
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 10 MB of zeros compress to about 10 KB.
        let mut enc = miniz_oxide_encode(&alloc::vec![0u8; 10 << 20]);
        let mut z = Inflater::new(4096);
        assert_eq!(
            z.inflate(&enc, 4096),
            Err(GzipError::TooLarge { limit: 4096 })
        );
        enc.clear();
    }

    /// A real compressed member (not stored blocks), built from a deflate
    /// stream of one repeated byte written by hand: a fixed-Huffman block
    /// of one literal and back-references.
    fn miniz_oxide_encode(data: &[u8]) -> Vec<u8> {
        // Stored blocks would be as large as the data; instead write the
        // smallest valid stream that inflates to `data` when `data` is all
        // zeros: literal 0, then length-258 copies at distance 1.
        assert!(data.iter().all(|&b| b == 0));
        let mut bits = BitWriter::default();
        bits.put(1, 1); // final block
        bits.put(1, 2); // fixed Huffman (BTYPE=01, LSB first)
        bits.put_rev(0x30, 8); // literal 0: code 00110000
        let mut left = data.len() - 1;
        while left >= 258 {
            bits.put_rev(0b1100_0101, 8); // length 258: code 285 = 11000101
            bits.put_rev(0, 5); // distance code 0 = distance 1
            left -= 258;
        }
        while left > 0 {
            bits.put_rev(0x30, 8);
            left -= 1;
        }
        bits.put_rev(0, 7); // end of block: code 256 = 0000000
        let mut out = alloc::vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        out.extend_from_slice(&bits.finish());
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }

    impl BitWriter {
        fn put(&mut self, v: u32, n: u32) {
            self.acc |= v << self.n;
            self.n += n;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn put_rev(&mut self, v: u32, n: u32) {
            for i in (0..n).rev() {
                self.put((v >> i) & 1, 1);
            }
        }
        fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }
}
