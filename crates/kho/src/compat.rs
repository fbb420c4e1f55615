//! Compound compatible strings: a base version and its sub-components.
//!
//! Glossary:
//!
//! | name          | meaning                                                               |
//! |---------------|-----------------------------------------------------------------------|
//! | compatible    | a NUL-terminated version string: `kho-v4`, `luo-v5`, `memfd-v2`, ...  |
//! | base          | the part before the first `;`: the structure's own version            |
//! | sub-component | a token after a `;`: the version of a data structure the base embeds  |
//! | compound      | a base followed by one or more `;token`                               |
//!
//! # Format
//!
//! Linux builds compound strings at compile time with `KHO_SUB_COMPAT(str)`,
//! which is `";" str`, appended to a base in strict alphabetical order so
//! that one set of sub-components has exactly one spelling:
//!
//! ```text
//!   kho-v4;radix-v1;vmalloc-v1        root FDT (the radix tree, vmalloc)
//!   luo-v5;block-v1                   LUO header (serialization blocks)
//!   memfd-v2;vmalloc-v1               memfd file handler (its folio array)
//! ```
//!
//! A kernel compares the whole string with its own (`fdt_node_check_compatible`
//! for the root, `strcmp` of fixed arrays elsewhere), so it never splits it.
//! A reader that speaks several eras must: [`Compound::parse`] splits a string
//! into its base and tokens and checks the ordering rule; the caller maps
//! each token to the sub-components it knows and rejects the others by name.
//!
//! Where a compatible string sits in a fixed-size array of a structure, its
//! size with the NUL is rounded up to 8 bytes (`KHO_COMPAT_ALIGN`):
//! [`aligned_len`].
//!
//! Sources: linux-mm/linux-mm@8c8e79304b06 `include/linux/kho/abi/compat.h`
//! (`KHO_SUB_COMPAT`, `KHO_COMPAT_ALIGN`); the series "kho: decouple ...
//! compatibility from global KHO version" (RFC v1, June 2026) that spells
//! the root, LUO and memfd strings above.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use crate::name::FdtName;

/// The separator between a base and each sub-component.
pub const SEPARATOR: char = ';';

/// Why a compound string breaks the `KHO_SUB_COMPAT` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    /// Two separators in a row, or one at the end.
    #[error("compatible: sub-component {position} is empty")]
    EmptyToken {
        /// 0-based position of the empty token among the sub-components.
        position: usize,
    },
    /// A token that does not sort strictly after the one before it
    /// (out of order, or repeated).
    #[error(
        "compatible: sub-component {position} `{token}` does not sort strictly after the one before it"
    )]
    Unordered {
        /// 0-based position of the token among the sub-components.
        position: usize,
        /// The token out of place.
        token: FdtName,
    },
}

/// A compatible string split into its base and sub-components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compound<'a> {
    whole: &'a str,
    base: &'a str,
    subs: Option<&'a str>,
}

impl<'a> Compound<'a> {
    /// Splits `s` and checks that every token is non-empty and sorts
    /// strictly after the one before it.
    pub fn parse(s: &'a str) -> Result<Self, CompatError> {
        let (base, subs) = match s.split_once(SEPARATOR) {
            Some((base, subs)) => (base, Some(subs)),
            None => (s, None),
        };
        let this = Self {
            whole: s,
            base,
            subs,
        };
        let mut previous: Option<&str> = None;
        for (position, token) in this.tokens().enumerate() {
            if token.is_empty() {
                return Err(CompatError::EmptyToken { position });
            }
            if let Some(p) = previous
                && p >= token
            {
                return Err(CompatError::Unordered {
                    position,
                    token: FdtName::new(token),
                });
            }
            previous = Some(token);
        }
        Ok(this)
    }

    /// The whole string.
    pub fn as_str(&self) -> &'a str {
        self.whole
    }

    /// The base version, before the first separator.
    pub fn base(&self) -> &'a str {
        self.base
    }

    /// Whether any sub-component follows the base.
    pub fn is_compound(&self) -> bool {
        self.subs.is_some()
    }

    /// The sub-component tokens, in order.
    pub fn tokens(&self) -> impl Iterator<Item = &'a str> + Clone + 'a {
        self.subs.into_iter().flat_map(|s| s.split(SEPARATOR))
    }

    /// Whether `token` is one of the sub-components.
    pub fn has(&self, token: &str) -> bool {
        self.tokens().any(|t| t == token)
    }
}

/// The size of the fixed array that holds `s` and its NUL, rounded up to 8
/// bytes (`KHO_COMPAT_ALIGN`); `None` if it would overflow.
pub(crate) const fn aligned_len(s: &str) -> Option<usize> {
    match s.len().checked_add(1 + 7) {
        Some(n) => Some(n & !7),
        None => None,
    }
}

/// Copies `s` into `out` followed by NUL bytes; `false` (and `out`
/// untouched) if `s` and its NUL do not fit.
pub(crate) fn write_c_string(s: &str, out: &mut [u8]) -> bool {
    let bytes = s.as_bytes();
    if bytes.len() >= out.len() || bytes.contains(&0) {
        return false;
    }
    let (head, tail) = out.split_at_mut(bytes.len());
    head.copy_from_slice(bytes);
    tail.fill(0);
    true
}

#[cfg(all(test, feature = "alloc"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic
)]
mod tests;
