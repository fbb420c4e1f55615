//! A short owned copy of a name or string read from untrusted bytes (an FDT
//! node or property name, a compatible string), kept in errors so that they
//! own their values. Shared by the root FDT reader and the compound
//! compatible parser.

use core::fmt;

/// A short copy of a name or string from the FDT, so that errors own their
/// values (no borrow of the input). Longer strings are cut at
/// [`FdtName::CAPACITY`] bytes (on a character boundary) and shown with `...`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdtName {
    buf: [u8; Self::CAPACITY],
    len: u8,
    truncated: bool,
}

impl FdtName {
    /// Bytes kept.
    pub const CAPACITY: usize = 64;

    /// Copies `s`, cut to [`FdtName::CAPACITY`] bytes.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(Self::CAPACITY);
        while !s.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        let mut buf = [0u8; Self::CAPACITY];
        let kept = s.as_bytes().get(..end).unwrap_or_default();
        if let Some(dst) = buf.get_mut(..end) {
            dst.copy_from_slice(kept);
        }
        Self {
            buf,
            len: u8::try_from(end).unwrap_or(0),
            truncated: end < s.len(),
        }
    }

    /// The kept text.
    pub fn as_str(&self) -> &str {
        let bytes = self.buf.get(..usize::from(self.len)).unwrap_or_default();
        core::str::from_utf8(bytes).unwrap_or_default()
    }

    /// Whether the original was longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Debug for FdtName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Display for FdtName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}
