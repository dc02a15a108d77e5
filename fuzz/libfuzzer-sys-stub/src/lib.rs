//! `libfuzzer_sys::arbitrary`, without libFuzzer (see Cargo.toml).
pub use arbitrary;
