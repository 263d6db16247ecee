//! A read-only reader of bbolt files (etcd's database, and so its snapshots), just enough to
//! read a key of a top-level bucket: etcd's `meta` bucket, which tells what etcd version wrote
//! the data. It reads the pages it needs and nothing else, so a multi-GiB snapshot costs a few
//! page reads; every offset and length in the file is checked (the file is outside input).
//!
//! The format (bbolt's `page.go`, `node.go`, `bucket.go`, `db.go`; native byte order, which is
//! little-endian on every platform etcd ships for but s390x):
//!
//! ```text
//! page      = id u64 | flags u16 | count u16 | overflow u32 | data …   (1 + overflow pages long)
//! meta      = magic u32 | version u32 | pageSize u32 | flags u32 | root bucket (root u64, seq u64)
//!             | freelist u64 | pgid u64 | txid u64 | checksum u64 (FNV-1a 64 of what precedes it)
//! branch    = count × (pos u32 | ksize u32 | pgid u64), keys at element + pos
//! leaf      = count × (flags u32 | pos u32 | ksize u32 | vsize u32), key then value at element + pos
//! bucket    = a leaf value with flag 1: root u64 | sequence u64, then (root = 0) an inline page
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: u32 = 0xED0C_DAED;
const FORMAT_VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;
const META_LEN: usize = 64;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const BUCKET_LEAF_FLAG: u32 = 0x01;
/// Deeper than any real bbolt tree; guards against loops in a damaged file.
const MAX_DEPTH: usize = 64;
/// The largest page (with its overflow) this reader loads: far above any page of etcd's small
/// buckets (a larger one is refused, not read).
const MAX_PAGE_BYTES: u64 = 64 << 20;

/// Why a bbolt file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    /// Reading the file failed.
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a bbolt database this reader understands.
    #[error("not a readable bbolt database: {0}")]
    Format(String),
}

fn format(msg: impl Into<String>) -> BoltError {
    BoltError::Format(msg.into())
}

/// An open bbolt file.
#[derive(Debug)]
pub struct BoltFile {
    file: File,
    len: u64,
    page_size: u64,
    /// Page id of the root bucket's tree.
    root: u64,
    /// High-water mark: every page id in use is below it.
    max_pgid: u64,
}

/// What one meta page says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    page_size: u32,
    root: u64,
    max_pgid: u64,
    txid: u64,
}

impl BoltFile {
    /// Open `path` and read its meta pages (the newer valid one wins, as bbolt does).
    pub fn open(path: &Path) -> Result<BoltFile, BoltError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut first = [0u8; PAGE_HEADER + META_LEN];
        file.read_exact_at(&mut first, 0)
            .map_err(|_| format("shorter than one page"))?;
        let meta0 = parse_meta(&first);
        // Meta page 1 sits one page further; take the page size from meta 0, or bbolt's usual.
        let second_at = meta0.as_ref().map_or(4096, |m| u64::from(m.page_size));
        let mut second = [0u8; PAGE_HEADER + META_LEN];
        let meta1 = file
            .read_exact_at(&mut second, second_at)
            .ok()
            .and_then(|()| parse_meta(&second).ok());
        let meta = match (meta0, meta1) {
            (Ok(a), Some(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), None) => a,
            (Err(_), Some(b)) => b,
            (Err(e), None) => return Err(e),
        };
        Ok(BoltFile {
            file,
            len,
            page_size: u64::from(meta.page_size),
            root: meta.root,
            max_pgid: meta.max_pgid,
        })
    }

    /// The value of `key` in the top-level bucket `bucket`. `Ok(None)` when the key is not
    /// there; an error when the bucket itself is missing.
    pub fn get(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>, BoltError> {
        let root = self.load(self.root)?;
        let Some((flags, value)) = self.search(root, bucket, 0)? else {
            return Err(format(format!(
                "no bucket {:?}",
                String::from_utf8_lossy(bucket)
            )));
        };
        if flags & BUCKET_LEAF_FLAG == 0 {
            return Err(format(format!(
                "{:?} is a key, not a bucket",
                String::from_utf8_lossy(bucket)
            )));
        }
        let header = value
            .get(..BUCKET_HEADER)
            .ok_or_else(|| format("bucket header cut short"))?;
        let bucket_root = u64_at(header, 0)?;
        let found = if bucket_root == 0 {
            // An inline bucket: its one leaf page follows the header in the value.
            let inline = value[BUCKET_HEADER..].to_vec();
            self.search(inline, key, 0)?
        } else {
            let page = self.load(bucket_root)?;
            self.search(page, key, 0)?
        };
        Ok(found.map(|(_, v)| v))
    }

    /// Page `id`, with its overflow pages.
    fn load(&self, id: u64) -> Result<Vec<u8>, BoltError> {
        if id < 2 || id >= self.max_pgid {
            return Err(format(format!(
                "page id {id} is outside the database (high-water mark {})",
                self.max_pgid
            )));
        }
        let offset = id
            .checked_mul(self.page_size)
            .ok_or_else(|| format("page offset overflows"))?;
        let mut header = [0u8; PAGE_HEADER];
        self.file
            .read_exact_at(&mut header, offset)
            .map_err(|_| format(format!("page {id} lies beyond the end of the file")))?;
        let overflow = u64::from(u32_at(&header, 12)?);
        let size = overflow
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.page_size))
            .filter(|s| *s <= MAX_PAGE_BYTES)
            .ok_or_else(|| format(format!("page {id} claims {overflow} overflow pages")))?;
        if offset.saturating_add(size) > self.len {
            return Err(format(format!("page {id} runs past the end of the file")));
        }
        let mut page = vec![0u8; usize::try_from(size).map_err(|_| format("page too large"))?];
        self.file.read_exact_at(&mut page, offset)?;
        if u64_at(&page, 0)? != id {
            return Err(format(format!("page {id} carries another page's id")));
        }
        Ok(page)
    }

    /// Find `key` in the tree whose top page is `page`: its leaf flags and value.
    fn search(
        &self,
        page: Vec<u8>,
        key: &[u8],
        depth: usize,
    ) -> Result<Option<(u32, Vec<u8>)>, BoltError> {
        if depth > MAX_DEPTH {
            return Err(format("the tree is deeper than any real one (a loop?)"));
        }
        let flags = u16_at(&page, 8)?;
        let count = usize::from(u16_at(&page, 10)?);
        if flags & LEAF_PAGE != 0 {
            for i in 0..count {
                let at = PAGE_HEADER + i * ELEMENT;
                let (leaf_flags, pos, ksize, vsize) = (
                    u32_at(&page, at)?,
                    u32_at(&page, at + 4)?,
                    u32_at(&page, at + 8)?,
                    u32_at(&page, at + 12)?,
                );
                let k = slice(&page, at, pos, ksize)?;
                if k == key {
                    let v_pos = pos
                        .checked_add(ksize)
                        .ok_or_else(|| format("value offset overflows"))?;
                    let v = slice(&page, at, v_pos, vsize)?;
                    return Ok(Some((leaf_flags, v.to_vec())));
                }
            }
            return Ok(None);
        }
        if flags & BRANCH_PAGE == 0 {
            return Err(format(format!(
                "page of kind {flags:#x} where a branch or leaf page belongs"
            )));
        }
        // The last element whose key is <= `key` (the first one if all are greater), as bbolt.
        let mut child = None;
        for i in 0..count {
            let at = PAGE_HEADER + i * ELEMENT;
            let (pos, ksize, pgid) = (
                u32_at(&page, at)?,
                u32_at(&page, at + 4)?,
                u64_at(&page, at + 8)?,
            );
            let k = slice(&page, at, pos, ksize)?;
            if child.is_some() && k > key {
                break;
            }
            child = Some(pgid);
        }
        match child {
            Some(id) => {
                let next = self.load(id)?;
                self.search(next, key, depth + 1)
            }
            None => Ok(None),
        }
    }
}

/// A meta page (page header included), checked: magic, format version, page size, checksum.
fn parse_meta(page: &[u8]) -> Result<Meta, BoltError> {
    let m = page
        .get(PAGE_HEADER..PAGE_HEADER + META_LEN)
        .ok_or_else(|| format("meta page cut short"))?;
    if u32_at(m, 0)? != MAGIC {
        return Err(format("no bbolt magic number in the meta page"));
    }
    let version = u32_at(m, 4)?;
    if version != FORMAT_VERSION {
        return Err(format(format!("bbolt format version {version}, not 2")));
    }
    let page_size = u32_at(m, 8)?;
    if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format(format!("page size {page_size}")));
    }
    if u64_at(m, 56)? != fnv1a64(&m[..56]) {
        return Err(format("meta page checksum mismatch"));
    }
    Ok(Meta {
        page_size,
        root: u64_at(m, 16)?,
        max_pgid: u64_at(m, 40)?,
        txid: u64_at(m, 48)?,
    })
}

/// FNV-1a, 64 bits (bbolt's meta checksum).
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `len` bytes at `element + pos` within `page`, bounds-checked.
fn slice(page: &[u8], element: usize, pos: u32, len: u32) -> Result<&[u8], BoltError> {
    let start = usize::try_from(pos)
        .ok()
        .and_then(|p| element.checked_add(p))
        .ok_or_else(|| format("element offset overflows"))?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .ok_or_else(|| format("element length overflows"))?;
    page.get(start..end)
        .ok_or_else(|| format("an element points outside its page"))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BoltError> {
    let bytes = b.get(at..at + 2).ok_or_else(|| format("page cut short"))?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BoltError> {
    let mut a = [0u8; 4];
    a.copy_from_slice(b.get(at..at + 4).ok_or_else(|| format("page cut short"))?);
    Ok(u32::from_le_bytes(a))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, BoltError> {
    let mut a = [0u8; 8];
    a.copy_from_slice(b.get(at..at + 8).ok_or_else(|| format("page cut short"))?);
    Ok(u64::from_le_bytes(a))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Builds small bbolt files page by page (4096-byte pages), for the reader's tests.
    pub(crate) struct Builder {
        pages: Vec<Vec<u8>>,
    }

    pub(crate) const PAGE: usize = 4096;

    fn header(id: u64, flags: u16, count: u16, overflow: u32) -> Vec<u8> {
        let mut p = Vec::with_capacity(PAGE);
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&count.to_le_bytes());
        p.extend_from_slice(&overflow.to_le_bytes());
        p
    }

    /// A leaf page body (header with `id`) of `(flags, key, value)` elements, sorted by key.
    pub(crate) fn leaf(id: u64, items: &[(u32, &[u8], Vec<u8>)]) -> Vec<u8> {
        let mut p = header(id, LEAF_PAGE, items.len() as u16, 0);
        let mut data = Vec::new();
        let base = PAGE_HEADER + items.len() * ELEMENT;
        for (i, (flags, k, v)) in items.iter().enumerate() {
            let at = PAGE_HEADER + i * ELEMENT;
            let pos = (base + data.len() - at) as u32;
            p.extend_from_slice(&flags.to_le_bytes());
            p.extend_from_slice(&pos.to_le_bytes());
            p.extend_from_slice(&(k.len() as u32).to_le_bytes());
            p.extend_from_slice(&(v.len() as u32).to_le_bytes());
            data.extend_from_slice(k);
            data.extend_from_slice(v);
        }
        p.extend_from_slice(&data);
        p
    }

    fn branch(id: u64, items: &[(&[u8], u64)]) -> Vec<u8> {
        let mut p = header(id, BRANCH_PAGE, items.len() as u16, 0);
        let mut data = Vec::new();
        let base = PAGE_HEADER + items.len() * ELEMENT;
        for (i, (k, pgid)) in items.iter().enumerate() {
            let at = PAGE_HEADER + i * ELEMENT;
            let pos = (base + data.len() - at) as u32;
            p.extend_from_slice(&pos.to_le_bytes());
            p.extend_from_slice(&(k.len() as u32).to_le_bytes());
            p.extend_from_slice(&pgid.to_le_bytes());
            data.extend_from_slice(k);
        }
        p.extend_from_slice(&data);
        p
    }

    /// A bucket value: header, then (root 0) the inline leaf page.
    pub(crate) fn bucket(root: u64, inline: Option<Vec<u8>>) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&root.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        if let Some(page) = inline {
            v.extend_from_slice(&page);
        }
        v
    }

    fn meta(id: u64, root: u64, max_pgid: u64, txid: u64) -> Vec<u8> {
        let mut p = header(id, 0x04, 0, 0);
        let mut m = Vec::new();
        m.extend_from_slice(&MAGIC.to_le_bytes());
        m.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        m.extend_from_slice(&(PAGE as u32).to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&root.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&2u64.to_le_bytes());
        m.extend_from_slice(&max_pgid.to_le_bytes());
        m.extend_from_slice(&txid.to_le_bytes());
        let sum = fnv1a64(&m);
        m.extend_from_slice(&sum.to_le_bytes());
        p.extend_from_slice(&m);
        p
    }

    impl Builder {
        /// Pages 2.. as given (page i of `pages` is page id i + 2); the root bucket at `root`.
        pub(crate) fn new(root: u64, pages: Vec<Vec<u8>>) -> Builder {
            let max = pages.len() as u64 + 2;
            let mut all = vec![meta(0, root, max, 7), meta(1, root, max, 6)];
            all.extend(pages);
            Builder { pages: all }
        }

        pub(crate) fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            for p in &self.pages {
                let mut page = p.clone();
                page.resize(page.len().div_ceil(PAGE) * PAGE, 0);
                out.extend_from_slice(&page);
            }
            out
        }

        pub(crate) fn write(&self, path: &Path) {
            let mut f = File::create(path).expect("create");
            f.write_all(&self.bytes()).expect("write");
        }
    }

    /// A root bucket with `meta` (inline) holding `items`, and a `key` bucket on its own page.
    pub(crate) fn etcd_like(items: &[(u32, &[u8], Vec<u8>)]) -> Builder {
        let meta_inline = leaf(0, items);
        let key_leaf = leaf(3, &[(0, b"\0\0\0\0\0\0\0\x02_", b"kv".to_vec())]);
        let root = leaf(
            2,
            &[
                (BUCKET_LEAF_FLAG, b"key", bucket(3, None)),
                (BUCKET_LEAF_FLAG, b"meta", bucket(0, Some(meta_inline))),
            ],
        );
        Builder::new(2, vec![root, key_leaf])
    }

    #[test]
    fn keys_of_an_inline_bucket_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        etcd_like(&[
            (0, b"confState", b"{}".to_vec()),
            (0, b"storageVersion", b"3.6.0".to_vec()),
        ])
        .write(&path);
        let db = BoltFile::open(&path).expect("open");
        assert_eq!(
            db.get(b"meta", b"storageVersion").expect("get"),
            Some(b"3.6.0".to_vec())
        );
        assert_eq!(db.get(b"meta", b"term").expect("get"), None);
        assert_eq!(
            db.get(b"key", b"\0\0\0\0\0\0\0\x02_").expect("get"),
            Some(b"kv".to_vec())
        );
        assert!(db.get(b"lease", b"x").is_err(), "missing bucket");
    }

    #[test]
    fn branch_pages_are_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        // root (page 2): branch -> leaves 3 ("a".."l") and 4 ("m".."z"); "meta" in page 4,
        // its own tree on page 5.
        let left = leaf(3, &[(BUCKET_LEAF_FLAG, b"key", bucket(5, None))]);
        let right = leaf(
            4,
            &[
                (BUCKET_LEAF_FLAG, b"members", bucket(5, None)),
                (BUCKET_LEAF_FLAG, b"meta", bucket(6, None)),
            ],
        );
        let members = leaf(5, &[(0, b"m1", b"x".to_vec())]);
        let meta = leaf(6, &[(0, b"term", 9u64.to_be_bytes().to_vec())]);
        Builder::new(
            2,
            vec![
                branch(2, &[(b"key", 3), (b"members", 4)]),
                left,
                right,
                members,
                meta,
            ],
        )
        .write(&path);
        let db = BoltFile::open(&path).expect("open");
        assert_eq!(
            db.get(b"meta", b"term").expect("get"),
            Some(9u64.to_be_bytes().to_vec())
        );
        assert_eq!(db.get(b"members", b"m1").expect("get"), Some(b"x".to_vec()));
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let good = etcd_like(&[(0, b"term", vec![0; 8])]).bytes();
        // Every single byte of the meta and tree pages flipped, and every truncation: never a
        // panic; where the meta page survives (its twin), the answer is the same or an error.
        for at in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 0xff;
            std::fs::write(&path, &bad).expect("write");
            if let Ok(db) = BoltFile::open(&path) {
                let _ = db.get(b"meta", b"term");
            }
        }
        for len in [0, 10, 100, PAGE, PAGE + 80, 2 * PAGE, 3 * PAGE - 1] {
            std::fs::write(&path, &good[..len]).expect("write");
            if let Ok(db) = BoltFile::open(&path) {
                let _ = db.get(b"meta", b"term");
            }
        }
        std::fs::write(&path, b"not a database at all, just text").expect("write");
        assert!(BoltFile::open(&path).is_err());
    }

    #[test]
    fn a_page_loop_ends_in_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        Builder::new(2, vec![branch(2, &[(b"a", 3)]), branch(3, &[(b"a", 2)])]).write(&path);
        let db = BoltFile::open(&path).expect("open");
        assert!(db.get(b"meta", b"term").is_err());
    }
}
