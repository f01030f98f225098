//! The shared conformance suite for `StateStore` backends (cases land in the next commits).
