//! etcd appends a 32-byte SHA-256 of the database to the end of every snapshot stream. This
//! checks it as the bytes go by: everything but the last 32 bytes is hashed, the last 32 bytes
//! are held back, and at the end the two are compared. No second pass over the data.

use sha2::{Digest, Sha256};

/// Length of etcd's trailing hash.
pub const TRAILER_LEN: usize = 32;

/// What a finished check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailerCheck {
    /// The trailing hash matches the data before it.
    Ok,
    /// The trailing hash does not match: the snapshot is corrupt.
    Mismatch {
        /// Hex of the 32 bytes at the end of the stream.
        expected: String,
        /// Hex of the sha256 of the data before them.
        actual: String,
    },
    /// Fewer than 32 bytes: there is no trailing hash at all.
    TooShort(u64),
}

/// Streaming checker of etcd's trailing sha256.
#[derive(Clone)]
pub struct TrailerVerifier {
    hasher: Sha256,
    tail: [u8; TRAILER_LEN],
    tail_len: usize,
    total: u64,
}

impl Default for TrailerVerifier {
    fn default() -> Self {
        TrailerVerifier {
            hasher: Sha256::new(),
            tail: [0; TRAILER_LEN],
            tail_len: 0,
            total: 0,
        }
    }
}

impl TrailerVerifier {
    /// A verifier that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next bytes of the stream.
    pub fn update(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if data.len() >= TRAILER_LEN {
            // Everything held back so far is data, and so is all of `data` but its last 32 bytes.
            self.hasher.update(&self.tail[..self.tail_len]);
            let split = data.len() - TRAILER_LEN;
            self.hasher.update(&data[..split]);
            self.tail.copy_from_slice(&data[split..]);
            self.tail_len = TRAILER_LEN;
            return;
        }
        // A short chunk: keep the newest 32 bytes of (tail + data), hash what falls out.
        let overflow = (self.tail_len + data.len()).saturating_sub(TRAILER_LEN);
        if overflow > 0 {
            self.hasher.update(&self.tail[..overflow]);
            self.tail.copy_within(overflow..self.tail_len, 0);
            self.tail_len -= overflow;
        }
        self.tail[self.tail_len..self.tail_len + data.len()].copy_from_slice(data);
        self.tail_len += data.len();
    }

    /// Bytes seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Compare the held-back trailer with the hash of everything before it.
    pub fn finish(self) -> TrailerCheck {
        if self.tail_len < TRAILER_LEN {
            return TrailerCheck::TooShort(self.total);
        }
        let actual = self.hasher.finalize();
        if actual[..] == self.tail[..] {
            TrailerCheck::Ok
        } else {
            TrailerCheck::Mismatch {
                expected: hex::encode(self.tail),
                actual: hex::encode(actual),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_trailer(db: &[u8]) -> Vec<u8> {
        let mut v = db.to_vec();
        v.extend_from_slice(&Sha256::digest(db));
        v
    }

    fn check_chunked(data: &[u8], cuts: &[usize]) -> TrailerCheck {
        let mut v = TrailerVerifier::new();
        let mut start = 0;
        for &cut in cuts {
            let end = cut.clamp(start, data.len());
            v.update(&data[start..end]);
            start = end;
        }
        v.update(&data[start..]);
        v.finish()
    }

    #[test]
    fn a_good_snapshot_passes() {
        let data = with_trailer(b"some bbolt database bytes");
        assert_eq!(check_chunked(&data, &[]), TrailerCheck::Ok);
        assert_eq!(check_chunked(&data, &[1, 2, 3, 40, 41]), TrailerCheck::Ok);
    }

    #[test]
    fn a_flipped_byte_is_a_mismatch() {
        let mut data = with_trailer(&[7u8; 4096]);
        data[100] ^= 1;
        assert!(matches!(
            check_chunked(&data, &[1000]),
            TrailerCheck::Mismatch { .. }
        ));
    }

    #[test]
    fn a_truncated_stream_is_a_mismatch_or_too_short() {
        let data = with_trailer(&[1u8; 1000]);
        assert!(matches!(
            check_chunked(&data[..900], &[]),
            TrailerCheck::Mismatch { .. }
        ));
        assert_eq!(check_chunked(&data[..10], &[]), TrailerCheck::TooShort(10));
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_verdict(db in proptest::collection::vec(any::<u8>(), 0..3000), cuts in proptest::collection::vec(0usize..3100, 0..20), flip in any::<Option<usize>>()) {
            let mut data = with_trailer(&db);
            let mut cuts = cuts;
            cuts.sort_unstable();
            if let Some(i) = flip {
                let i = i % data.len();
                data[i] ^= 0x80;
                let mismatch = matches!(check_chunked(&data, &cuts), TrailerCheck::Mismatch { .. });
                prop_assert!(mismatch, "a flipped byte must be caught");
            } else {
                prop_assert_eq!(check_chunked(&data, &cuts), TrailerCheck::Ok);
            }
        }
    }
}
