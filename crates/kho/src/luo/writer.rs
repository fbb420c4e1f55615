//! writer (placeholder)
