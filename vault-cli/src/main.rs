//! `pivault`: the command-line front end of the vault.
//!
//! Glue only: parse arguments, obtain secrets (file, stdin or a no-echo
//! prompt — never a flag), call the [`vault_core::Vault`] facade, format the
//! result for people or, with `--json`, for scripts. Data goes to stdout,
//! messages to stderr. Exit codes are listed in [`exit`] and the README.
#![forbid(unsafe_code)]

mod backup;
mod dispose;
mod exit;
mod export;
mod hosting;
mod incident;
mod local;
mod output;
mod profile;
mod remote;
mod service;
mod siem;
mod two_factor;

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use vault_core::access::Role;
use vault_core::audit::EventFilter;
use vault_core::crypto::KdfParams;
use vault_core::doctor::{self, Level};
use vault_core::ids::{CollectionName, RecordId, Username};
use vault_core::schema::Schema;
use vault_core::secret::SecretString;
use vault_core::vault::{
    Context, ExportScope, ImportFormat, InitOptions, OpenOptions, RecordFilter, Session, Vault,
};

use crate::output::Out;

/// pivault — a vault for personal-information records: encrypted at rest,
/// access-controlled, audited, and destroyed provably.
#[derive(Parser, Debug)]
#[command(
    name = "pivault",
    version,
    propagate_version = true,
    after_help = "Staff: commands go to pivault-server through its local socket \
(PIVAULT_SOCKET, default /run/pivault/pivault.sock) with your own username and password; \
`pivault login` keeps a token so that later commands need no password.\n\
Custodian: init, backup and doctor, and any command given PIVAULT_PASSPHRASE_FILE, \
open the vault directory directly with the vault passphrase."
)]
struct Cli {
    /// Vault directory.
    #[arg(long, global = true, env = "PIVAULT_DIR", value_name = "DIR")]
    vault: Option<PathBuf>,
    /// Your username.
    #[arg(long, global = true, env = "PIVAULT_USER", value_name = "NAME")]
    user: Option<String>,
    /// File holding the vault passphrase (or a key file): the custodian's,
    /// to open the vault directory directly. Staff leave it unset and go
    /// through pivault-server's socket. Never give a secret as a flag.
    #[arg(
        long,
        global = true,
        env = "PIVAULT_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    passphrase_file: Option<PathBuf>,
    /// File holding your password.
    #[arg(
        long,
        global = true,
        env = "PIVAULT_PASSWORD_FILE",
        value_name = "FILE"
    )]
    password_file: Option<PathBuf>,
    /// File holding the second factor's code for this sign-in (6 digits from
    /// the authenticator app, or a recovery code), or `-` for one line of
    /// stdin. Without it, the code is prompted for when the account needs one.
    #[arg(long, global = true, env = "PIVAULT_CODE_FILE", value_name = "FILE")]
    code_file: Option<PathBuf>,
    /// File holding a service account's token (`pivault service add`): a
    /// script's credential instead of a user and password.
    #[arg(
        long,
        global = true,
        env = "PIVAULT_SERVICE_TOKEN_FILE",
        value_name = "FILE"
    )]
    service_token_file: Option<PathBuf>,
    /// Machine-readable output (see the README for the schema of each command).
    #[arg(long, global = true)]
    json: bool,
    /// fsync every write (survives power loss, slower).
    #[arg(long, global = true, env = "PIVAULT_SYNC")]
    sync: bool,
    /// Talk to a running pivault-server (https://HOST:PORT) instead of opening --vault.
    #[arg(long, global = true, env = "PIVAULT_SERVER", value_name = "URL")]
    server: Option<String>,
    /// pivault-server's local socket, which every command uses unless
    /// --server or a passphrase file is given [default: /run/pivault/pivault.sock].
    #[arg(long, global = true, env = "PIVAULT_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The profile (remembered by `pivault login`) whose server, socket,
    /// user and CA certificate fill in what flags and variables leave unset.
    #[arg(long, global = true, env = "PIVAULT_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// CA certificate (PEM) to trust for --server, e.g. a self-signed server's certificate.
    #[arg(long, global = true, env = "PIVAULT_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// `pivault passphrase …` (custodian: opens the vault directory with the passphrase).
#[derive(Subcommand, Debug)]
enum PassphraseCmd {
    /// Change the vault passphrase: the current one from
    /// PIVAULT_PASSPHRASE_FILE (or a prompt), the new one from
    /// --new-passphrase-file (or a prompt, twice). Re-wraps the keys and
    /// ratchets the epoch: the old passphrase opens nothing afterwards.
    Change {
        /// File holding the new passphrase (never given as a flag value).
        #[arg(long, env = "PIVAULT_NEW_PASSPHRASE_FILE", value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
}

/// `pivault profile …`.
#[derive(Subcommand, Debug)]
enum ProfileCmd {
    /// List the profiles; the current one is marked.
    List,
    /// Make a profile the current one.
    Use {
        /// Profile name.
        name: String,
    },
    /// Forget a profile.
    Remove {
        /// Profile name.
        name: String,
    },
}

/// `pivault maintenance …`.
#[derive(Subcommand, Debug)]
enum MaintenanceCmd {
    /// Rotate every bucket holding an updated record's old key or an
    /// orphaned key, ratchet the epoch and purge the keystore (officer).
    /// pivault-server runs it daily; an open past the bound runs it too.
    Run,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new vault and its first admin (who chooses their own password).
    Init(InitArgs),
    /// A service provider's vaults on one keystore cluster: create one with
    /// a database role of its own, list them (the operator's commands; no
    /// key or record is ever shown).
    #[command(subcommand)]
    Vault(hosting::VaultCmd),
    /// Manage users (admin).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage collections and their schemas.
    #[command(subcommand)]
    Collection(CollectionCmd),
    /// Store, read, correct and list records.
    #[command(subcommand)]
    Record(RecordCmd),
    /// Show the subject ID for a customer reference.
    #[command(subcommand)]
    Subject(SubjectCmd),
    /// Read, verify and report on the audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Destroy records provably (crypto-shredding) and issue a certificate.
    #[command(subcommand)]
    Dispose(DisposeCmd),
    /// List and retry disposal batches.
    #[command(subcommand)]
    Disposal(DisposalCmd),
    /// Show, export, verify (offline), render, validate and co-sign certificates.
    #[command(subcommand)]
    Certificate(CertificateCmd),
    /// Export the vault's public keys (certificate and audit), PEM.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Retention policies; list and dispose what is past retention (cron-friendly).
    #[command(subcommand)]
    Retention(RetentionCmd),
    /// Legal holds that block disposal.
    #[command(subcommand)]
    Hold(HoldCmd),
    /// Disposal contractors: scope and signing keys.
    #[command(subcommand)]
    Contractor(ContractorCmd),
    /// Service accounts: a script's own token (retention runner).
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Two-factor sign-in: enrol your authenticator app, confirm it, and
    /// which roles must use one.
    #[command(subcommand, name = "two-factor")]
    TwoFactor(two_factor::TwoFactorCmd),
    /// Backups of the record data (never the header); restore replays the disposal ledger.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// The maintenance ratchet: destroy orphaned keys and old keys of updated records.
    #[command(subcommand)]
    Maintenance(MaintenanceCmd),
    /// The vault passphrase (custodian).
    #[command(subcommand)]
    Passphrase(PassphraseCmd),
    /// Report the live security configuration; non-zero exit on any unsafe setting.
    Doctor,
    /// Record that the annual security review took place (officer).
    Review,
    /// The incident register: scope, open, actions, post-incident review,
    /// breach notice (201 CMR 17.03(2)(j); M.G.L. c. 93H §3).
    #[command(subcommand)]
    Incident(incident::IncidentCmd),
    /// The WISP evidence pack: each element of 201 CMR 17.03(2) and 17.04
    /// with its live evidence, met / missing / attention (officer, auditor).
    Wisp(incident::WispArgs),
    /// Who you are to the vault: username, role, reveal grant, last login.
    Whoami,
    /// Log in to pivault-server (its socket, or --server) and keep the token in a file only you can read (mode 0600);
    /// the server, user and CA certificate are remembered in your profile.
    Login,
    /// Profiles remembered by `pivault login`: list, switch, forget.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Revoke the login token and delete its file.
    Logout,
    /// Print shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug, Clone)]
struct DisposeOpts {
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Show what would be disposed and excluded; change nothing. Its
    /// output's `plan` can be given to --plan.
    #[arg(long)]
    dry_run: bool,
    /// Dispose only if the records are exactly those of the dry run that
    /// printed this plan: refused (exit 13, preview_stale), with nothing
    /// destroyed, when one was added, held or disposed of since.
    #[arg(long, value_name = "PLAN", conflicts_with = "dry_run")]
    plan: Option<String>,
    /// The data owner named on the certificate (your business).
    #[arg(long, env = "PIVAULT_DATA_OWNER", default_value = "")]
    data_owner: String,
    /// The data owner's address.
    #[arg(long, env = "PIVAULT_DATA_OWNER_ADDRESS")]
    data_owner_address: Option<String>,
    /// Your title, for the operator's attestation.
    #[arg(long)]
    title: Option<String>,
    /// The disposal contractor's organisation, if one acts.
    #[arg(long)]
    contractor_org: Option<String>,
    /// The contract reference, if a contractor acts.
    #[arg(long)]
    contract_ref: Option<String>,
    /// The contractor's certification, if any: scheme and certificate
    /// number, e.g. "NAID AAA 12345" (named on the certificate).
    #[arg(long)]
    contractor_cert: Option<String>,
}

#[derive(Subcommand, Debug)]
enum DisposeCmd {
    /// Dispose of one record.
    Record {
        /// Record ID.
        id: String,
        #[command(flatten)]
        opts: DisposeOpts,
    },
    /// Dispose of every record of one subject.
    Subject {
        /// Subject UUID or customer reference.
        subject: String,
        #[command(flatten)]
        opts: DisposeOpts,
    },
    /// Dispose of records created (or updated) before a date.
    Query {
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Cut-off (RFC 3339 or YYYY-MM-DD), exclusive.
        #[arg(long)]
        before: String,
        /// Compare the last update rather than the creation time.
        #[arg(long)]
        by_updated: bool,
        #[command(flatten)]
        opts: DisposeOpts,
    },
    /// Dispose of records listed in a file, one record ID a line (scripted deletion).
    From {
        /// File of record IDs ('-' for stdin).
        file: PathBuf,
        #[command(flatten)]
        opts: DisposeOpts,
    },
}

#[derive(Subcommand, Debug)]
enum DisposalCmd {
    /// List disposal batches and their state.
    List,
    /// Retry a failed batch (re-purge and re-verify).
    Retry {
        /// Disposal ID.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum CertificateCmd {
    /// List stored certificates (ID, status, issued, operator, records, co-signers).
    List {
        /// Only drafts waiting for validation.
        #[arg(long)]
        draft: bool,
    },
    /// Show a certificate stored in the vault.
    Show {
        /// Certificate ID.
        id: String,
    },
    /// Write a certificate file (JSON) for handing over; `--format vc`
    /// writes it as a W3C Verifiable Credential (Data Integrity proof,
    /// eddsa-jcs-2022) that generic verifiers check.
    Export {
        /// Certificate ID.
        id: String,
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// `json`: the pivault-certificate file; `vc`: the Verifiable Credential.
        #[arg(long, value_enum, default_value = "json")]
        format: CertFormat,
    },
    /// Verify a certificate file offline, with the vault's public key only;
    /// with --record and --proof, also that the record was in its batch.
    Verify {
        /// Certificate file.
        file: PathBuf,
        /// The vault's certificate public key (PEM from `keys export`, or hex).
        #[arg(long)]
        key: PathBuf,
        /// A record ID to check against the certificate's commitment.
        #[arg(long, requires = "proof")]
        record: Option<String>,
        /// The proof file from `certificate prove`.
        #[arg(long, requires = "record")]
        proof: Option<PathBuf>,
    },
    /// Print the proof that a record was among a certificate's disposed
    /// records (its Merkle path to the certificate's record commitment).
    Prove {
        /// Certificate ID.
        id: String,
        /// Record ID.
        record: String,
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Render a certificate file (or a stored certificate ID) as the document
    /// a business files: a printable HTML page, or with --pdf a PDF with the
    /// signed certificate file attached inside it. The certificate is verified
    /// first and the page says the result (FAILED when it does not verify).
    Render {
        /// Certificate file or ID.
        cert: String,
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write a PDF (no browser needed) instead of HTML.
        #[arg(long)]
        pdf: bool,
        /// For a certificate file: the vault's certificate public key to verify
        /// it against (default: the key the file carries; the page then says
        /// to compare its fingerprint with the contract's).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Write the exact signed bytes of a certificate (for `openssl pkeyutl -verify`).
    Payload {
        /// Certificate file.
        file: PathBuf,
        /// Output file for the message.
        #[arg(long)]
        out: PathBuf,
        /// Output file for the vault signature (64 raw bytes).
        #[arg(long)]
        sig_out: PathBuf,
    },
    /// Sign a certificate's payload offline with your contractor key (the
    /// co-sign download of the web page, or `certificate payload --out`):
    /// prints the signature in hex, to paste into the page. No vault, no
    /// server: the key never leaves this machine.
    SignPayload {
        /// The payload file.
        file: PathBuf,
        /// Your Ed25519 private key file (from `contractor keygen`).
        #[arg(long)]
        key_file: PathBuf,
        /// Write the signature (hex) to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Validate a draft certificate (an officer or auditor other than the operator).
    Validate {
        /// Certificate ID.
        id: String,
        /// Your title.
        #[arg(long)]
        title: Option<String>,
    },
    /// Co-sign a certificate with your contractor key (private key file, hex seed).
    Cosign {
        /// Certificate ID.
        id: String,
        /// Your Ed25519 private key file (from `contractor keygen`).
        #[arg(long)]
        key_file: PathBuf,
    },
}

/// The forms of `certificate export`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CertFormat {
    /// The pivault-certificate file.
    Json,
    /// A W3C Verifiable Credential with an eddsa-jcs-2022 proof.
    Vc,
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Write certificate.pem and audit.pem into a directory.
    Export {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum RetentionCmd {
    /// Set a collection's retention period.
    Set {
        /// Collection.
        collection: String,
        /// Keep records this many days.
        #[arg(long)]
        days: u32,
        /// Count from the last update instead of creation.
        #[arg(long)]
        from_updated: bool,
    },
    /// Show retention policies.
    Show,
    /// List records past retention (and held exclusions).
    Due,
    /// Show or set the schedule on which `pivault-server` disposes of
    /// everything past retention (officer; off by default).
    Schedule {
        /// Run every N hours (the first run at the server's next check).
        #[arg(long, value_name = "N", conflicts_with = "off")]
        every_hours: Option<u32>,
        /// Turn the schedule off.
        #[arg(long)]
        off: bool,
    },
    /// Dispose of everything past retention, in one batch per run.
    Run {
        #[command(flatten)]
        opts: DisposeOpts,
    },
}

#[derive(Subcommand, Debug)]
enum HoldCmd {
    /// Place a legal hold on a record or a subject.
    Add {
        /// Record ID.
        #[arg(long, conflicts_with = "subject")]
        record: Option<String>,
        /// Subject UUID or customer reference.
        #[arg(long)]
        subject: Option<String>,
        /// Why (no personal information; no numbers of 4+ digits).
        #[arg(long)]
        reason: String,
    },
    /// Lift a legal hold.
    Remove {
        /// Record ID.
        #[arg(long, conflicts_with = "subject")]
        record: Option<String>,
        /// Subject UUID or customer reference.
        #[arg(long)]
        subject: Option<String>,
    },
    /// List legal holds.
    List,
}

#[derive(Subcommand, Debug)]
enum ContractorCmd {
    /// Assign a contractor's scope (collections and/or records) and register their public key (admin).
    Assign {
        /// The contractor's username.
        name: String,
        /// Collection in scope (repeatable).
        #[arg(long)]
        collection: Vec<String>,
        /// Record in scope (repeatable).
        #[arg(long)]
        record: Vec<String>,
        /// The contractor's Ed25519 public key (PEM or hex file).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// List contractors: scope and registered key fingerprint (admin, officer, auditor).
    List,
    /// Take a contractor's scope and key away (admin); `user disable` ends the account.
    Revoke {
        /// The contractor's username.
        name: String,
    },
    /// Generate an Ed25519 key pair for co-signing (the private key file stays with the contractor).
    Keygen {
        /// Private key output file (created 0600); the public key goes to FILE.pub.pem.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// Username of the first admin.
    #[arg(long)]
    admin: String,
    /// Number of key buckets (fixed for the vault's life).
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_BUCKETS)]
    buckets: u32,
    /// Cheap Argon2id parameters for tests and demos. `doctor` reports such a vault as unsafe.
    #[arg(long)]
    insecure_fast_kdf: bool,
    /// Roles that must sign in with a second factor (comma-separated, or
    /// `none`, which `doctor` reports). Their users' first sign-in may only
    /// enrol one (`pivault two-factor enrol`).
    #[arg(long, value_name = "ROLES", default_value = "admin,officer,contractor")]
    two_factor: String,
    /// Keep the vault's keys on a PostgreSQL cluster instead of beside the
    /// records: FILE is the cluster's `keystore.json` (members, database,
    /// user, password file; no secret in it). See README "Running on PostgreSQL".
    #[arg(long, value_name = "FILE")]
    pub(crate) keystore_cluster: Option<PathBuf>,
    /// Keep the vault's records, users, sessions, disposal batches and
    /// certificates on a PostgreSQL cluster instead of in the vault
    /// directory: FILE has the shape of `keystore.json` and names the
    /// records database (`pivault_records`). The audit trail goes there
    /// too; the header stays in the vault directory.
    #[arg(long, value_name = "FILE")]
    pub(crate) records_cluster: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Add a user. Their password comes from PIVAULT_NEW_PASSWORD_FILE or a prompt.
    Add {
        /// Username.
        name: String,
        /// Role: admin, officer, clerk, auditor or contractor.
        #[arg(long)]
        role: String,
        /// Let a clerk reveal sensitive fields (with a reason, audited).
        #[arg(long)]
        reveal: bool,
        /// The person's full name, printed on the certificates they sign
        /// (kept with a pending officer until approved).
        #[arg(long, value_name = "NAME")]
        full_name: Option<String>,
        /// File holding the new user's password.
        #[arg(long, env = "PIVAULT_NEW_PASSWORD_FILE", value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// List users.
    List,
    /// Disable a user: all their sessions and tokens end at once.
    Disable {
        /// Username.
        name: String,
    },
    /// Re-enable a disabled user.
    Enable {
        /// Username.
        name: String,
    },
    /// Remove a user's second factor (admin; not your own): a lost phone.
    /// They enrol again at their next sign-in.
    ResetTwoFactor {
        /// Username.
        name: String,
    },
    /// Lift a lock-out (admin). With --break-glass, the custodian does it
    /// with the vault passphrase alone, no admin login (audited with your OS user).
    Unlock {
        /// Username.
        name: String,
        /// Custodian break-glass: open the vault directory with the
        /// passphrase (PIVAULT_PASSPHRASE_FILE) and unlock without logging in.
        #[arg(long)]
        break_glass: bool,
    },
    /// Give a clerk the reveal grant (waits for a second officer's
    /// approval, exit 13) or take it away (at once). Admin or officer.
    Reveal {
        /// Username (a clerk).
        name: String,
        /// Give the grant.
        #[arg(long, conflicts_with = "revoke", required_unless_present = "revoke")]
        grant: bool,
        /// Take the grant away.
        #[arg(long)]
        revoke: bool,
    },
    /// Set or clear a person's full name, which certificates print for the
    /// operator, validator and contractor (admin).
    Name {
        /// Username.
        name: String,
        /// The full name, e.g. "Maria Santos".
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        full_name: Option<String>,
        /// Remove the full name (certificates print the username).
        #[arg(long)]
        clear: bool,
    },
    /// Change a user's role.
    Role {
        /// Username.
        name: String,
        /// New role.
        role: String,
    },
    /// Change a password: your own (the current one is asked again, or read
    /// from --password-file), or anyone else's as admin (an officer's waits
    /// for a second officer's approval).
    Passwd {
        /// Username (default: yourself).
        name: Option<String>,
        /// File holding the new password.
        #[arg(long, env = "PIVAULT_NEW_PASSWORD_FILE", value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// List pending two-person requests (officer grant, reveal grant, officer password reset).
    Requests,
    /// Approve a pending request (an officer other than the requester).
    Approve {
        /// Request ID (req_…).
        id: String,
    },
    /// Reject a pending request (an officer, or the requester).
    Reject {
        /// Request ID (req_…).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum CollectionCmd {
    /// Create a collection from a schema file (format in the README).
    Create {
        /// Collection name.
        name: String,
        /// Schema file (JSON).
        #[arg(long)]
        schema: PathBuf,
    },
    /// Change a collection's schema without losing records: add optional
    /// fields, retire fields ("retired": true; records keep them until their
    /// next update), change purposes (admin).
    Update {
        /// Collection name.
        name: String,
        /// The new schema file (JSON).
        #[arg(long)]
        schema: PathBuf,
    },
    /// List collections.
    List,
    /// Show a collection's schema.
    Show {
        /// Collection name.
        name: String,
    },
    /// Rebuild a collection's search indexes from its records (officer):
    /// for records stored before a field became searchable, before this
    /// build, or restored from a backup.
    Reindex {
        /// Collection name.
        name: String,
    },
    /// Export every record of a collection, encrypted with age to a
    /// recipient's key or a passphrase (officer).
    Export {
        /// Collection name.
        name: String,
        #[command(flatten)]
        opts: export::ExportOpts,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Jsonl,
    Csv,
}

#[derive(Subcommand, Debug)]
enum RecordCmd {
    /// Store a new record; prints its ID.
    Put {
        /// Collection.
        collection: String,
        /// Subject: a UUID or your own customer reference (default: a new subject).
        #[arg(long)]
        subject: Option<String>,
        /// JSON file with the record body ('-' for stdin).
        #[arg(long)]
        data: PathBuf,
    },
    /// Import JSON Lines or CSV, streaming; nothing is stored if any row is invalid.
    Import {
        /// Collection.
        collection: String,
        /// Input file.
        file: PathBuf,
        /// Input format (default: from the file extension).
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// Column naming the subject (UUID or customer reference).
        #[arg(long, default_value = "subject")]
        subject_column: String,
        /// Start after line N of the file, numbered as in the import's
        /// messages (a CSV header is line 1 and is always read): resumes an
        /// import that stopped after line N without storing duplicates.
        #[arg(long, value_name = "N", default_value_t = 0)]
        skip_lines: u64,
        /// Map CSV column headers to fields: 'SSN=ssn,Date of Birth=born'
        /// (headers match regardless of case and spacing; 'Notes=' drops a
        /// column). Repeatable. Unmapped headers are taken as field names.
        #[arg(long, value_name = "HEADER=FIELD,...")]
        map: Vec<String>,
        /// A mapping file: one HEADER=FIELD per line, '#' comments.
        #[arg(long, value_name = "FILE")]
        map_file: Option<PathBuf>,
        /// Validate every row and report; store nothing.
        #[arg(long)]
        check: bool,
    },
    /// Read a record, masked unless fields are revealed with a reason.
    Get {
        /// Record ID.
        id: String,
        /// Sensitive field to reveal (repeatable).
        #[arg(long)]
        reveal: Vec<String>,
        /// Why you reveal (recorded in the audit trail; no personal information).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Change some fields; the others are kept (a new version, new key).
    Update {
        /// Record ID.
        id: String,
        /// JSON file of fields to set, null to remove ('-' for stdin): a
        /// JSON merge patch (RFC 7396).
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// Set FIELD from stdin or a no-echo prompt: `--set phone=-`. Values
        /// are never flags (they would stay in the process list and shell
        /// history); with several, stdin holds one value per line, in order.
        #[arg(long, value_name = "FIELD=-")]
        set: Vec<String>,
        /// Remove FIELD.
        #[arg(long, value_name = "FIELD")]
        unset: Vec<String>,
    },
    /// Replace the whole record with a new body (fields not given are removed).
    Replace {
        /// Record ID.
        id: String,
        /// JSON file with the complete new body ('-' for stdin).
        #[arg(long)]
        data: PathBuf,
    },
    /// Find records by a searchable field's value: `--ssn -` reads the SSN
    /// from stdin or a no-echo prompt (values are never flags). Masked
    /// results, at most 20; audited with the field and the number of hits.
    Find {
        /// Collection.
        collection: String,
        /// Search the SSN fields ('-': the value from stdin or a prompt).
        #[arg(long, value_name = "-")]
        ssn: Option<String>,
        /// Search the driver's licence fields, value as "MA S12345678".
        #[arg(long, visible_alias = "license", value_name = "-")]
        licence: Option<String>,
        /// Search the state ID fields, value as "MA 123456789".
        #[arg(long, value_name = "-")]
        state_id: Option<String>,
        /// Search the email fields.
        #[arg(long, value_name = "-")]
        email: Option<String>,
        /// Search the phone fields.
        #[arg(long, value_name = "-")]
        phone: Option<String>,
        /// Search the name fields (given, family, full): whole words.
        #[arg(long, value_name = "-")]
        name: Option<String>,
        /// Search one searchable field by its name: `--field ssn2=-`.
        #[arg(long, value_name = "FIELD=-")]
        field: Option<String>,
        /// Names only: match words beginning with the value (3+ letters).
        #[arg(long)]
        prefix: bool,
    },
    /// List a record's versions: when, by whom, which fields changed (names only).
    History {
        /// Record ID.
        id: String,
    },
    /// List record metadata.
    List {
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Only this subject (UUID or customer reference).
        #[arg(long)]
        subject: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SubjectCmd {
    /// Print the subject ID a customer reference maps to.
    Id {
        /// Customer reference or UUID.
        reference: String,
    },
    /// Export every record of one data subject (an access request),
    /// encrypted with age to a recipient's key or a passphrase (officer).
    Export {
        /// Customer reference or UUID.
        reference: String,
        #[command(flatten)]
        opts: export::ExportOpts,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Show audit events.
    Log {
        /// Only events by this username.
        #[arg(long = "actor")]
        actor: Option<String>,
        /// From this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Until this time (exclusive).
        #[arg(long)]
        until: Option<String>,
        /// Only actions starting with this prefix (e.g. "auth.").
        #[arg(long)]
        action: Option<String>,
        /// At most this many events (the latest).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Verify the hash chain and signed checkpoints; names the first bad
    /// sequence number. With --file: an exported file, offline, with the
    /// vault's audit public key only (no vault, no login).
    Verify {
        /// An `audit export` file (jsonl, syslog or cef).
        #[arg(long, requires = "key")]
        file: Option<PathBuf>,
        /// The vault's audit public key (audit.pem from `keys export`, or hex).
        #[arg(long, requires = "file")]
        key: Option<PathBuf>,
    },
    /// Export the audit trail for a log system, keeping each event's seq
    /// and chain hashes: from the signed checkpoint before --since (or
    /// --from-seq; default the whole trail) to a checkpoint signed now.
    /// `audit verify --file` checks the file offline.
    Export {
        /// From the first event at or after this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// From this seq.
        #[arg(long)]
        from_seq: Option<u64>,
        /// jsonl (schemas/audit-event.json per line), syslog (RFC 5424) or cef.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// The state of the server's syslog stream of the audit trail.
    Stream,
    /// Sign the current head and export it for an outside witness: the head
    /// (JSON) and an RFC 3161 time-stamp request over its SHA-256 (DER, the
    /// same name with `.tsq`); or, with --response, store the TSA's answer.
    Anchor {
        /// Where to write the head (default `audit-head-<seq>.json`); the
        /// request goes next to it with the extension `.tsq`.
        #[arg(long, conflicts_with = "response")]
        out: Option<PathBuf>,
        /// A time-stamp response (`.tsr`, DER) for a head exported before:
        /// checked and stored in the vault, re-checked by `audit verify`.
        #[arg(long)]
        response: Option<PathBuf>,
    },
    /// Per-user activity report (reads, reveals, exports, denials, lock-outs).
    Report {
        /// From this time (RFC 3339 or YYYY-MM-DD); default 30 days ago.
        #[arg(long)]
        since: Option<String>,
        /// Until this time (exclusive); default now.
        #[arg(long)]
        until: Option<String>,
    },
}

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            // `--help` and `--version` go to stdout; a failed write of
            // them is an output failure like any other.
            let printed = e.print();
            if code == exit::OK
                && let Err(err) = printed
                && err.kind() != std::io::ErrorKind::BrokenPipe
            {
                output::stderr_line(&format!(
                    "pivault: the output could not be written to stdout ({err})"
                ));
                return ExitCode::from(exit::OUTPUT_FAILED);
            }
            return ExitCode::from(code);
        }
    };
    let out = Out::new(cli.json);
    if let Err(e) = apply_profile(&mut cli) {
        let (code, kind) = exit::classify(&e);
        out.error(&kind, &e);
        return ExitCode::from(code);
    }
    match run(&cli, &out) {
        Ok(code) => ExitCode::from(finish(&out, code)),
        Err(e) => {
            if output::is_broken_pipe(&e) {
                return ExitCode::from(exit::OK);
            }
            let (code, kind) = exit::classify(&e);
            out.error(&kind, &e);
            ExitCode::from(code)
        }
    }
}

/// Fills in the server, socket, user and CA certificate that neither a
/// flag nor a variable gave, from the profile. Staff commands only: the
/// custodian's (a passphrase file, or init, doctor, backup, passphrase)
/// open the vault directory and must never be redirected to a server.
fn apply_profile(cli: &mut Cli) -> anyhow::Result<()> {
    let custodian = cli.passphrase_file.is_some()
        || matches!(
            cli.command,
            Command::Init(_)
                | Command::Vault(_)
                | Command::Doctor
                | Command::Backup(_)
                | Command::Passphrase(_)
                | Command::Completions { .. }
                | Command::Profile(_)
        );
    let creating = matches!(cli.command, Command::Login);
    if !custodian && let Some((_, p)) = profile::load(cli.profile.as_deref(), creating)? {
        // A flag for the server or the socket chooses the endpoint; the
        // profile's endpoint fills in only when neither was given.
        if cli.server.is_none() && cli.socket.is_none() {
            cli.server = p.server;
            cli.socket = p.socket;
        }
        if cli.user.is_none() && cli.service_token_file.is_none() {
            cli.user = p.user;
        }
        if cli.ca_cert.is_none() {
            cli.ca_cert = p.ca_cert;
        }
    }
    if cli.socket.is_none() {
        cli.socket = Some(PathBuf::from(vault_core::DEFAULT_SOCKET));
    }
    Ok(())
}

/// `pivault profile …`: the file only, no vault and no server.
fn cmd_profile(out: &Out, c: &ProfileCmd) -> anyhow::Result<u8> {
    match c {
        ProfileCmd::List => {
            let (list, current) = profile::list()?;
            let v: Vec<Value> = list
                .iter()
                .map(|(name, p)| {
                    json!({
                        "name": name, "current": *name == current, "server": p.server,
                        "socket": p.socket.as_ref().map(|s| s.display().to_string()),
                        "user": p.user,
                        "ca_cert": p.ca_cert.as_ref().map(|s| s.display().to_string()),
                    })
                })
                .collect();
            let v = Value::Array(v);
            out.data("profile-list", v.clone(), || output::profiles_text(&v));
        }
        ProfileCmd::Use { name } => {
            let path = profile::use_profile(name)?;
            out.data(
                "profile-change",
                json!({ "current": name, "config_file": path.display().to_string() }),
                || format!("profile {name} is now current"),
            );
        }
        ProfileCmd::Remove { name } => {
            let path = profile::remove(name)?;
            out.data(
                "profile-change",
                json!({ "removed": name, "config_file": path.display().to_string() }),
                || format!("profile {name} forgotten"),
            );
        }
    }
    Ok(exit::OK)
}

/// The exit code of a command that ran to its end: if its result could not
/// be written to stdout, stderr names what it did and the exit code is 16
/// (unless the command already reports a finding of its own, like 8 for a
/// failed `audit verify`). A closed pipe is not a failure (like ripgrep).
fn finish(out: &Out, code: u8) -> u8 {
    let Some(failure) = out.take_output_failure() else {
        return code;
    };
    if failure.is_broken_pipe() {
        return exit::OK;
    }
    out.output_failed(&failure);
    if code == exit::OK || code == exit::CLOSE_FAILED {
        exit::OUTPUT_FAILED
    } else {
        code
    }
}

/// The exit code once the vault is closed. The command's work is done,
/// audited and printed by then, so a failed close (the signed audit
/// checkpoint) must not look like a failed command that a script would
/// retry: it is a warning and exit 15.
fn after_close(out: &Out, code: u8, closed: vault_core::Result<()>) -> u8 {
    let Err(e) = closed else {
        return code;
    };
    let cause = match &e {
        vault_core::Error::AuditUnavailable(m) => m.clone(),
        other => other.to_string(),
    };
    out.warn(
        "close_failed",
        &format!(
            "the command completed and its output is valid: do not retry it. \
             The vault could not be closed cleanly ({cause}): the newest audit events \
             are not covered by a signed checkpoint until the next clean close \
             (`pivault audit verify` checks the trail)"
        ),
    );
    if code == exit::OK {
        exit::CLOSE_FAILED
    } else {
        code
    }
}

/// Whether a command opens the vault directory itself (the custodian's
/// way, with the passphrase) rather than going through the server's
/// socket (everyone else's). Creating, backing up and checking the vault
/// work on its files, so they are always direct.
fn opens_directly(cli: &Cli, cmd: &Command) -> bool {
    match cmd {
        Command::Init(_) | Command::Vault(_) | Command::Doctor | Command::Backup(_) => true,
        Command::Login | Command::Logout => false,
        // A script's service token is only ever checked by the server.
        _ if cli.service_token_file.is_some() => false,
        _ => cli.passphrase_file.is_some(),
    }
}

fn vault_dir(cli: &Cli) -> anyhow::Result<&Path> {
    cli.vault
        .as_deref()
        .ok_or_else(|| anyhow!("no vault given: use --vault DIR or set PIVAULT_DIR"))
}

/// Reads a secret from a file, or prompts without echo on a terminal.
fn secret(
    file: Option<&Path>,
    prompt: &str,
    what: &str,
    env: &str,
) -> anyhow::Result<SecretString> {
    if let Some(f) = file {
        let s = SecretString::from_private_file(f)
            .with_context(|| format!("cannot use the {what} file {}", f.display()))?;
        if s.expose().is_empty() {
            bail!("the {what} file {} is empty", f.display());
        }
        return Ok(s);
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        return Ok(SecretString::new(rpassword::prompt_password(prompt)?));
    }
    bail!(
        "no {what}: set {env} to a file holding it, or run in a terminal to be prompted (secrets are never taken as flags)"
    )
}

fn new_secret(file: Option<&Path>, what: &str, env: &str) -> anyhow::Result<SecretString> {
    let first = secret(file, &format!("New {what}: "), what, env)?;
    if file.is_none() {
        let again = secret(None, &format!("Repeat the {what}: "), what, env)?;
        if first != again {
            bail!("the two {what}s differ");
        }
    }
    Ok(first)
}

fn open_opts(cli: &Cli) -> OpenOptions {
    OpenOptions {
        sync: cli.sync,
        ..OpenOptions::default()
    }
}

fn open_vault(cli: &Cli) -> anyhow::Result<Vault> {
    let dir = vault_dir(cli)?;
    let pass = secret(
        cli.passphrase_file.as_deref(),
        "Vault passphrase: ",
        "vault passphrase",
        "PIVAULT_PASSPHRASE_FILE",
    )?;
    Ok(Vault::open(dir, &pass, open_opts(cli))?)
}

fn login(cli: &Cli, vault: &Vault) -> anyhow::Result<Session> {
    let user = cli
        .user
        .as_deref()
        .ok_or_else(|| anyhow!("no user given: use --user NAME or set PIVAULT_USER"))?;
    let pw = secret(
        cli.password_file.as_deref(),
        &format!("Password for {user}: "),
        "password",
        "PIVAULT_PASSWORD_FILE",
    )?;
    two_factor::login(vault, user, &pw, cli.code_file.as_deref(), Context::cli())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?
            .read_to_string(&mut text)?;
    }
    // serde_json errors carry positions only, never the input text.
    serde_json::from_str(&text).map_err(|e| {
        anyhow!(vault_core::Error::InvalidInput(format!(
            "malformed JSON at line {} column {}",
            e.line(),
            e.column()
        )))
    })
}

/// The merge patch of `record update`: the `--data` file's fields, then
/// each `--set FIELD=-` (read from stdin, one value per line, or a no-echo
/// prompt on a terminal) and each `--unset FIELD` (null).
fn record_patch(data: Option<&Path>, set: &[String], unset: &[String]) -> anyhow::Result<Value> {
    let mut patch = match data {
        Some(f) => read_json(f)?,
        None => json!({}),
    };
    let Some(obj) = patch.as_object_mut() else {
        bail!(vault_core::Error::InvalidInput(
            "the --data file must hold a JSON object of fields".into()
        ));
    };
    let terminal = std::io::stdin().is_terminal();
    let mut stdin = std::io::stdin().lock();
    for item in set {
        let Some((field, source)) = item.split_once('=') else {
            bail!(vault_core::Error::InvalidInput(
                "--set takes FIELD=- (the value then comes from stdin or a prompt)".into()
            ));
        };
        if source != "-" {
            bail!(vault_core::Error::InvalidInput(format!(
                "--set {field}=…: values are never given as flags (the process list and shell \
                 history keep them); use --set {field}=- and give the value on stdin or at the prompt"
            )));
        }
        if data == Some(Path::new("-")) {
            bail!("--data - and --set FIELD=- both want stdin: use a file for --data");
        }
        let value = if terminal {
            SecretString::new(rpassword::prompt_password(format!("{field}: "))?)
        } else {
            let mut line = zeroize::Zeroizing::new(String::new());
            if stdin.read_line(&mut line)? == 0 {
                bail!(vault_core::Error::InvalidInput(format!(
                    "no value for {field} on stdin (one line per --set FIELD=-)"
                )));
            }
            SecretString::new(line.trim_end_matches(['\n', '\r']).to_owned())
        };
        obj.insert(field.to_owned(), Value::String(value.expose().to_owned()));
    }
    for field in unset {
        obj.insert(field.clone(), Value::Null);
    }
    if obj.is_empty() {
        bail!(vault_core::Error::InvalidInput(
            "nothing to change: give --set FIELD=-, --unset FIELD or --data FILE".into()
        ));
    }
    Ok(patch)
}

/// What `record find` looks for: (`type` or `field` for the request, the
/// label for the prompt, the value read from stdin or a no-echo prompt).
pub(crate) struct FindArgs {
    pub ty: Option<&'static str>,
    pub field: Option<String>,
    pub value: SecretString,
    pub prefix: bool,
}

#[allow(clippy::too_many_arguments)] // one per search flag
pub(crate) fn find_args(
    ssn: &Option<String>,
    licence: &Option<String>,
    state_id: &Option<String>,
    email: &Option<String>,
    phone: &Option<String>,
    name: &Option<String>,
    field: &Option<String>,
    prefix: bool,
) -> anyhow::Result<FindArgs> {
    let flags = [
        ("ssn", ssn),
        ("drivers_license", licence),
        ("state_id", state_id),
        ("email", email),
        ("phone", phone),
        ("given_name", name),
    ];
    let mut given: Vec<(Option<&'static str>, Option<String>, &str)> = flags
        .iter()
        .filter_map(|(ty, v)| v.as_deref().map(|v| (Some(*ty), None, v)))
        .collect();
    if let Some(f) = field {
        let Some((f, source)) = f.split_once('=') else {
            bail!(vault_core::Error::InvalidInput(
                "--field takes FIELD=- (the value then comes from stdin or a prompt)".into()
            ));
        };
        given.push((None, Some(f.to_owned()), source));
    }
    let [(ty, field, source)] = given.as_slice() else {
        bail!(vault_core::Error::InvalidInput(
            "give one of --ssn, --licence, --state-id, --email, --phone, --name, --field".into()
        ));
    };
    if *source != "-" {
        bail!(vault_core::Error::InvalidInput(
            "search values are never given as flags (the process list and shell history keep \
             them): give '-' and the value on stdin or at the prompt"
                .into()
        ));
    }
    let label = field.clone().unwrap_or_else(|| match *ty {
        Some("given_name") => "name".into(),
        Some(t) => t.into(),
        None => String::new(),
    });
    let value = if std::io::stdin().is_terminal() {
        SecretString::new(rpassword::prompt_password(format!("{label}: "))?)
    } else {
        let mut line = zeroize::Zeroizing::new(String::new());
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            bail!(vault_core::Error::InvalidInput(format!(
                "no value for {label} on stdin"
            )));
        }
        SecretString::new(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    Ok(FindArgs {
        ty: *ty,
        field: field.clone(),
        value,
        prefix,
    })
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    Ok(vault_core::clock::parse_time(s)?)
}

fn run(cli: &Cli, out: &Out) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "pivault", &mut script);
            out.raw(&script);
            Ok(exit::OK)
        }
        Command::Init(a) => cmd_init(cli, out, a, None),
        Command::Vault(c) => hosting::cmd_vault(cli, out, c),
        Command::Profile(c) => cmd_profile(out, c),
        Command::Doctor => cmd_doctor(cli, out),
        Command::Certificate(CertificateCmd::Verify {
            file,
            key,
            record,
            proof,
        }) => dispose::cmd_verify(out, file, key, record.as_deref().zip(proof.as_deref())),
        Command::Audit(AuditCmd::Verify {
            file: Some(file),
            key: Some(key),
        }) => siem::verify_file(out, file, key),
        Command::Certificate(CertificateCmd::Payload {
            file,
            out: o,
            sig_out,
        }) => dispose::cmd_payload(out, file, o, sig_out),
        Command::Certificate(CertificateCmd::SignPayload {
            file,
            key_file,
            out: o,
        }) => dispose::cmd_sign_payload(out, file, key_file, o.as_deref()),
        Command::Certificate(CertificateCmd::Render {
            cert,
            out: o,
            pdf,
            key,
        }) if Path::new(cert).exists() => {
            dispose::cmd_render_file(out, Path::new(cert), o.as_deref(), *pdf, key.as_deref())
        }
        Command::Contractor(ContractorCmd::Keygen { out: o }) => dispose::cmd_keygen(out, o),
        // The custodian's own commands open the vault directory with the
        // passphrase, whatever the server settings (they refuse --server).
        Command::Passphrase(PassphraseCmd::Change {
            new_passphrase_file,
        }) => cmd_passphrase_change(cli, out, new_passphrase_file.as_deref()),
        Command::User(UserCmd::Unlock {
            name,
            break_glass: true,
        }) => cmd_break_glass(cli, out, name),
        _ if cli.server.is_some() => remote::run(
            cli,
            out,
            &remote::Endpoint::Url(cli.server.clone().expect("checked")),
        ),
        cmd if !opens_directly(cli, cmd) => {
            let socket = cli
                .socket
                .clone()
                .unwrap_or_else(|| vault_core::DEFAULT_SOCKET.into());
            remote::run(cli, out, &remote::Endpoint::Socket(socket))
        }
        cmd => {
            let vault = open_vault(cli)?;
            if let Command::Subject(SubjectCmd::Id { reference }) = cmd {
                let id = vault.resolve_subject(reference)?;
                out.data("subject", json!({ "subject": id.to_string() }), || {
                    format!("{id}")
                });
                return Ok(exit::OK);
            }
            let session = login(cli, &vault)?;
            let code = match cmd {
                Command::Subject(SubjectCmd::Export { reference, opts }) => {
                    let sid = vault.resolve_subject(reference)?;
                    export::run_local(out, &vault, &session, ExportScope::Subject(sid), opts)?
                }
                Command::Collection(CollectionCmd::Export { name, opts }) => export::run_local(
                    out,
                    &vault,
                    &session,
                    ExportScope::Collection(CollectionName::parse(name)?),
                    opts,
                )?,
                Command::User(c) => cmd_user(cli, out, &vault, &session, c)?,
                Command::Collection(c) => cmd_collection(out, &vault, &session, c)?,
                Command::Record(c) => cmd_record(out, &vault, &session, c)?,
                Command::Audit(c) => cmd_audit(out, &vault, &session, c)?,
                Command::Dispose(c) => dispose::cmd_dispose(out, &vault, &session, c)?,
                Command::Disposal(c) => dispose::cmd_disposal(out, &vault, &session, c)?,
                Command::Certificate(c) => dispose::cmd_certificate(out, &vault, &session, c)?,
                Command::Keys(KeysCmd::Export { out: dir }) => {
                    dispose::cmd_keys_export(out, &vault, dir)?
                }
                Command::Retention(c) => dispose::cmd_retention(out, &vault, &session, c)?,
                Command::Hold(c) => dispose::cmd_hold(out, &vault, &session, c)?,
                Command::Contractor(c) => dispose::cmd_contractor(out, &vault, &session, c)?,
                Command::Service(c) => service::cmd_local(out, &vault, &session, c)?,
                Command::TwoFactor(c) => {
                    two_factor::cmd_local(out, &vault, &session, cli.code_file.as_deref(), c)?
                }
                Command::Backup(c) => backup::cmd_backup(out, &vault, &session, c)?,
                Command::Maintenance(MaintenanceCmd::Run) => {
                    let r = vault.run_maintenance(&session)?;
                    let v = vault_core::views::maintenance(&r);
                    let text = output::maintenance_text(&v);
                    out.data("maintenance-report", v, || text);
                    if r.epochs.is_some() && !r.verified {
                        exit::DISPOSAL_FAILED
                    } else {
                        exit::OK
                    }
                }
                Command::Whoami => {
                    let v = vault_core::views::user(&vault.whoami(&session)?);
                    out.data("user", v.clone(), || output::whoami_text(&v));
                    exit::OK
                }
                Command::Incident(c) => incident::cmd_incident(out, &vault, &session, c)?,
                Command::Wisp(a) => incident::cmd_wisp(out, &vault, &session, a)?,
                Command::Review => {
                    vault.record_security_review(&session)?;
                    out.data("review", json!({ "reviewed": true }), || {
                        "security review recorded".into()
                    });
                    exit::OK
                }
                Command::Init(_)
                | Command::Vault(_)
                | Command::Passphrase(_)
                | Command::Doctor
                | Command::Completions { .. }
                | Command::Login
                | Command::Logout
                | Command::Profile(_)
                | Command::Subject(_) => unreachable!(),
            };
            Ok(after_close(out, code, vault.close()))
        }
    }
}

/// The OS user running this command, for the custodian's audit events:
/// the owner of `/proc/self` (the process's effective uid), read without
/// `unsafe`; `None` where there is no `/proc`.
fn os_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Custodian commands open the vault directory with the passphrase; a
/// server never offers them.
fn custodian_only(cli: &Cli, what: &str) -> anyhow::Result<()> {
    if cli.server.is_some() {
        bail!(
            "{what} is the custodian's: it opens the vault directory with the passphrase (--vault and PIVAULT_PASSPHRASE_FILE), not through --server"
        );
    }
    Ok(())
}

fn cmd_passphrase_change(cli: &Cli, out: &Out, new_file: Option<&Path>) -> anyhow::Result<u8> {
    custodian_only(cli, "passphrase change")?;
    let dir = vault_dir(cli)?;
    let current = secret(
        cli.passphrase_file.as_deref(),
        "Current vault passphrase: ",
        "vault passphrase",
        "PIVAULT_PASSPHRASE_FILE",
    )?;
    // Open first: a wrong current passphrase fails before the new one is asked for.
    let vault = Vault::open(dir, &current, open_opts(cli))?;
    let new = new_secret(new_file, "vault passphrase", "PIVAULT_NEW_PASSPHRASE_FILE")?;
    let ctx = vault_core::vault::custodian_context(os_uid());
    let r = vault.change_passphrase(&current, &new, &ctx)?;
    drop((current, new));
    out.data("passphrase-change", 
        json!({
            "passphrase_changed": true,
            "epoch_before": r.epochs.0,
            "epoch_after": r.epochs.1,
            "buckets_rotated": r.buckets_rotated,
            "keys_rewrapped": r.keys_rewrapped,
            "verified": r.verified,
        }),
        || {
            format!(
                "vault passphrase changed: keys re-wrapped, {} bucket keys replaced ({} data keys re-wrapped), epoch {} -> {}{}.\nThe old passphrase opens nothing from now on: update the passphrase file of pivault-server and of every custodian script.",
                r.buckets_rotated,
                r.keys_rewrapped,
                r.epochs.0,
                r.epochs.1,
                if r.verified { "" } else { "; WARNING: the keystore purge checks did not pass (run `pivault doctor`)" }
            )
        },
    );
    let code = if r.verified {
        exit::OK
    } else {
        exit::DISPOSAL_FAILED
    };
    Ok(after_close(out, code, vault.close()))
}

fn cmd_break_glass(cli: &Cli, out: &Out, name: &str) -> anyhow::Result<u8> {
    custodian_only(cli, "break-glass unlock")?;
    let vault = open_vault(cli)?;
    let ctx = vault_core::vault::custodian_context(os_uid());
    let id = vault.break_glass_unlock(name, &ctx)?;
    out.data(
        "user-change",
        json!({ "user_id": id.to_string(), "locked": false, "break_glass": true }),
        || format!("unlocked {name} (break-glass by the custodian, audited)"),
    );
    Ok(after_close(out, exit::OK, vault.close()))
}

/// `init`, and `vault create` (with the provider's cluster file).
pub(crate) fn cmd_init(
    cli: &Cli,
    out: &Out,
    a: &InitArgs,
    provider: Option<&vault_core::keystore::postgres::PgConfig>,
) -> anyhow::Result<u8> {
    let dir = vault_dir(cli)?;
    let admin = Username::parse(&a.admin)?;
    let pass = new_secret(
        cli.passphrase_file.as_deref(),
        "vault passphrase",
        "PIVAULT_PASSPHRASE_FILE",
    )?;
    let pw = new_secret(
        cli.password_file.as_deref(),
        "admin password",
        "PIVAULT_PASSWORD_FILE",
    )?;
    let kdf = if a.insecure_fast_kdf {
        KdfParams::INSECURE_FAST
    } else {
        KdfParams::VAULT_DEFAULT
    };
    let two_factor = vault_core::access::TwoFactorPolicy::parse(&a.two_factor)?;
    let keystore = match &a.keystore_cluster {
        Some(f) => Some(hosting::read_cluster_file(f)?),
        None => None,
    };
    let records = match &a.records_cluster {
        Some(f) => Some(hosting::read_cluster_file(f)?),
        None => None,
    };
    let init = InitOptions {
        kdf,
        buckets: a.buckets,
        admin: admin.clone(),
        admin_password: pw,
        two_factor: two_factor.clone(),
    };
    let vault = match provider {
        Some(p) => Vault::create_hosted(dir, &pass, init, open_opts(cli), p, records.as_ref())?,
        None => Vault::create_on_clusters(dir, &pass, init, open_opts(cli), keystore, records)?,
    };
    let id = vault.id();
    let closed = vault.close();
    out.data("vault-created", 
        json!({ "vault_id": id.to_string(), "dir": dir.display().to_string(), "admin": admin.as_str() }),
        || {
            let enrol = if two_factor.requires(vault_core::access::Role::Admin) {
                format!(
                    "\n  0. enrol {admin}'s second factor (required of admins; the first sign-in may only enrol):\n       pivault --vault {dir} --user {admin} two-factor enrol, then two-factor confirm",
                    dir = dir.display()
                )
            } else {
                String::new()
            };
            format!(
                "created vault {id} in {dir}\n\nNext steps:{enrol}\n  1. add a security officer (records are refused until one exists):\n       pivault --vault {dir} --user {admin} user add NAME --role officer\n  2. add staff:    pivault --vault {dir} --user {admin} user add NAME --role clerk\n  3. define what you store:\n       pivault --vault {dir} --user {admin} collection create customers --schema schema.json\n  4. check the set-up:  pivault --vault {dir} doctor",
                dir = dir.display()
            )
        },
    );
    Ok(after_close(out, exit::OK, closed))
}

fn cmd_user(cli: &Cli, out: &Out, vault: &Vault, s: &Session, c: &UserCmd) -> anyhow::Result<u8> {
    match c {
        UserCmd::Add {
            name,
            role,
            reveal,
            full_name,
            new_password_file,
        } => {
            let role = Role::parse(role)?;
            let pw = new_secret(
                new_password_file.as_deref(),
                &format!("password for {name}"),
                "PIVAULT_NEW_PASSWORD_FILE",
            )?;
            let id = vault.add_person(s, name, &pw, role, *reveal, full_name.as_deref())?;
            out.data(
                "user-added",
                json!({ "user_id": id.to_string(), "username": name, "role": role.as_str() }),
                || format!("added {role} {name} ({id})"),
            );
        }
        UserCmd::List => {
            let users = vault.list_users(s)?;
            let v = Value::Array(users.iter().map(vault_core::views::user).collect());
            out.data("user-list", v.clone(), || output::users_table(&v));
        }
        UserCmd::Disable { name } => {
            let id = vault.disable_user(s, name)?;
            out.data(
                "user-change",
                json!({ "user_id": id.to_string(), "state": "disabled" }),
                || format!("disabled {name}; their sessions and tokens are revoked"),
            );
        }
        UserCmd::Enable { name } => {
            let id = vault.enable_user(s, name)?;
            out.data(
                "user-change",
                json!({ "user_id": id.to_string(), "state": "active" }),
                || format!("enabled {name}"),
            );
        }
        UserCmd::Reveal { name, grant, .. } => {
            let id = vault.set_reveal_grant(s, name, *grant)?;
            out.data(
                "user-change",
                json!({ "user_id": id.to_string(), "reveal": *grant }),
                || format!("{name} may no longer reveal sensitive fields"),
            );
        }
        UserCmd::ResetTwoFactor { name } => {
            let id = vault.reset_two_factor(s, name)?;
            out.data(
                "user-change",
                json!({ "user_id": id.to_string(), "two_factor": "none" }),
                || {
                    format!(
                        "removed {name}'s second factor; they enrol again at their next sign-in"
                    )
                },
            );
        }
        UserCmd::Unlock { name, .. } => {
            let id = vault.unlock_user(s, name)?;
            out.data(
                "user-change",
                json!({ "user_id": id.to_string(), "locked": false }),
                || format!("unlocked {name}"),
            );
        }
        UserCmd::Name {
            name, full_name, ..
        } => {
            let id = vault.set_full_name(s, name, full_name.as_deref())?;
            out.data(
                "user-change",
                json!({ "user_id": id.to_string(), "full_name": full_name.as_deref().map(str::trim) }),
                || match full_name {
                    Some(n) => format!("{name}'s full name is now {}", n.trim()),
                    None => format!("{name} has no full name: certificates print the username"),
                },
            );
        }
        UserCmd::Role { name, role } => {
            let role = Role::parse(role)?;
            let id = vault.set_role(s, name, role)?;
            out.data(
                "user-change",
                json!({ "user_id": id.to_string(), "role": role.as_str() }),
                || format!("{name} is now {role}"),
            );
        }
        UserCmd::Passwd {
            name,
            new_password_file,
        } => {
            let name = name
                .clone()
                .or_else(|| cli.user.clone())
                .unwrap_or_default();
            let pw = new_secret(
                new_password_file.as_deref(),
                "password",
                "PIVAULT_NEW_PASSWORD_FILE",
            )?;
            if Some(&name) == cli.user.as_ref() {
                let current = secret(
                    cli.password_file.as_deref(),
                    "Current password: ",
                    "current password",
                    "PIVAULT_PASSWORD_FILE",
                )?;
                vault.change_own_password(s, &current, &pw)?;
            } else {
                vault.set_password(s, &name, &pw)?;
            }
            out.data(
                "password-change",
                json!({ "username": name, "password_changed": true }),
                || format!("password of {name} changed"),
            );
        }
        UserCmd::Requests => {
            let reqs = vault.pending_requests(s)?;
            let v = Value::Array(reqs.iter().map(vault_core::views::pending).collect());
            out.data("request-list", v, || {
                reqs.iter()
                    .map(|r| {
                        format!(
                            "{}  {}  {} {}{}  by {}  expires {}",
                            r.id,
                            r.kind.as_str(),
                            r.username.as_str(),
                            r.role,
                            if r.reveal { " +reveal" } else { "" },
                            r.requester,
                            vault_core::clock::format_ms(r.expires_ms)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        UserCmd::Approve { id } => {
            vault.approve_request(s, id)?;
            out.data(
                "request-decision",
                json!({ "request": id, "approved": true }),
                || format!("approved and applied {id}"),
            );
        }
        UserCmd::Reject { id } => {
            vault.reject_request(s, id)?;
            out.data(
                "request-decision",
                json!({ "request": id, "rejected": true }),
                || format!("rejected {id}"),
            );
        }
    }
    Ok(exit::OK)
}

fn cmd_collection(out: &Out, vault: &Vault, s: &Session, c: &CollectionCmd) -> anyhow::Result<u8> {
    match c {
        CollectionCmd::Update { name, schema } => {
            let text = std::fs::read_to_string(schema)
                .with_context(|| format!("cannot read {}", schema.display()))?;
            let parsed = Schema::from_json(&text)?;
            vault.update_collection(s, name, &parsed)?;
            out.data("collection-change", 
                json!({ "collection": name, "fields": parsed.fields.len(), "retired": parsed.retired }),
                || format!("updated collection {name}: {} fields, {} retired", parsed.fields.len(), parsed.retired.len()),
            );
        }
        CollectionCmd::Create { name, schema } => {
            let text = std::fs::read_to_string(schema)
                .with_context(|| format!("cannot read {}", schema.display()))?;
            let parsed = Schema::from_json(&text)?;
            let name = vault.create_collection(s, name, &parsed)?;
            out.data(
                "collection-change",
                json!({ "collection": name.as_str(), "fields": parsed.fields.len() }),
                || {
                    format!(
                        "created collection {name} with {} fields",
                        parsed.fields.len()
                    )
                },
            );
        }
        CollectionCmd::List => {
            let cs = vault.collections(s)?;
            let v = Value::Array(
                cs.iter()
                    .map(|(n, sc)| json!({ "collection": n.as_str(), "purpose": sc.purpose, "fields": sc.fields.len() }))
                    .collect(),
            );
            out.data("collection-list", v.clone(), || {
                output::collections_text(&v)
            });
        }
        CollectionCmd::Export { .. } => unreachable!("run with the vault open (export::run_local)"),
        CollectionCmd::Reindex { name } => {
            let n = vault.reindex_collection(s, name)?;
            out.data(
                "collection-reindex",
                vault_core::views::collection_reindex(name, n),
                || format!("reindexed {n} records of {name}"),
            );
        }
        CollectionCmd::Show { name } => {
            let cs = vault.collections(s)?;
            let (_, sc) = cs
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .ok_or(vault_core::Error::NotFound("collection"))?;
            let v: Value = serde_json::from_str(&sc.to_json())?;
            out.data("collection-schema", v.clone(), || {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            });
        }
    }
    Ok(exit::OK)
}

fn cmd_record(out: &Out, vault: &Vault, s: &Session, c: &RecordCmd) -> anyhow::Result<u8> {
    match c {
        RecordCmd::Put {
            collection,
            subject,
            data,
        } => {
            let body = read_json(data)?;
            let subject = match subject {
                Some(t) => vault.resolve_subject(t)?,
                None => vault_core::ids::SubjectId::new(),
            };
            let id = vault.put_record(s, collection, subject, &body)?;
            out.data(
                "record-stored",
                json!({ "record_id": id.to_string(), "subject": subject.to_string() }),
                || id.to_string(),
            );
        }
        RecordCmd::Import {
            collection,
            file,
            format,
            subject_column,
            skip_lines,
            map,
            map_file,
            check,
        } => {
            let input = ImportSource {
                file,
                format: import_format(file, *format),
                skip_lines: *skip_lines,
            };
            let (columns, _) = import_columns(map, map_file.as_deref())?;
            return cmd_import(
                out,
                vault,
                s,
                collection,
                &input,
                subject_column,
                &columns,
                *check,
            );
        }
        RecordCmd::Get { id, reveal, reason } => {
            let id: RecordId = id.parse()?;
            let fields: Vec<&str> = reveal.iter().map(String::as_str).collect();
            let view = vault.get_record(s, id, &fields, reason.as_deref())?;
            let v = vault_core::views::record(&view);
            out.data("record", v.clone(), || output::record_text(&v));
        }
        RecordCmd::Update {
            id,
            data,
            set,
            unset,
        } => {
            let id: RecordId = id.parse()?;
            let patch = record_patch(data.as_deref(), set, unset)?;
            let version = vault.patch_record(s, id, &patch)?;
            out.data(
                "record-version",
                json!({ "record_id": id.to_string(), "record_version": version }),
                || format!("updated {id} to version {version}"),
            );
        }
        RecordCmd::Replace { id, data } => {
            let id: RecordId = id.parse()?;
            let body = read_json(data)?;
            let version = vault.update_record(s, id, &body)?;
            out.data(
                "record-version",
                json!({ "record_id": id.to_string(), "record_version": version }),
                || format!("replaced {id}: version {version}"),
            );
        }
        RecordCmd::Find {
            collection,
            ssn,
            licence,
            state_id,
            email,
            phone,
            name,
            field,
            prefix,
        } => {
            let a = find_args(ssn, licence, state_id, email, phone, name, field, *prefix)?;
            let q = vault_core::vault::FindQuery {
                collection: collection.clone(),
                target: match (&a.ty, &a.field) {
                    (Some(t), _) => vault_core::vault::FindTarget::Type(
                        vault_core::schema::FieldType::parse(t)?,
                    ),
                    (None, f) => {
                        vault_core::vault::FindTarget::Field(f.clone().unwrap_or_default())
                    }
                },
                value: a.value,
                mode: if a.prefix {
                    vault_core::beacon::Match::Prefix
                } else {
                    vault_core::beacon::Match::Exact
                },
            };
            let r = vault.find_records(s, &q)?;
            let v = vault_core::views::record_find(collection, &r);
            out.data("record-find", v.clone(), || output::find_text(&v));
        }
        RecordCmd::History { id } => {
            let id: RecordId = id.parse()?;
            let h = vault.record_history(s, id)?;
            let v = vault_core::views::record_history(id, &h);
            out.data("record-history", v.clone(), || output::history_text(&v));
        }
        RecordCmd::List {
            collection,
            subject,
        } => {
            let filter = RecordFilter {
                collection: collection
                    .as_deref()
                    .map(vault_core::ids::CollectionName::parse)
                    .transpose()?,
                subject: subject
                    .as_deref()
                    .map(|t| vault.resolve_subject(t))
                    .transpose()?,
            };
            let metas = vault.list_records(s, &filter)?;
            let v = Value::Array(metas.iter().map(vault_core::views::meta).collect());
            out.data("record-list", v.clone(), || output::metas_table(&v));
        }
    }
    Ok(exit::OK)
}

/// The format of an import file: as given, else from its extension.
fn import_format(file: &Path, format: Option<FormatArg>) -> ImportFormat {
    match format {
        Some(FormatArg::Csv) => ImportFormat::Csv,
        Some(FormatArg::Jsonl) => ImportFormat::JsonLines,
        None if file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            ImportFormat::Csv
        }
        None => ImportFormat::JsonLines,
    }
}

/// An import file and where in it to start.
pub(crate) struct ImportSource<'a> {
    pub file: &'a Path,
    pub format: ImportFormat,
    /// `--skip-lines`: rows on lines up to this one are left out.
    pub skip_lines: u64,
}

/// An import file opened after its skipped lines.
pub(crate) struct ImportInput {
    pub reader: Box<dyn BufRead>,
    /// Bytes the importer will read (for the progress bar).
    pub len: u64,
    /// Added to the importer's line numbers to give the file's: it counts
    /// from the first line it is given.
    pub line_offset: u64,
}

impl ImportSource<'_> {
    /// Opens the file positioned after `skip_lines` lines, numbered as the
    /// importer numbers them: every line of JSON Lines; for CSV the header
    /// is line 1 (always kept, so the columns are known) and each record
    /// one line, even one with a quoted line break. Skipped bytes are never
    /// copied (they hold personal information).
    pub(crate) fn open(&self) -> anyhow::Result<ImportInput> {
        let open = || {
            File::open(self.file).with_context(|| format!("cannot open {}", self.file.display()))
        };
        let f = open()?;
        let len = f.metadata()?.len();
        match self.format {
            ImportFormat::JsonLines => {
                let mut reader = BufReader::with_capacity(1 << 16, f);
                let skipped = skip_lines(&mut reader, self.skip_lines)?;
                Ok(ImportInput {
                    reader: Box::new(reader),
                    len: len.saturating_sub(skipped),
                    line_offset: self.skip_lines,
                })
            }
            ImportFormat::Csv if self.skip_lines <= 1 => Ok(ImportInput {
                reader: Box::new(BufReader::with_capacity(1 << 16, f)),
                len,
                line_offset: 0,
            }),
            ImportFormat::Csv => {
                // Same record boundaries as the importer's CSV reader; flexible,
                // so a short row is skipped like any other.
                let mut csv = csv::ReaderBuilder::new()
                    .flexible(true)
                    .from_reader(BufReader::with_capacity(1 << 16, f));
                csv.byte_headers().map_err(|_| {
                    vault_core::Error::InvalidInput("CSV header row is unreadable".into())
                })?;
                let header_end = csv.position().byte();
                let mut record = csv::ByteRecord::new();
                let mut line = 1;
                while line < self.skip_lines
                    && csv
                        .read_byte_record(&mut record)
                        .context("cannot read the CSV file")?
                {
                    line += 1;
                }
                let resume_at = csv.position().byte();
                drop(record);
                drop(csv);
                let mut header = Vec::new();
                open()?
                    .take(header_end)
                    .read_to_end(&mut header)
                    .context("cannot read the CSV header")?;
                let mut rest = open()?;
                rest.seek(SeekFrom::Start(resume_at))?;
                Ok(ImportInput {
                    reader: Box::new(BufReader::with_capacity(
                        1 << 16,
                        std::io::Cursor::new(header).chain(rest),
                    )),
                    len: header_end + len.saturating_sub(resume_at),
                    line_offset: self.skip_lines - 1,
                })
            }
        }
    }
}

/// Skips `n` lines without copying them; returns the bytes skipped.
fn skip_lines(r: &mut impl BufRead, n: u64) -> std::io::Result<u64> {
    let (mut left, mut bytes) = (n, 0u64);
    while left > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let used = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                left -= 1;
                i + 1
            }
            None => buf.len(),
        };
        r.consume(used);
        bytes += used as u64;
    }
    Ok(bytes)
}

/// Shifts the line numbers of an import's errors by `offset` (the lines
/// skipped with `--skip-lines`), so they name lines of the file.
pub(crate) fn shift_lines(report: &mut vault_core::vault::ImportReport, offset: u64) {
    for r in &mut report.rejected {
        r.line += offset;
    }
}

/// An import that stored rows and then failed (`import_incomplete`): how
/// many rows are in, up to which line of the file, and the `--skip-lines`
/// that imports the rest without duplicates.
pub(crate) fn import_incomplete(e: vault_core::Error, line_offset: u64) -> anyhow::Error {
    let vault_core::Error::ImportIncomplete {
        stored,
        last_line,
        cause,
        ..
    } = &e
    else {
        return e.into();
    };
    let line = last_line + line_offset;
    let mut fields = serde_json::Map::new();
    fields.insert("stored".into(), json!(stored));
    fields.insert("last_line".into(), json!(line));
    fields.insert("skip_lines".into(), json!(line));
    let message = format!("imported {stored} records up to line {line}, then failed: {cause}");
    anyhow::Error::from(e).context(output::Hint {
        message: Some(message),
        advice: format!(
            "re-run with --skip-lines {line} (or import only the rest of the file) to resume without duplicates"
        ),
        fields,
    })
}

/// `--map` and `--map-file` as one mapping, and as the one-line form the
/// server takes (`map=` query parameter).
pub(crate) fn import_columns(
    map: &[String],
    map_file: Option<&Path>,
) -> anyhow::Result<(vault_core::vault::ImportColumns, String)> {
    let mut spec: Vec<String> = Vec::new();
    if let Some(f) = map_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the mapping file {}", f.display()))?;
        spec.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    spec.extend(map.iter().cloned());
    let joined = spec.join(",");
    Ok((vault_core::vault::ImportColumns::parse(&joined)?, joined))
}

#[allow(clippy::too_many_arguments)]
fn cmd_import(
    out: &Out,
    vault: &Vault,
    s: &Session,
    collection: &str,
    source: &ImportSource<'_>,
    subject_column: &str,
    columns: &vault_core::vault::ImportColumns,
    check_only: bool,
) -> anyhow::Result<u8> {
    // Pass 1 checks every row and stores nothing; pass 2 stores. Both stream,
    // and both start after the skipped lines.
    let input = source.open()?;
    let bar = out.progress(input.len, "checking");
    let check = vault.import_mapped(
        s,
        collection,
        input.reader,
        source.format,
        subject_column,
        columns,
        true,
        &mut |n| bar.set_position(n),
    );
    bar.finish_and_clear();
    let mut check = check?;
    if check.rejected_count > 0 {
        shift_lines(&mut check, input.line_offset);
        let v = vault_core::views::import_refused(&check);
        out.data("import-report", v.clone(), || {
            output::import_refused_text(&v)
        });
        return Ok(exit::INVALID_INPUT);
    }
    if check_only {
        out.data(
            "import-report",
            vault_core::views::import_checked(&check),
            || format!("checked {} rows: all valid; nothing stored", check.valid),
        );
        return Ok(exit::OK);
    }
    let input = source.open()?;
    let bar = out.progress(input.len, "importing");
    let report = vault.import_mapped(
        s,
        collection,
        input.reader,
        source.format,
        subject_column,
        columns,
        false,
        &mut |n| bar.set_position(n),
    );
    bar.finish_and_clear();
    let report = report.map_err(|e| import_incomplete(e, input.line_offset))?;
    out.data(
        "import-report",
        vault_core::views::import_done(&report),
        || format!("imported {} records into {collection}", report.imported),
    );
    Ok(exit::OK)
}

/// Where `audit anchor` writes the head and its time-stamp request.
pub(crate) fn anchor_paths(out: Option<&Path>, seq: u64) -> (PathBuf, PathBuf) {
    let head = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("audit-head-{seq}.json")));
    let tsq = head.with_extension("tsq");
    (head, tsq)
}

fn cmd_audit(out: &Out, vault: &Vault, s: &Session, c: &AuditCmd) -> anyhow::Result<u8> {
    match c {
        AuditCmd::Export {
            since,
            from_seq,
            format,
            out: path,
        } => {
            let start = vault_core::vault::ExportStart {
                since_ms: since.as_deref().map(parse_time).transpose()?,
                from_seq: *from_seq,
            };
            return siem::export_local(out, vault, s, start, format, path);
        }
        AuditCmd::Stream => return siem::stream_local(out),
        AuditCmd::Log {
            actor,
            since,
            until,
            action,
            limit,
        } => {
            let actor = match actor {
                Some(name) => Some(
                    vault
                        .list_users(s)?
                        .into_iter()
                        .find(|u| u.username.as_str() == name.to_ascii_lowercase())
                        .ok_or(vault_core::Error::NotFound("user"))?
                        .id,
                ),
                None => None,
            };
            let filter = EventFilter {
                actor,
                from_ms: since.as_deref().map(parse_time).transpose()?,
                to_ms: until.as_deref().map(parse_time).transpose()?,
                action_prefix: action.clone(),
                ..EventFilter::default()
            };
            let mut events = vault.audit_events(s, &filter)?;
            if let Some(n) = limit {
                // The latest n events.
                events.drain(..events.len().saturating_sub(*n));
            }
            let v = Value::Array(events.iter().map(vault_core::views::event).collect());
            out.data("audit-log", v.clone(), || output::events_text(&v));
        }
        AuditCmd::Verify { .. } => {
            let r = vault.audit_verify(s)?;
            let v = vault_core::views::verify(&r);
            out.data("audit-verify", v.clone(), || output::verify_text(&v));
            if !r.ok() {
                return Ok(exit::INTEGRITY);
            }
        }
        AuditCmd::Anchor {
            out: path,
            response,
        } => {
            if let Some(p) = response {
                let tsr =
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
                let t = vault.audit_timestamp(s, &tsr)?;
                let v = json!({
                    "seq": t.seq, "status": t.info.status, "gen_time": t.info.gen_time,
                    "serial": t.info.serial,
                });
                out.data("audit-timestamp", v, || {
                    format!(
                        "time-stamp response stored for the head at seq {} (TSA time {})",
                        t.seq, t.info.gen_time
                    )
                });
            } else {
                let a = vault.audit_anchor(s)?;
                let (head, tsq) = anchor_paths(path.as_deref(), a.seq);
                std::fs::write(&head, &a.head_json)
                    .with_context(|| format!("cannot write {}", head.display()))?;
                std::fs::write(&tsq, &a.request)
                    .with_context(|| format!("cannot write {}", tsq.display()))?;
                let v = json!({
                    "seq": a.seq, "head": head.display().to_string(),
                    "request": tsq.display().to_string(),
                });
                out.data("audit-anchor", v, || {
                    format!(
                        "signed head at seq {} written to {}; time-stamp request to {}",
                        a.seq,
                        head.display(),
                        tsq.display()
                    )
                });
            }
        }
        AuditCmd::Report { since, until } => {
            let now = jiff::Timestamp::now().as_millisecond();
            let from = since
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(now - 30 * 86_400_000);
            let to = until
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(now + 1);
            let users = vault.list_users(s).unwrap_or_default();
            let report = vault.activity_report(s, from, to)?;
            let name_of = |id: vault_core::ids::UserId| {
                users
                    .iter()
                    .find(|u| u.id == id)
                    .map(|u| u.username.to_string())
                    .unwrap_or_else(|| id.to_string())
            };
            let rows: Vec<Value> = report
                .iter()
                .map(|a| vault_core::views::activity(a, &name_of(a.user)))
                .collect();
            let v = json!({ "from": from, "to": to, "users": rows });
            out.data("audit-report", v.clone(), || output::activity_text(&v));
        }
    }
    Ok(exit::OK)
}

fn cmd_doctor(cli: &Cli, out: &Out) -> anyhow::Result<u8> {
    let dir = vault_dir(cli)?;
    // Permission checks come first: an unsafe header keeps the vault shut.
    let passphrase_file = doctor::passphrase_file_check(cli.passphrase_file.as_deref());
    let mut checks = doctor::file_checks(dir);
    checks.push(passphrase_file.clone());
    let vault = if checks.iter().any(|c| c.level == Level::Fail) {
        None
    } else {
        Some(open_vault(cli)?)
    };
    if let Some(v) = &vault {
        checks = doctor::checks(v, jiff::Timestamp::now().as_millisecond())?;
        checks.insert(2, passphrase_file);
    }
    let unsafe_count = checks.iter().filter(|c| c.level == Level::Fail).count();
    let rows: Vec<Value> = checks
        .iter()
        .map(|c| json!({ "check": c.name, "level": c.level.as_str(), "detail": c.detail }))
        .collect();
    let closed = vault.map_or(Ok(()), Vault::close);
    out.data(
        "doctor-report",
        json!({ "ok": unsafe_count == 0, "checks": rows }),
        || {
            checks
                .iter()
                .map(|c| format!("{:<5} {:<22} {}", c.level.as_str(), c.name, c.detail))
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    let code = if unsafe_count == 0 {
        exit::OK
    } else {
        exit::UNSAFE_CONFIG
    };
    Ok(after_close(out, code, closed))
}
