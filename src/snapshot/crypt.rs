//! Encryption at rest: a streamed, segmented AEAD format (in the manner of age's STREAM and
//! Tink's streaming AEAD) with AES-256-GCM from aws-lc-rs, the crypto library rustls already
//! uses here. Memory is one segment, whatever the size of the snapshot.
//!
//! # Format `ESOENC1` (all integers big-endian)
//!
//! ```text
//! header (52 bytes)
//!   0..8    magic "ESOENC1\0"
//!   8       version = 1
//!   9       algorithm = 1: AES-256-GCM, per-file key = HKDF-SHA256(key, salt)
//!   10      log2 of the segment size (16: 64 KiB of plaintext per segment; 10..=22 accepted)
//!   11      reserved = 0
//!   12..20  key id: SHA-256("etcd-snapshot-operator ESOENC1 key id\0" || key)[0..8]
//!   20..52  salt: 32 random bytes, fresh for every file
//! segments, one after the other
//!   ciphertext of the plaintext segment || 16-byte GCM tag
//! ```
//!
//! - Per-file key: `HKDF-SHA256(salt = header salt, ikm = the 32-byte key, info =
//!   "etcd-snapshot-operator ESOENC1 payload key")`. A fresh random salt per file means a fresh
//!   key per file, so the deterministic nonces below never repeat under one key.
//! - Nonce of segment `i` (12 bytes): `0x000000 || i as u64 || last`, where `last` is 1 for the
//!   final segment and 0 otherwise.
//! - Additional authenticated data of every segment: the whole 52-byte header (so version,
//!   algorithm, segment size, key id and salt cannot be changed).
//! - Every segment but the last holds exactly one segment size of plaintext; the last holds
//!   0..=segment size bytes and is empty only when the whole plaintext is empty.
//!
//! What this detects: any changed byte (the segment does not authenticate), reordered segments
//! (counter in the nonce), a file cut at any point including a segment boundary (the segment
//! read last was not sealed as last), data appended after the last segment (the last segment is
//! then read as not-last and fails), a wrong key (the key id differs, reported as such before any
//! data is read). What it does not hide: the size of the snapshot, and everything outside the
//! stored bytes (object names, S3 metadata, the `.checksums` and `.metadata` sidecars).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;
use zeroize::Zeroize;

/// First bytes of every encrypted file.
pub const MAGIC: &[u8; 8] = b"ESOENC1\0";
/// Format version written.
pub const VERSION: u8 = 1;
/// Algorithm id: AES-256-GCM with an HKDF-SHA256 per-file key.
pub const ALG_AES_256_GCM_HKDF_SHA256: u8 = 1;
/// Name of that algorithm, as recorded in S3 metadata and ETCDSnapshotFile status.
pub const ALGORITHM_NAME: &str = "aes-256-gcm";
/// Length of the header.
pub const HEADER_LEN: usize = 52;
/// log2 of the plaintext segment size written (64 KiB).
pub const SEGMENT_LOG2: u8 = 16;
/// Plaintext bytes per segment written.
pub const SEGMENT: usize = 1 << SEGMENT_LOG2;
/// Length of the GCM tag of each segment.
pub const TAG_LEN: usize = 16;
/// Length of a key.
pub const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 8;
const SALT_LEN: usize = 32;
const KEY_ID_CONTEXT: &[u8] = b"etcd-snapshot-operator ESOENC1 key id\0";
const PAYLOAD_KEY_INFO: &[u8] = b"etcd-snapshot-operator ESOENC1 payload key";
const MIN_SEGMENT_LOG2: u8 = 10;
const MAX_SEGMENT_LOG2: u8 = 22;

/// Why data cannot be encrypted or decrypted, or a key cannot be used. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The key material is not a 32-byte key in one of the accepted forms.
    #[error(
        "the encryption key must be 32 bytes: raw, or 44 characters of base64, or 64 hex digits (got {0})"
    )]
    KeyFormat(String),
    /// The key file cannot be read.
    #[error("cannot read encryption key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The data does not start with the `ESOENC1` magic.
    #[error("not encrypted data (no ESOENC1 header)")]
    NotEncrypted,
    /// The header is cut short or names a version or algorithm this build does not know.
    #[error("unusable encryption header: {0}")]
    Header(String),
    /// The data was encrypted with another key.
    #[error(
        "encrypted with key id {file}, but the given key has id {given}: use the key the snapshot was saved with"
    )]
    WrongKey {
        /// Key id in the header.
        file: KeyId,
        /// Key id of the key given.
        given: KeyId,
    },
    /// A segment does not authenticate.
    #[error(
        "segment {segment} does not authenticate: the encrypted data was changed, cut short or extended"
    )]
    Damaged {
        /// Index of the segment (0-based).
        segment: u64,
    },
    /// The data ends inside a segment's tag.
    #[error("encrypted data is cut short inside segment {segment}")]
    Truncated {
        /// Index of the segment (0-based).
        segment: u64,
    },
    /// The system random generator or the cipher failed.
    #[error("encryption failed: {0}")]
    Cipher(&'static str),
    /// Reading or writing the underlying data failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl CryptError {
    /// Whether the encrypted data itself is bad (changed, truncated, extended, bad header), as
    /// opposed to a wrong key or an I/O problem.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            CryptError::NotEncrypted
                | CryptError::Header(_)
                | CryptError::Damaged { .. }
                | CryptError::Truncated { .. }
        )
    }

    /// The `CryptError` carried by an I/O error from [`DecryptReader`], if that is what it is.
    pub fn from_io(e: &io::Error) -> Option<&CryptError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<CryptError>())
    }

    /// The `CryptError` an I/O error from [`DecryptReader`] carries, or the I/O error itself.
    pub fn take_from_io(e: io::Error) -> Result<CryptError, io::Error> {
        if Self::from_io(&e).is_none() {
            return Err(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<CryptError>()) {
            Some(Ok(c)) => Ok(*c),
            Some(Err(other)) => Err(io::Error::new(kind, other)),
            None => Err(io::Error::from(kind)),
        }
    }
}

fn io_error(e: CryptError) -> io::Error {
    match e {
        CryptError::Io(e) => e,
        other => io::Error::new(ErrorKind::InvalidData, other),
    }
}

/// A short public fingerprint of a key (8 bytes, shown as 16 hex digits). It tells keys apart;
/// it does not reveal the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// The id as 16 lowercase hex digits.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 32-byte encryption key. Its `Debug` shows only the key id; the bytes are zeroed on drop.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: [u8; KEY_LEN],
    id: KeyId,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey {{ id: {} }}", self.id)
    }
}

impl Drop for EncryptionKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl EncryptionKey {
    /// A key from the content of a key file or Secret value: exactly 32 raw bytes, or (surrounding
    /// whitespace ignored) 44 characters of standard base64 or 64 hex digits that decode to 32
    /// bytes.
    ///
    /// 32 bytes of printable text are refused: that is a password, not a random key (random
    /// bytes are all printable with a probability below 10^-13).
    pub fn parse(data: &[u8]) -> Result<EncryptionKey, CryptError> {
        if data.len() == KEY_LEN && data.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(CryptError::KeyFormat(
                "32 characters of text: a password is not a key; make one with `openssl rand -base64 32`"
                    .into(),
            ));
        }
        if data.len() == KEY_LEN {
            let mut bytes = [0u8; KEY_LEN];
            bytes.copy_from_slice(data);
            return Ok(Self::from_array(bytes));
        }
        let text = data.trim_ascii();
        let decoded = match text.len() {
            44 => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| CryptError::KeyFormat("44 characters that are not base64".into()))?,
            64 => hex::decode(text)
                .map_err(|_| CryptError::KeyFormat("64 characters that are not hex".into()))?,
            n => return Err(CryptError::KeyFormat(format!("{n} bytes"))),
        };
        let decoded = zeroize::Zeroizing::new(decoded);
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            CryptError::KeyFormat(format!("text that decodes to {} bytes", decoded.len()))
        })?;
        Ok(Self::from_array(bytes))
    }

    /// Read a key file (see [`EncryptionKey::parse`] for the accepted forms).
    pub fn from_file(path: &Path) -> Result<EncryptionKey, CryptError> {
        let data = std::fs::read(path).map_err(|source| CryptError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        let data = zeroize::Zeroizing::new(data);
        Self::parse(&data)
    }

    /// A fresh random key.
    pub fn generate() -> Result<EncryptionKey, CryptError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CryptError::Cipher("random generator"))?;
        Ok(Self::from_array(bytes))
    }

    /// The key as standard base64 (the form to store in a key file or Secret).
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.bytes)
    }

    fn from_array(bytes: [u8; KEY_LEN]) -> EncryptionKey {
        let digest = Sha256::new()
            .chain_update(KEY_ID_CONTEXT)
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        EncryptionKey {
            bytes,
            id: KeyId(id),
        }
    }

    /// The key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The per-file AES-256-GCM key for `salt`.
    fn file_key(&self, salt: &[u8]) -> Result<LessSafeKey, CryptError> {
        let prk = Salt::new(HKDF_SHA256, salt).extract(&self.bytes);
        let okm = prk
            .expand(&[PAYLOAD_KEY_INFO], &AES_256_GCM)
            .map_err(|_| CryptError::Cipher("key derivation"))?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

/// What the header of an encrypted file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Id of the key the file was encrypted with.
    pub key_id: KeyId,
    /// Plaintext bytes per segment.
    pub segment: usize,
    bytes: [u8; HEADER_LEN],
}

impl Header {
    /// Whether `head` starts with the magic of this format.
    pub fn is_encrypted(head: &[u8]) -> bool {
        head.starts_with(MAGIC)
    }

    /// Read a header from its 52 bytes (or more: the rest is ignored).
    pub fn parse(data: &[u8]) -> Result<Header, CryptError> {
        if !Self::is_encrypted(data) {
            return Err(CryptError::NotEncrypted);
        }
        let bytes: [u8; HEADER_LEN] = data
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                CryptError::Header(format!(
                    "{} bytes, a header is {HEADER_LEN}",
                    data.len().min(HEADER_LEN)
                ))
            })?;
        if bytes[8] != VERSION {
            return Err(CryptError::Header(format!(
                "version {} (this build reads version {VERSION})",
                bytes[8]
            )));
        }
        if bytes[9] != ALG_AES_256_GCM_HKDF_SHA256 {
            return Err(CryptError::Header(format!(
                "algorithm {} (this build knows {ALG_AES_256_GCM_HKDF_SHA256}: {ALGORITHM_NAME})",
                bytes[9]
            )));
        }
        if !(MIN_SEGMENT_LOG2..=MAX_SEGMENT_LOG2).contains(&bytes[10]) || bytes[11] != 0 {
            return Err(CryptError::Header(format!(
                "segment size 2^{} or reserved byte {} out of range",
                bytes[10], bytes[11]
            )));
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&bytes[12..12 + KEY_ID_LEN]);
        Ok(Header {
            key_id: KeyId(id),
            segment: 1 << bytes[10],
            bytes,
        })
    }

    fn new(key: &EncryptionKey) -> Result<Header, CryptError> {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8] = VERSION;
        bytes[9] = ALG_AES_256_GCM_HKDF_SHA256;
        bytes[10] = SEGMENT_LOG2;
        bytes[12..12 + KEY_ID_LEN].copy_from_slice(&key.id.0);
        aws_lc_rs::rand::fill(&mut bytes[20..20 + SALT_LEN])
            .map_err(|_| CryptError::Cipher("random generator"))?;
        Ok(Header {
            key_id: key.id,
            segment: SEGMENT,
            bytes,
        })
    }

    fn salt(&self) -> &[u8] {
        &self.bytes[20..20 + SALT_LEN]
    }
}

/// The key id in the header of the file at `path`; `None` when it cannot be read or is not an
/// encrypted file.
pub fn file_key_id(path: &Path) -> Option<KeyId> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut head = [0u8; HEADER_LEN];
    let n = read_full(&mut file, &mut head).ok()?;
    Header::parse(&head[..n]).ok().map(|h| h.key_id)
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Encrypts everything written to it into `inner` in the `ESOENC1` format. Call
/// [`EncryptWriter::finish`] at the end: without the last segment the output does not decrypt.
pub struct EncryptWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    header: Header,
    counter: u64,
    /// Plaintext of the current segment (then sealed in place, with room for the tag).
    buf: Vec<u8>,
}

impl<W: Write> EncryptWriter<W> {
    /// Start a file: writes the header to `inner`.
    pub fn new(mut inner: W, key: &EncryptionKey) -> Result<EncryptWriter<W>, CryptError> {
        let header = Header::new(key)?;
        let file_key = key.file_key(header.salt())?;
        inner.write_all(&header.bytes)?;
        Ok(EncryptWriter {
            inner,
            key: file_key,
            header,
            counter: 0,
            buf: Vec::with_capacity(SEGMENT + TAG_LEN),
        })
    }

    /// The writer the ciphertext goes to (e.g. to drain a `Vec` as it fills).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        self.key
            .seal_in_place_append_tag(
                nonce(self.counter, last),
                Aad::from(&self.header.bytes[..]),
                &mut self.buf,
            )
            .map_err(|_| io_error(CryptError::Cipher("AES-GCM seal")))?;
        self.counter += 1;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Seal the last segment and return the inner writer (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full segment is sealed only once more data follows: the last segment may be full.
        if self.buf.len() == SEGMENT {
            self.seal(false)?;
        }
        let n = data.len().min(SEGMENT - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts and authenticates an `ESOENC1` stream as it is read. Errors are `io::Error`s of
/// kind `InvalidData` carrying a [`CryptError`] (see [`CryptError::from_io`]). Bytes are only
/// returned once their segment has authenticated; a stream that is cut short or extended fails
/// at its end.
pub struct DecryptReader<R: Read> {
    inner: R,
    key: LessSafeKey,
    header: Header,
    counter: u64,
    /// Ciphertext of the current segment plus one byte of lookahead; then its plaintext.
    buf: Vec<u8>,
    /// Plaintext in `buf[pos..plain]`.
    pos: usize,
    plain: usize,
    /// The byte read after the current segment (the start of the next one).
    lookahead: Option<u8>,
    done: bool,
}

impl<R: Read> DecryptReader<R> {
    /// Read and check the header: fails with [`CryptError::WrongKey`] before any data when the
    /// stream was encrypted with another key.
    pub fn new(mut inner: R, key: &EncryptionKey) -> Result<DecryptReader<R>, CryptError> {
        let mut head = [0u8; HEADER_LEN];
        let n = read_full(&mut inner, &mut head)?;
        let header = Header::parse(&head[..n])?;
        if header.key_id != key.id {
            return Err(CryptError::WrongKey {
                file: header.key_id,
                given: key.id,
            });
        }
        let file_key = key.file_key(header.salt())?;
        let cap = header.segment + TAG_LEN + 1;
        Ok(DecryptReader {
            inner,
            key: file_key,
            header,
            counter: 0,
            buf: vec![0u8; cap],
            pos: 0,
            plain: 0,
            lookahead: None,
            done: false,
        })
    }

    /// The header read.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Read, authenticate and decrypt the next segment into `buf[..plain]`.
    fn next_segment(&mut self) -> Result<(), CryptError> {
        let want = self.header.segment + TAG_LEN + 1;
        self.buf.resize(want, 0);
        let mut filled = 0;
        if let Some(b) = self.lookahead.take() {
            self.buf[0] = b;
            filled = 1;
        }
        filled += read_full(&mut self.inner, &mut self.buf[filled..want])?;
        let last = filled < want;
        let sealed = if last { filled } else { want - 1 };
        if sealed < TAG_LEN {
            return Err(CryptError::Truncated {
                segment: self.counter,
            });
        }
        if !last {
            self.lookahead = Some(self.buf[want - 1]);
        }
        let plain = self
            .key
            .open_in_place(
                nonce(self.counter, last),
                Aad::from(&self.header.bytes[..]),
                &mut self.buf[..sealed],
            )
            .map_err(|_| CryptError::Damaged {
                segment: self.counter,
            })?
            .len();
        self.counter += 1;
        self.pos = 0;
        self.plain = plain;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.plain {
            if self.done {
                return Ok(0);
            }
            self.next_segment().map_err(io_error)?;
        }
        let n = out.len().min(self.plain - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> EncryptionKey {
        EncryptionKey::parse(&[b; KEY_LEN]).expect("32 bytes")
    }

    fn encrypt(key: &EncryptionKey, data: &[u8]) -> Vec<u8> {
        let mut w = EncryptWriter::new(Vec::new(), key).expect("writer");
        w.write_all(data).expect("write");
        w.finish().expect("finish")
    }

    fn decrypt(key: &EncryptionKey, data: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut r = DecryptReader::new(data, key)?;
        let mut out = Vec::new();
        match r.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => Err(CryptError::take_from_io(e).unwrap_or_else(CryptError::Io)),
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_segment_edges() {
        let k = key(7);
        for n in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            5 * SEGMENT + 123,
        ] {
            let data = pattern(n);
            let enc = encrypt(&k, &data);
            let segments = n.div_ceil(SEGMENT).max(1);
            assert_eq!(enc.len(), HEADER_LEN + n + segments * TAG_LEN, "size {n}");
            assert_eq!(decrypt(&k, &enc).expect("decrypts"), data, "size {n}");
        }
    }

    #[test]
    fn same_plaintext_encrypts_differently_each_time() {
        let k = key(1);
        let data = pattern(1000);
        assert_ne!(encrypt(&k, &data), encrypt(&k, &data));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let k = key(3);
        // Every byte of a one-segment file, and a sample (plus the segment edges) of a
        // three-segment one.
        let small = encrypt(&k, &pattern(300));
        for i in 0..small.len() {
            let mut bad = small.clone();
            bad[i] ^= 0x01;
            assert!(decrypt(&k, &bad).is_err(), "flip at {i} undetected");
        }
        let big = encrypt(&k, &pattern(2 * SEGMENT + 5));
        for i in (0..big.len()).step_by(997).chain([
            HEADER_LEN,
            HEADER_LEN + SEGMENT + TAG_LEN - 1,
            HEADER_LEN + SEGMENT + TAG_LEN,
            big.len() - 1,
        ]) {
            let mut bad = big.clone();
            bad[i] ^= 0x80;
            assert!(decrypt(&k, &bad).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn truncation_anywhere_is_detected() {
        let k = key(4);
        let data = pattern(3 * SEGMENT + 10);
        let enc = encrypt(&k, &data);
        let seg = SEGMENT + TAG_LEN;
        let mut cuts: Vec<usize> = (0..=3).map(|i| HEADER_LEN + i * seg).collect();
        cuts.extend([
            0,
            5,
            HEADER_LEN - 1,
            HEADER_LEN + 3,
            enc.len() - 1,
            enc.len() - 17,
        ]);
        for cut in cuts {
            assert!(decrypt(&k, &enc[..cut]).is_err(), "cut at {cut} undetected");
        }
        // An empty plaintext still has a sealed (empty) last segment: the bare header fails.
        let empty = encrypt(&k, b"");
        assert_eq!(empty.len(), HEADER_LEN + TAG_LEN);
        assert!(decrypt(&k, &empty[..HEADER_LEN]).is_err());
    }

    #[test]
    fn appended_or_reordered_data_is_detected() {
        let k = key(5);
        let enc = encrypt(&k, &pattern(2 * SEGMENT + 1));
        let mut appended = enc.clone();
        appended.push(0);
        assert!(decrypt(&k, &appended).is_err());
        let mut doubled = enc.clone();
        doubled.extend_from_slice(&enc[HEADER_LEN..]);
        assert!(decrypt(&k, &doubled).is_err());
        let seg = SEGMENT + TAG_LEN;
        let mut swapped = enc[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&enc[HEADER_LEN + seg..HEADER_LEN + 2 * seg]);
        swapped.extend_from_slice(&enc[HEADER_LEN..HEADER_LEN + seg]);
        swapped.extend_from_slice(&enc[HEADER_LEN + 2 * seg..]);
        assert!(decrypt(&k, &swapped).is_err());
        // A segment from another file of the same key does not fit either.
        let other = encrypt(&k, &pattern(2 * SEGMENT + 1));
        let mut spliced = enc[..HEADER_LEN + seg].to_vec();
        spliced.extend_from_slice(&other[HEADER_LEN + seg..]);
        assert!(decrypt(&k, &spliced).is_err());
    }

    #[test]
    fn wrong_key_is_named_by_id_before_any_data() {
        let (a, b) = (key(1), key(2));
        let enc = encrypt(&a, b"secret");
        let err = DecryptReader::new(&enc[..], &b)
            .err()
            .expect("wrong key refused");
        assert_eq!(
            err.to_string(),
            format!(
                "encrypted with key id {}, but the given key has id {}: use the key the snapshot was saved with",
                a.id(),
                b.id()
            )
        );
        assert!(!err.is_damage());
        assert_eq!(a.id().to_hex().len(), 16);
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn header_problems_are_clear() {
        let k = key(1);
        assert!(matches!(
            DecryptReader::new(&b"plain etcd data......"[..], &k).err(),
            Some(CryptError::NotEncrypted)
        ));
        let mut enc = encrypt(&k, b"x");
        enc[8] = 9;
        let err = DecryptReader::new(&enc[..], &k).err().expect("refused");
        assert!(err.to_string().contains("version 9"), "{err}");
        assert!(matches!(
            DecryptReader::new(&MAGIC[..], &k).err(),
            Some(CryptError::Header(_))
        ));
    }

    #[test]
    fn key_forms_are_accepted_and_key_bytes_never_shown() {
        let k = EncryptionKey::generate().expect("key");
        let b64 = k.to_base64();
        let from_b64 = EncryptionKey::parse(format!("{b64}\n").as_bytes()).expect("base64");
        assert_eq!(from_b64.id(), k.id());
        let from_hex = EncryptionKey::parse(hex::encode(k.bytes).as_bytes()).expect("hex");
        assert_eq!(from_hex.id(), k.id());
        let debug = format!("{k:?}");
        assert!(!debug.contains(&b64) && !debug.contains(&hex::encode(k.bytes)));
        assert!(debug.contains(&k.id().to_hex()));
        for bad in [
            &b"short"[..],
            &[b'x'; 44][..],
            &[b'z'; 64][..],
            &[0u8; 33][..],
        ] {
            let err = EncryptionKey::parse(bad).expect_err("refused");
            let text = err.to_string();
            assert!(
                text.starts_with("the encryption key must be 32 bytes"),
                "{text}"
            );
            assert!(!text.contains("xxxx") && !text.contains("zzzz"), "{text}");
        }
        // A 32-character password is not taken for a raw key.
        let err = EncryptionKey::parse(b"correct-horse-battery-staple-123").expect_err("text");
        assert!(err.to_string().contains("a password is not a key"), "{err}");
        // base64 of 31 bytes is 44 characters too, but not a key.
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        assert!(EncryptionKey::parse(short.as_bytes()).is_err());
    }

    /// Throughput of the adapters (run with `--ignored --nocapture`, best in release).
    #[test]
    #[ignore = "measurement, not a check"]
    fn throughput() {
        let k = key(1);
        let data = pattern(64 << 20);
        let t = std::time::Instant::now();
        let mut w =
            EncryptWriter::new(Vec::with_capacity(data.len() + (1 << 20)), &k).expect("writer");
        for chunk in data.chunks(1 << 20) {
            w.write_all(chunk).expect("write");
        }
        let enc = w.finish().expect("finish");
        let seal = t.elapsed();
        let t = std::time::Instant::now();
        let mut r = DecryptReader::new(&enc[..], &k).expect("reader");
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0;
        loop {
            let got = r.read(&mut buf).expect("read");
            if got == 0 {
                break;
            }
            n += got;
        }
        let open = t.elapsed();
        assert_eq!(n, data.len());
        let mib = data.len() as f64 / (1 << 20) as f64;
        eprintln!(
            "encrypt {:.0} MiB/s, decrypt {:.0} MiB/s",
            mib / seal.as_secs_f64(),
            mib / open.as_secs_f64()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_chunking_round_trips(len in 0usize..(3 * SEGMENT + 100), chunks in prop::collection::vec(1usize..(SEGMENT + 300), 1..12)) {
            let k = key(9);
            let data = pattern(len);
            let mut w = EncryptWriter::new(Vec::new(), &k).expect("writer");
            let mut at = 0;
            let mut i = 0;
            while at < data.len() {
                let n = chunks[i % chunks.len()].min(data.len() - at);
                w.write_all(&data[at..at + n]).expect("write");
                at += n;
                i += 1;
            }
            let enc = w.finish().expect("finish");
            // Read back in odd-sized reads too.
            let mut r = DecryptReader::new(&enc[..], &k).expect("reader");
            let mut out = Vec::new();
            let mut buf = vec![0u8; chunks[0]];
            loop {
                let n = r.read(&mut buf).expect("read");
                if n == 0 { break; }
                out.extend_from_slice(&buf[..n]);
            }
            prop_assert_eq!(out, data);
        }
    }
}
