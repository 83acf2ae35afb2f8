//! The one integration-test binary of pivault: real RocksDB databases in
//! temp dirs, the real `pivault` binary, real child processes killed.

mod audit_anchor;
mod backup;
mod certificate_standards;
mod cli;
mod cli_output;
mod common;
mod concurrency;
mod cosign;
mod crash;
mod custodian;
mod custody;
mod disposal;
mod documents;
mod edits;
mod exports;
mod fault_injection;
mod forensic;
mod housekeeping;
mod incident;
mod insiders;
mod library;
mod output_schemas;
mod profiles;
mod purge_controls;
mod regressions;
mod search;
mod server;
mod server_concurrency;
mod server_hostile;
mod service;
mod siem;
mod spreadsheet;
mod two_factor;
mod web;
mod wisp;
