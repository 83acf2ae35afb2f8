//! # vault-core — the pivault engine
//!
//! Encrypted customer records in an embedded RocksDB, a separate keystore of
//! wrapped keys, users and roles checked on every operation, and a
//! tamper-evident audit trail. This crate never prints and never opens a
//! socket; the CLI and the server are thin front ends over [`Vault`].
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod clock;
pub mod crypto;
pub mod doctor;
pub mod error;
mod fsutil;
pub mod header;
pub mod ids;
pub mod keystore;
pub mod schema;
pub mod secret;
mod store;

pub use error::{Error, Result};
