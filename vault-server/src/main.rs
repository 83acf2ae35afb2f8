//! `pivault-server`: the HTTP API over the vault-core facade.
//!
//! Not built yet: the HTTP server is the subject of its own issue. Until then
//! this binary refuses to start rather than pretend to serve.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("pivault-server: the HTTP API is not available in this build; use the `pivault` CLI");
    ExitCode::from(2)
}
