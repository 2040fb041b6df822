//! OneDrive's `quickXorHash`: the one content hash OneDrive for Business and SharePoint give for a
//! drive item (`file.hashes.quickXorHash`), so the only way to tell whether an item on the drive
//! holds the bytes of a local file without downloading it. Microsoft published the algorithm as
//! C# ("QuickXorHash", OneDrive dev center); rclone and abraunegg/onedrive implement it too, and
//! `scripts/quickxorhash.py` is an independent implementation the tests compare with.
//!
//! The algorithm: a 160-bit register; byte `n` of the input is XORed into it at bit
//! `(11 · n) mod 160`, wrapping round from bit 159 to bit 0; at the end the input's length, as a
//! 64-bit little-endian number, is XORed into the register's last 8 bytes. The register's 20
//! bytes, little-endian, in base64, are the hash.
//!
//! Byte `n` lands where byte `n + 160` lands, so this keeps 160 accumulators (byte `n` is XORed
//! into accumulator `n mod 160`, a loop the compiler vectorises) and places them in the register
//! only when the hash is asked for. Used by the sandbox (layer 0) and by `graph::drive`.

use base64::Engine;

/// Input bytes after which the register's positions repeat.
const PERIOD: usize = 160;
/// Bits the position moves per input byte.
const SHIFT: usize = 11;
/// Bytes of the register (and of the raw hash).
pub const LEN: usize = 20;

/// A running quickXorHash.
#[derive(Clone)]
pub struct QuickXor {
    acc: [u8; PERIOD],
    len: u64,
}

impl Default for QuickXor {
    fn default() -> Self {
        QuickXor {
            acc: [0; PERIOD],
            len: 0,
        }
    }
}

impl std::fmt::Debug for QuickXor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickXor").field("len", &self.len).finish()
    }
}

impl QuickXor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hash `data` after everything before it.
    pub fn update(&mut self, mut data: &[u8]) {
        let mut at = (self.len % PERIOD as u64) as usize;
        self.len += data.len() as u64;
        // Up to the next multiple of 160, then whole periods, then the rest.
        if at != 0 {
            let head = data.len().min(PERIOD - at);
            for (a, b) in self.acc[at..at + head].iter_mut().zip(&data[..head]) {
                *a ^= b;
            }
            data = &data[head..];
            at = (at + head) % PERIOD;
        }
        let mut blocks = data.chunks_exact(PERIOD);
        for block in &mut blocks {
            for (a, b) in self.acc.iter_mut().zip(block) {
                *a ^= b;
            }
        }
        let rest = blocks.remainder();
        for (a, b) in self.acc[at..].iter_mut().zip(rest) {
            *a ^= b;
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw 20 bytes of the hash of everything so far (the state is kept: more may follow).
    pub fn digest(&self) -> [u8; LEN] {
        let mut reg = [0u8; LEN];
        for (n, &b) in self.acc.iter().enumerate() {
            if b == 0 {
                continue;
            }
            let bit = (SHIFT * n) % (8 * LEN);
            let (byte, shift) = (bit / 8, bit % 8);
            reg[byte] ^= b << shift;
            if shift != 0 {
                reg[(byte + 1) % LEN] ^= b >> (8 - shift);
            }
        }
        for (r, l) in reg[LEN - 8..].iter_mut().zip(self.len.to_le_bytes()) {
            *r ^= l;
        }
        reg
    }

    /// The hash as OneDrive shows it: base64 (standard alphabet, padded) of [`QuickXor::digest`].
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.digest())
    }
}

/// The quickXorHash of `data`, base64.
pub fn of(data: &[u8]) -> String {
    let mut q = QuickXor::new();
    q.update(data);
    q.base64()
}

/// Two quickXorHash strings name the same hash: OneDrive's are base64, compared as bytes (a
/// server answering in another padding or case of hex would not match, and should not).
pub fn same(a: &str, b: &str) -> bool {
    let d = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
    };
    matches!((d(a), d(b)), (Some(x), Some(y)) if x.len() == LEN && x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Input (base64) → hash, from rclone's `quickxorhash_test.go` (which took them from
    /// Microsoft's C#), and the `hello world` example of the pypi and crates.io packages.
    const VECTORS: &[(&str, &str)] = &[
        ("", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ("Sg==", "SgAAAAAAAAAAAAAAAQAAAAAAAAA="),
        ("tbQ=", "taAFAAAAAAAAAAAAAgAAAAAAAAA="),
        ("0pZP", "0rDEEwAAAAAAAAAAAwAAAAAAAAA="),
        ("vPgoDjOfO6fm71RxLw==", "vMAHChwwg0/s4BTmdQcV4vACAAA="),
        ("g8VtAh+2Kf4k0kY5tzji2i2zmA==", "wDNrgwHWAVukwB8kg4YRcnALHIg="),
        ("T6LYJIfDh81JrAK309H2JMJTXis=", "zBTHrspn3mEcohlJdIUAbjGNaNg="),
        ("DWAAX5/CIfrmErgZa8ot6ZraeSbu", "LR2Z0PjuRYGKQB/mhQAuMrAGZbQ="),
        (
            "Mb7EGva2rEE5fENDL85P+BsapHEEjv2/siVhKjvAQe02feExVOQSkfmuYzU/kTF1MaKjPmKF/w+cbvwfdWL8aQ==",
            "n1anP5NfvD4XDYWIeRPW3ZkPv1Y=",
        ),
        (
            "qwGf2ESubE5jOUHHyc94ORczFYYbc2OmEzo+hBIyzJiNwAzC8PvJqtTzwkWkSslgHFGWQZR2BV5+uYTrYT7HVwRM40vqfj0dBgeDENyTenIOL1LHkjtDKoXEnQ0mXAHoJ8PjbNC93zi5TovVRXTNzfGEs5dpWVqxUzb5lc7dwkyvOluBw482mQ4xrzYyIY1t+//OrNi1ObGXuUw2jBQOFfJVj2Y6BOyYmfB1y36eBxi3zxeG5d5NYjm2GSh6e08QMAwu3zrINcqIzLOuNIiGXBtl7DjKt7b5wqi4oFiRpZsCyx2smhSrdrtK/CkdU6nDN+34vSR/M8rZpWQdBE7a8g==",
            "WYT9JY3JIo/pEBp+tIM6Gt2nyTM=",
        ),
        ("aGVsbG8gd29ybGQ=", "aCgDG9jwBhDc4Q1yawMZAAAAAAA="),
    ];

    #[test]
    fn known_vectors_whole_and_piece_by_piece() {
        for (input, want) in VECTORS {
            let data = b64(input);
            assert_eq!(of(&data), *want, "{} bytes", data.len());
            for piece in [1, 2, 7, 19, 20, 21, 64, 159, 160, 161, 500] {
                let mut q = QuickXor::new();
                for p in data.chunks(piece) {
                    q.update(p);
                }
                assert_eq!(
                    q.base64(),
                    *want,
                    "{} bytes in pieces of {piece}",
                    data.len()
                );
                assert_eq!(q.len(), data.len() as u64);
            }
        }
    }

    #[test]
    fn the_length_is_part_of_the_hash_and_same_compares_bytes() {
        // 160 zero bytes XOR to nothing in the register; only the length tells them apart.
        assert_ne!(of(&[0u8; 160]), of(&[]));
        assert_eq!(of(&[0u8; 160]), "AAAAAAAAAAAAAAAAoAAAAAAAAAA=");
        assert!(same(&of(b"x"), &of(b"x")));
        assert!(!same(&of(b"x"), &of(b"y")));
        assert!(!same("", ""), "an empty answer is no hash");
        assert!(!same("AAAA", "AAAA"), "3 bytes are no quickXorHash");
    }
}
