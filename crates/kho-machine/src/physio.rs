//! Byte copies in and out of simulated physical memory.
//!
//! [`PhysMem`] is seen as words of `AtomicU64`; on-memory formats
//! (setup_data, kho_data, the scratch array, the manifest) are byte layouts.
//! These two helpers bridge them: a byte string at an 8-byte aligned physical
//! address, stored little-endian word by word. Bounds are the arena's: the
//! whole run must lie inside one RAM range, or the call fails with
//! [`MemError`] and touches nothing.

use std::sync::atomic::Ordering;

use kho::{MemError, PhysAddr};

use crate::PhysMem;

/// Bytes per word.
const WORD: usize = 8;

/// Reads `len` bytes at `phys` (8-byte aligned).
pub(crate) fn read_bytes(mem: &PhysMem, phys: PhysAddr, len: usize) -> Result<Vec<u8>, MemError> {
    let words = mem.words(phys, len.div_ceil(WORD))?;
    let mut out = Vec::with_capacity(words.len().saturating_mul(WORD));
    for w in words {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    out.truncate(len);
    Ok(out)
}

/// Writes `bytes` at `phys` (8-byte aligned). A trailing partial word keeps
/// the bytes that follow `bytes` in memory.
pub(crate) fn write_bytes(mem: &PhysMem, phys: PhysAddr, bytes: &[u8]) -> Result<(), MemError> {
    let words = mem.words(phys, bytes.len().div_ceil(WORD))?;
    for (w, chunk) in words.iter().zip(bytes.chunks(WORD)) {
        let mut le = w.load(Ordering::Relaxed).to_le_bytes();
        le.iter_mut().zip(chunk).for_each(|(d, s)| *d = *s);
        w.store(u64::from_le_bytes(le), Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
