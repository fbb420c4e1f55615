//! Fuzz entry points of the kho-v4 / LUO readers (placeholder).
