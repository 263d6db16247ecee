//! The checks of a local file, in one read: the stored bytes are hashed as they are read, an
//! encrypted file is decrypted and authenticated segment by segment, the compression is
//! confirmed from the first (plain) bytes, and etcd's trailing sha256 is checked as the
//! decompressed bytes go by, on their way to the output file (if one is written).

use super::prepared::{Checks, Decrypt, OwnedTarget, Prepared, Recorded};
use super::{RestoreError, io_err, sibling_name};
use crate::api::Compression;
use crate::snapshot::crypt::EncryptionKey;
use crate::snapshot::crypt::{CryptError, DecryptReader, HEADER_LEN, Header};
use crate::snapshot::trailer::{TrailerCheck, TrailerVerifier};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Read buffer size.
const CHUNK: usize = 256 * 1024;

/// What the first bytes of a file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Plain,
    Zstd,
    Zip,
    Encrypted,
    Unknown,
}

impl Content {
    fn sniff(head: &[u8]) -> Content {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Content::Zstd
        } else if head.starts_with(b"PK\x03\x04") {
            Content::Zip
        } else if Header::is_encrypted(head) {
            Content::Encrypted
        } else if head.get(16..20) == Some(&[0xed, 0xda, 0x0c, 0xed][..]) {
            // bbolt's meta page magic, right after the 16-byte page header.
            Content::Plain
        } else {
            Content::Unknown
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Content::Plain => "a plain etcd snapshot",
            Content::Zstd => "zstd data",
            Content::Zip => "a zip archive",
            Content::Encrypted => "encrypted data (ESOENC1)",
            Content::Unknown => "data that is neither zstd nor an etcd snapshot",
        }
    }
}

/// Refuse content that does not match the compression the name implies.
fn check_named(name: &str, compression: Compression, content: Content) -> Result<(), RestoreError> {
    let named = match (compression, content) {
        (Compression::Zstd, Content::Zstd) | (Compression::Zip, Content::Zip) => return Ok(()),
        (Compression::None, Content::Plain | Content::Unknown) => return Ok(()),
        (Compression::Zstd, _) => "zstd (.zst)",
        (Compression::Zip, _) => "a k3s zip (.zip)",
        (Compression::None, _) => "an uncompressed snapshot (no .zst or .zip suffix)",
    };
    Err(RestoreError::NotCompressedAsNamed {
        name: name.to_string(),
        named,
        found: content.describe(),
    })
}

/// Refuse an `.enc` name without encrypted content, and encrypted content without an `.enc` name.
fn check_encrypted_as_named(
    name: &str,
    encrypted: bool,
    content: Content,
) -> Result<(), RestoreError> {
    match (encrypted, content) {
        (true, Content::Encrypted) | (false, _) => Ok(()),
        (true, found) => Err(RestoreError::NotCompressedAsNamed {
            name: name.to_string(),
            named: "encrypted (.enc)",
            found: found.describe(),
        }),
    }
}

/// Check the first bytes (`head`) against the name, and pick the key to decrypt with: none for
/// a plain copy; a clear error when an encrypted copy has no key, or a zip claims to be encrypted.
fn key_for<'a>(
    display: &str,
    compression: Compression,
    decrypt: &'a Decrypt,
    head: &[u8],
) -> Result<Option<&'a EncryptionKey>, RestoreError> {
    let content = Content::sniff(head);
    check_encrypted_as_named(display, decrypt.encrypted(), content)?;
    match decrypt {
        Decrypt::No => {
            check_named(display, compression, content)?;
            Ok(None)
        }
        Decrypt::With(None) => Err(RestoreError::KeyRequired {
            name: display.to_string(),
            key_id: Header::parse(head).map_or_else(|_| "unknown".into(), |h| h.key_id.to_hex()),
        }),
        Decrypt::With(Some(_)) if compression == Compression::Zip => Err(decompress_err(
            display,
            "zip",
            "a k3s zip is never encrypted; this file is not one of ours",
        )),
        Decrypt::With(Some(key)) => Ok(Some(key)),
    }
}

fn decrypt_err(name: &str, e: CryptError) -> RestoreError {
    RestoreError::Decrypt {
        name: name.to_string(),
        source: e,
    }
}

/// An error while reading through the decryption: a [`CryptError`] it carries, else `other`.
fn read_err(
    name: &str,
    other: impl Fn(std::io::Error) -> RestoreError,
) -> impl Fn(std::io::Error) -> RestoreError {
    move |e| match CryptError::take_from_io(e) {
        Ok(c) => decrypt_err(name, c),
        Err(e) => other(e),
    }
}

/// Check a local file and write its plain snapshot to `target` (blocking).
pub(super) fn check_local(
    path: &Path,
    display: &str,
    compression: Compression,
    decrypt: &Decrypt,
    recorded: &[Recorded],
    target: &OwnedTarget,
) -> Result<Prepared, RestoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(RestoreError::NotFound {
                name: display.to_string(),
                location: path
                    .parent()
                    .map_or_else(|| ".".into(), |p| p.display().to_string()),
            });
        }
        Err(e) => return Err(io_err("opening", path)(e)),
    };
    let meta = file.metadata().map_err(io_err("reading", path))?;
    if !meta.is_file() {
        return Err(io_err("reading", path)(std::io::Error::other(
            "not a regular file",
        )));
    }
    let mut head = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io_err("reading", path))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("reading", path))?;
    let key = key_for(display, compression, decrypt, &head)?;

    let out = match (compression, target) {
        (Compression::None, OwnedTarget::WorkDir(_)) if key.is_none() => None,
        (_, OwnedTarget::WorkDir(dir)) => Some(OutFile::create(dir.join("snapshot"), None)?),
        (_, OwnedTarget::File(f)) => Some(OutFile::create(f.clone(), Some(f.clone()))?),
    };
    let mut sink = Sink::new(out);
    let (stored_sha256, stored_size) = match (compression, key) {
        (_, Some(key)) => {
            let mut reader = HashingReader::new(file);
            {
                let decrypted =
                    DecryptReader::new(&mut reader, key).map_err(|e| decrypt_err(display, e))?;
                plain_from_decrypted(decrypted, display, compression, &mut sink)?;
            }
            reader.finish()
        }
        (Compression::None, None) => {
            let mut reader = HashingReader::new(file);
            copy(&mut reader, &mut sink, |e| io_err("reading", path)(e))?;
            reader.finish()
        }
        (Compression::Zstd, None) => {
            let mut reader = HashingReader::new(file);
            let mut decoder = zstd::stream::read::Decoder::new(&mut reader)
                .map_err(|e| decompress_err(display, "zstd", e))?;
            copy(&mut decoder, &mut sink, |e| {
                decompress_err(display, "zstd", e)
            })?;
            // Hash anything after the last frame too, so the hash covers every stored byte.
            let mut rest = decoder.finish();
            std::io::copy(&mut rest, &mut std::io::sink()).map_err(io_err("reading", path))?;
            drop(rest);
            reader.finish()
        }
        (Compression::Zip, None) => {
            // Check the stored bytes before opening the archive.
            let mut reader = HashingReader::new(&mut file);
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(io_err("reading", path))?;
            let hashed = reader.finish();
            compare(display, &hashed.0, recorded)?;
            unzip_one(&mut file, display, &mut sink)?;
            hashed
        }
    };
    compare(display, &stored_sha256, recorded)?;
    finish_checks(
        sink,
        display,
        compression,
        decrypt,
        recorded,
        (stored_sha256, stored_size),
        Some(path),
    )
}

/// etcd's trailer verdict, then the output file committed (or `in_place` used as it is).
fn finish_checks(
    sink: Sink,
    display: &str,
    compression: Compression,
    decrypt: &Decrypt,
    recorded: &[Recorded],
    (stored_sha256, stored_size): (String, u64),
    in_place: Option<&Path>,
) -> Result<Prepared, RestoreError> {
    let (trailer, out) = sink.finish()?;
    let snapshot_size = trailer.total();
    match trailer.finish() {
        TrailerCheck::Ok => {}
        TrailerCheck::Mismatch { expected, actual } => {
            return Err(RestoreError::EtcdHashMismatch {
                name: display.to_string(),
                expected,
                actual,
            });
        }
        TrailerCheck::TooShort(size) => {
            return Err(RestoreError::TooShort {
                name: display.to_string(),
                size,
            });
        }
    }
    let checks = Checks {
        source: display.to_string(),
        compression,
        stored_size,
        stored_sha256,
        recorded: recorded.to_vec(),
        snapshot_size,
        encryption_key_id: match decrypt {
            Decrypt::With(Some(key)) => Some(key.id().to_hex()),
            _ => None,
        },
        metadata: None,
        recorded_etcd_version: None,
    };
    Ok(match out {
        None => match in_place {
            Some(path) => Prepared::new(path.to_path_buf(), checks, None),
            None => {
                return Err(RestoreError::Internal(
                    "no plain snapshot was written".into(),
                ));
            }
        },
        Some(out) => {
            let (path, owned) = out.commit()?;
            Prepared::new(path, checks, owned)
        }
    })
}

/// Check a stream of stored bytes (an S3 object's body as it downloads) and write its plain
/// snapshot to `target` in the same pass (blocking): sha256 of the stored bytes, decryption,
/// decompression and etcd's trailing sha256, with no copy of the stored bytes on disk. The
/// stream is always read to its end, and a mismatch with a recorded hash is the verdict that
/// counts, whatever else failed (as if the download had been checked first). A k3s `.zip` is
/// not streamed (it needs seeking): see [`check_local`].
pub(super) fn check_stream(
    input: impl Read,
    display: &str,
    compression: Compression,
    decrypt: &Decrypt,
    recorded: &[Recorded],
    target: &OwnedTarget,
) -> Result<Prepared, RestoreError> {
    let mut reader = HashingReader::new(input);
    let result = stream_plain(&mut reader, display, compression, decrypt, target);
    let drained = std::io::copy(&mut reader, &mut std::io::sink());
    let (stored_sha256, stored_size) = reader.finish();
    compare(display, &stored_sha256, recorded)?;
    let sink = result?;
    drained.map_err(|e| RestoreError::Io {
        op: "reading",
        path: display.to_string(),
        source: e,
    })?;
    finish_checks(
        sink,
        display,
        compression,
        decrypt,
        recorded,
        (stored_sha256, stored_size),
        None,
    )
}

/// The plain bytes of a stored stream into a new output file at `target`.
fn stream_plain<R: Read>(
    reader: &mut HashingReader<R>,
    display: &str,
    compression: Compression,
    decrypt: &Decrypt,
    target: &OwnedTarget,
) -> Result<Sink, RestoreError> {
    let reading = |e| RestoreError::Io {
        op: "reading",
        path: display.to_string(),
        source: e,
    };
    let mut head = Vec::with_capacity(HEADER_LEN);
    (&mut *reader)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(reading)?;
    if compression == Compression::Zip {
        return Err(RestoreError::Internal(
            "a k3s zip cannot be checked as a stream".into(),
        ));
    }
    let key = key_for(display, compression, decrypt, &head)?;
    let out = match target {
        OwnedTarget::WorkDir(dir) => OutFile::create(dir.join("snapshot"), None)?,
        OwnedTarget::File(f) => OutFile::create(f.clone(), Some(f.clone()))?,
    };
    let mut sink = Sink::new(Some(out));
    let mut stored = std::io::Cursor::new(head).chain(&mut *reader);
    match (compression, key) {
        (_, Some(key)) => {
            let decrypted =
                DecryptReader::new(&mut stored, key).map_err(|e| decrypt_err(display, e))?;
            plain_from_decrypted(decrypted, display, compression, &mut sink)?;
        }
        (Compression::Zstd, None) => {
            let mut decoder = zstd::stream::read::Decoder::new(&mut stored)
                .map_err(|e| decompress_err(display, "zstd", e))?;
            copy(&mut decoder, &mut sink, |e| {
                decompress_err(display, "zstd", e)
            })?;
        }
        _ => copy(&mut stored, &mut sink, reading)?,
    }
    Ok(sink)
}

/// Decrypt (authenticating every segment), check the compression of the plain bytes, and
/// decompress them into `sink`. Reads the encrypted stream to its end: only then is its last
/// segment authenticated.
fn plain_from_decrypted(
    decrypted: impl Read,
    display: &str,
    compression: Compression,
    sink: &mut Sink,
) -> Result<(), RestoreError> {
    let reading = read_err(display, |e| RestoreError::Io {
        op: "reading",
        path: display.to_string(),
        source: e,
    });
    let mut plain = BufReader::with_capacity(CHUNK, decrypted);
    let head = plain.fill_buf().map_err(&reading)?;
    check_named(display, compression, Content::sniff(head))?;
    match compression {
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(plain)
                .map_err(|e| decompress_err(display, "zstd", e))?;
            copy(
                &mut decoder,
                sink,
                read_err(display, |e| decompress_err(display, "zstd", e)),
            )?;
            // Read to the end so the last segment is authenticated (and nothing follows).
            let mut rest = decoder.finish();
            std::io::copy(&mut rest, &mut std::io::sink()).map_err(&reading)?;
            Ok(())
        }
        _ => copy(&mut plain, sink, reading),
    }
}

/// The stored bytes must match every recorded hash.
pub(super) fn compare(name: &str, actual: &str, recorded: &[Recorded]) -> Result<(), RestoreError> {
    for r in recorded {
        if !r.sha256.eq_ignore_ascii_case(actual) {
            return Err(RestoreError::ChecksumMismatch {
                name: name.to_string(),
                expected: r.sha256.clone(),
                actual: actual.to_string(),
                recorded_in: r.from.clone(),
            });
        }
    }
    Ok(())
}

fn decompress_err(name: &str, format: &'static str, e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Decompress {
        name: name.to_string(),
        format,
        reason: e.to_string(),
    }
}

/// Decompress the one entry of a k3s zip into `sink` (the zip reader checks the entry's CRC-32).
fn unzip_one(file: &mut File, name: &str, sink: &mut Sink) -> Result<(), RestoreError> {
    let err = |e: zip::result::ZipError| decompress_err(name, "zip", e);
    let mut archive = zip::ZipArchive::new(file).map_err(err)?;
    if archive.len() != 1 {
        return Err(decompress_err(
            name,
            "zip",
            format!(
                "a k3s snapshot zip holds exactly one file, this one holds {} entries",
                archive.len()
            ),
        ));
    }
    let mut entry = archive.by_index(0).map_err(err)?;
    if !entry.is_file() {
        return Err(decompress_err(name, "zip", "its only entry is not a file"));
    }
    copy(&mut entry, sink, |e| decompress_err(name, "zip", e))
}

/// Copy everything from `reader` into `sink`.
fn copy(
    reader: &mut impl Read,
    sink: &mut Sink,
    read_err: impl Fn(std::io::Error) -> RestoreError,
) -> Result<(), RestoreError> {
    loop {
        let mut buf = sink.buffer();
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        sink.send(buf, n)?;
    }
}

/// Chunks queued between the reading (decrypting, decompressing) thread and the sink's thread.
const SINK_DEPTH: usize = 4;

/// What a sink's thread hands back: etcd's trailer check, and the output file.
type SinkResult = Result<(TrailerVerifier, Option<OutFile>), RestoreError>;

/// Where the plain bytes go: etcd's trailer check, and the output file if one is written. Both
/// run on a thread of their own, beside the decompression. Dropped without
/// [`Sink::finish`], it waits for that thread, so an unfinished output file is gone when the
/// drop returns.
struct Sink {
    tx: Option<std::sync::mpsc::SyncSender<(Vec<u8>, usize)>>,
    /// Buffers coming back for reuse.
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<SinkResult>>,
}

impl Sink {
    fn new(out: Option<OutFile>) -> Sink {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(SINK_DEPTH);
        let (back_tx, back) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let mut trailer = TrailerVerifier::new();
            let mut out = out;
            for (buf, n) in rx {
                let data = &buf[..n];
                trailer.update(data);
                if let Some(out) = out.as_mut() {
                    out.file
                        .write_all(data)
                        .map_err(io_err("writing", &out.temp))?;
                }
                let _ = back_tx.send(buf);
            }
            Ok((trailer, out))
        });
        Sink {
            tx: Some(tx),
            back,
            worker: Some(worker),
        }
    }

    /// An empty chunk buffer ([`CHUNK`] bytes), reused when one has come back.
    fn buffer(&self) -> Vec<u8> {
        self.back.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK])
    }

    /// Pass on the first `n` bytes of `buf`.
    fn send(&mut self, buf: Vec<u8>, n: usize) -> Result<(), RestoreError> {
        let sent = match &self.tx {
            Some(tx) => tx.send((buf, n)).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The thread stopped: it failed.
            Err(self.join().err().unwrap_or_else(|| {
                RestoreError::Internal("the snapshot writer stopped early".into())
            }))
        }
    }

    /// Everything passed on is checked and written: the trailer check and the output file.
    fn finish(mut self) -> SinkResult {
        self.join()
    }

    fn join(&mut self) -> SinkResult {
        self.tx = None;
        match self.worker.take() {
            Some(worker) => worker
                .join()
                .map_err(|_| RestoreError::Internal("the snapshot writer panicked".into()))?,
            None => Err(RestoreError::Internal(
                "the snapshot writer already finished".into(),
            )),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.worker.is_some() {
            let _ = self.join();
        }
    }
}

/// sha256 and size of everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A file written under a hidden temporary name (0600, never an existing file), removed on drop
/// unless committed.
struct OutFile {
    file: File,
    temp: PathBuf,
    /// Renamed to this on commit; `None` keeps the temporary name (a work-dir file).
    final_path: Option<PathBuf>,
}

impl OutFile {
    fn create(beside: PathBuf, final_path: Option<PathBuf>) -> Result<OutFile, RestoreError> {
        if let Some(f) = &final_path
            && std::fs::symlink_metadata(f).is_ok()
        {
            return Err(io_err("writing", f)(std::io::Error::from(
                ErrorKind::AlreadyExists,
            )));
        }
        let temp = sibling_name(&beside, "incomplete");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_err("creating", final_path.as_ref().unwrap_or(&temp)))?;
        Ok(OutFile {
            file,
            temp,
            final_path,
        })
    }

    /// fsync (a file the caller keeps; a work-dir file is read once by the restore and removed,
    /// so it is not synced), then rename to the final name. Returns the path and whether the
    /// caller owns it.
    fn commit(mut self) -> Result<(PathBuf, Option<PathBuf>), RestoreError> {
        if self.final_path.is_some() {
            self.file
                .sync_all()
                .map_err(io_err("syncing", &self.temp))?;
        }
        let temp = std::mem::take(&mut self.temp);
        match self.final_path.take() {
            None => Ok((temp.clone(), Some(temp))),
            Some(f) => {
                if let Err(e) = std::fs::rename(&temp, &f) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(io_err("renaming to", &f)(e));
                }
                Ok((f, None))
            }
        }
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_recognised() {
        assert_eq!(Content::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Content::Zstd);
        assert_eq!(Content::sniff(b"PK\x03\x04rest"), Content::Zip);
        let mut bolt = vec![0u8; 20];
        bolt[16..20].copy_from_slice(&[0xed, 0xda, 0x0c, 0xed]);
        assert_eq!(Content::sniff(&bolt), Content::Plain);
        assert_eq!(Content::sniff(b"hi"), Content::Unknown);
    }

    #[test]
    fn compression_must_match_the_name() {
        assert!(check_named("a.zst", Compression::Zstd, Content::Zstd).is_ok());
        assert!(check_named("a", Compression::None, Content::Unknown).is_ok());
        let err = check_named("a.zst", Compression::Zstd, Content::Plain).expect_err("plain");
        assert_eq!(
            err.to_string(),
            "a.zst is named as zstd (.zst) but holds a plain etcd snapshot"
        );
        assert!(check_named("a", Compression::None, Content::Zip).is_err());
        assert!(check_named("a.zip", Compression::Zip, Content::Zstd).is_err());
    }

    mod encrypted {
        use super::super::*;
        use crate::snapshot::crypt::{EncryptWriter, EncryptionKey};

        /// A stand-in etcd snapshot: data plus its trailing sha256 (what the checks verify).
        fn plain() -> Vec<u8> {
            let mut data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let digest = Sha256::digest(&data);
            data.extend_from_slice(&digest);
            data
        }

        fn stored(key: &EncryptionKey, zstd: bool) -> Vec<u8> {
            let data = plain();
            let data = if zstd {
                zstd::encode_all(&data[..], 1).expect("zstd")
            } else {
                data
            };
            let mut w = EncryptWriter::new(Vec::new(), key).expect("writer");
            w.write_all(&data).expect("write");
            w.finish().expect("finish")
        }

        fn check(
            dir: &Path,
            name: &str,
            bytes: &[u8],
            key: Option<&EncryptionKey>,
        ) -> Result<(Prepared, PathBuf), RestoreError> {
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write file");
            let out = dir.join(format!("{name}.out"));
            let decrypt = Decrypt::of(name, key.cloned());
            check_local(
                &path,
                name,
                Compression::from_name(name),
                &decrypt,
                &[],
                &OwnedTarget::File(out.clone()),
            )
            .map(|p| (p, out))
        }

        #[test]
        fn encrypted_snapshots_decrypt_to_the_plain_snapshot() {
            let dir = tempfile::tempdir().expect("tempdir");
            let key = EncryptionKey::generate().expect("key");
            for (name, zstd) in [("s-n-1.zst.enc", true), ("s-n-2.enc", false)] {
                let bytes = stored(&key, zstd);
                let (prepared, out) = check(dir.path(), name, &bytes, Some(&key)).expect(name);
                assert_eq!(std::fs::read(&out).expect("out"), plain(), "{name}");
                let checks = prepared.checks();
                assert_eq!(checks.encryption_key_id, Some(key.id().to_hex()));
                assert_eq!(checks.stored_size, bytes.len() as u64);
                assert_eq!(checks.stored_sha256, hex::encode(Sha256::digest(&bytes)));
            }
        }

        #[test]
        fn missing_wrong_key_and_tampering_fail_clearly_and_write_nothing() {
            let dir = tempfile::tempdir().expect("tempdir");
            let key = EncryptionKey::generate().expect("key");
            let other = EncryptionKey::generate().expect("key");
            let bytes = stored(&key, true);
            let name = "s-n-3.zst.enc";

            let err = check(dir.path(), name, &bytes, None).expect_err("no key");
            assert_eq!(
                err.to_string(),
                format!(
                    "{name} is encrypted (key id {}) and no encryption key was given: pass the key file with --encryption-key-file",
                    key.id()
                )
            );
            assert!(!err.is_corrupt_snapshot());

            let err = check(dir.path(), name, &bytes, Some(&other)).expect_err("wrong key");
            assert_eq!(err.reason(), "WrongEncryptionKey");
            assert!(err.to_string().contains(&format!(
                "encrypted with key id {}, but the given key has id {}",
                key.id(),
                other.id()
            )));

            for at in [60, bytes.len() / 2, bytes.len() - 1] {
                let mut bad = bytes.clone();
                bad[at] ^= 1;
                let err = check(dir.path(), name, &bad, Some(&key)).expect_err("tampered");
                assert!(err.is_corrupt_snapshot(), "{err}");
                assert!(err.to_string().contains("does not authenticate"), "{err}");
            }
            let err = check(dir.path(), name, &bytes[..bytes.len() - 100], Some(&key))
                .expect_err("cut short");
            assert!(err.is_corrupt_snapshot(), "{err}");

            let leftovers: Vec<_> = std::fs::read_dir(dir.path())
                .expect("dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != name)
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }

        #[test]
        fn names_and_content_must_agree_about_encryption() {
            let dir = tempfile::tempdir().expect("tempdir");
            let key = EncryptionKey::generate().expect("key");
            let err = check(dir.path(), "s-n-4.enc", &plain(), Some(&key)).expect_err("plain");
            assert_eq!(
                err.to_string(),
                "s-n-4.enc is named as encrypted (.enc) but holds data that is neither zstd nor an etcd snapshot"
            );
            let err = check(dir.path(), "s-n-5", &stored(&key, false), Some(&key))
                .expect_err("encrypted without .enc");
            assert!(err.to_string().contains("holds encrypted data"), "{err}");
            // .enc without .zst but zstd inside: the plain bytes are checked too.
            let err = check(dir.path(), "s-n-6.enc", &stored(&key, true), Some(&key))
                .expect_err("zstd inside");
            assert!(err.to_string().contains("holds zstd data"), "{err}");
        }
    }
}
