//! Small helpers shared across stages.

use sha2::{Digest, Sha256};

/// Hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
