use super::*;
use alloc::vec::Vec;

#[test]
fn splits_base_and_tokens() {
    let c = Compound::parse("kho-v4;radix-v1;vmalloc-v1").unwrap();
    assert_eq!(c.base(), "kho-v4");
    assert!(c.is_compound());
    assert_eq!(c.tokens().collect::<Vec<_>>(), ["radix-v1", "vmalloc-v1"]);
    assert!(c.has("vmalloc-v1") && !c.has("block-v1"));
    let plain = Compound::parse("luo-v5").unwrap();
    assert!(!plain.is_compound());
    assert_eq!(plain.tokens().count(), 0);
}

#[test]
fn tokens_must_be_non_empty_and_strictly_ascending() {
    assert_eq!(
        Compound::parse("kho-v4;"),
        Err(CompatError::EmptyToken { position: 0 })
    );
    assert_eq!(
        Compound::parse("kho-v4;radix-v1;;vmalloc-v1"),
        Err(CompatError::EmptyToken { position: 1 })
    );
    assert_eq!(
        Compound::parse("kho-v4;vmalloc-v1;radix-v1"),
        Err(CompatError::Unordered {
            position: 1,
            token: FdtName::new("radix-v1")
        })
    );
    assert_eq!(
        Compound::parse("kho-v4;radix-v1;radix-v1"),
        Err(CompatError::Unordered {
            position: 1,
            token: FdtName::new("radix-v1")
        })
    );
}

#[test]
fn compat_align_rounds_the_nul_up_to_8() {
    assert_eq!(aligned_len("luo-v5"), Some(8));
    assert_eq!(aligned_len("luo-v5;block-v1"), Some(16));
    assert_eq!(aligned_len("1234567"), Some(8));
    assert_eq!(aligned_len("12345678"), Some(16));
    assert_eq!(aligned_len("memfd-v2;vmalloc-v1"), Some(24));
}

#[test]
fn c_strings_fit_with_their_nul() {
    let mut out = [0xaau8; 8];
    assert!(write_c_string("luo-v5", &mut out));
    assert_eq!(&out, b"luo-v5\0\0");
    assert!(!write_c_string("12345678", &mut out));
    assert!(!write_c_string("a\0b", &mut out));
    assert_eq!(&out, b"luo-v5\0\0");
}
