//! crosscheck (placeholder)
