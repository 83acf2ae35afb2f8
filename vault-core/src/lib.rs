//! # vault-core — the pivault engine
//!
//! Encrypted customer records in an embedded RocksDB, a separate keystore of
//! wrapped keys, users and roles checked on every operation, and a
//! tamper-evident audit trail. This crate never opens a socket and prints
//! nothing, except the opt-in disposal timing trace (`PIVAULT_DISPOSAL_TRACE`:
//! step names, durations and keystore file names on stderr, never an ID or a
//! value); the CLI and the server are thin front ends over [`Vault`].
#![forbid(unsafe_code)]

pub mod access;
pub mod agefile;
pub mod audit;
pub mod beacon;
pub mod breached;
pub mod certificate;
pub mod clock;
pub mod cosign;
pub mod crypto;
pub mod doctor;
pub mod error;
mod fsutil;
pub mod header;
pub mod ids;
pub mod keystore;
pub mod printable;
pub mod schema;
pub mod secret;
pub mod siem;
pub mod spool;
mod store;
pub mod timestamp;
pub mod totp;
pub mod vault;
pub mod views;

/// Where `pivault-server` creates its local Unix-domain socket, and where
/// `pivault` looks for it, unless `PIVAULT_SOCKET` (or `--socket`) says
/// otherwise.
pub const DEFAULT_SOCKET: &str = "/run/pivault/pivault.sock";

/// Re-exported so front ends can name public keys without depending on it.
pub use ed25519_dalek;
pub use error::{Error, Result};
pub use store::postgres::HolderLookup;
/// How long a vault whose stores are on a cluster stays held by a process
/// that stopped renewing its lease (a standby takes it over after that).
pub use store::postgres::LEASE as CLUSTER_LEASE;
pub use vault::Vault;
