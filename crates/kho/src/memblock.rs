//! memblock (placeholder)
