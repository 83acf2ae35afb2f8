//! Shared set-up for the benchmarks: a vault with an admin, an officer and a
//! clerk, a `customers` collection, and synthetic record bodies of a chosen
//! serialised size. Everything here is synthetic; no real personal
//! information is generated.

use std::path::Path;

use serde_json::{Map, Value, json};
use vault_core::access::Role;
use vault_core::crypto::KdfParams;
use vault_core::ids::Username;
use vault_core::schema::{FieldSpec, FieldType, Schema};
use vault_core::secret::SecretString;
use vault_core::vault::{Context, DEFAULT_BUCKETS, InitOptions, OpenOptions, Session, Vault};

/// Collection every benchmark writes to.
pub const COLLECTION: &str = "customers";
/// Vault passphrase (benchmarks only).
pub const PASSPHRASE: &str = "bench-vault-passphrase-7Qz!";
/// Users and their passwords (benchmarks only; they pass the password policy).
pub const ADMIN: (&str, &str) = ("alice", "Tq7#bench-admin-pass");
pub const OFFICER: (&str, &str) = ("olivia", "Rw8$bench-officer-pass");
pub const CLERK: (&str, &str) = ("carl", "Ys9%bench-clerk-pass");

/// `text` fields are capped at 4096 characters by the schema, so a 16 KiB
/// body spreads its padding over several note fields.
pub const NOTE_FIELDS: [&str; 6] = [
    "notes", "notes_2", "notes_3", "notes_4", "notes_5", "notes_6",
];
const NOTE_CHUNK: usize = 4000;

/// An unlocked vault (cheap KDF: the unlock cost is measured on its own)
/// with the three users, the collection, and a clerk session.
#[derive(Debug)]
pub struct Fixture {
    pub vault: Vault,
    pub clerk: Session,
}

pub fn schema() -> Schema {
    let f = |name: &str, ty: FieldType, required: bool| FieldSpec {
        name: name.to_owned(),
        ty,
        required,
        purpose: None,
    };
    let mut fields = vec![
        f("given_name", FieldType::GivenName, true),
        f("family_name", FieldType::FamilyName, true),
        f("ssn", FieldType::Ssn, true),
    ];
    fields.extend(NOTE_FIELDS.iter().map(|n| f(n, FieldType::Text, false)));
    Schema::new("benchmark customers (synthetic data)", fields, None).expect("valid schema")
}

/// Creates the vault in `dir` (which must not exist or be empty).
pub fn fixture(dir: &Path) -> Fixture {
    fixture_on(dir, None)
}

/// [`fixture`] with its keystore on a PostgreSQL cluster (`Some`).
pub fn fixture_on(
    dir: &Path,
    keystore: Option<vault_core::keystore::postgres::PgConfig>,
) -> Fixture {
    fixture_on_clusters(dir, keystore, None)
}

/// [`fixture`] with its keystore and its records each on a PostgreSQL
/// cluster (`Some`) or embedded.
pub fn fixture_on_clusters(
    dir: &Path,
    keystore: Option<vault_core::keystore::postgres::PgConfig>,
    records: Option<vault_core::keystore::postgres::PgConfig>,
) -> Fixture {
    let init = InitOptions {
        kdf: KdfParams::INSECURE_FAST,
        buckets: DEFAULT_BUCKETS,
        admin: Username::parse(ADMIN.0).expect("username"),
        admin_password: SecretString::from(ADMIN.1),
        // The benchmarks' staff sign in with passwords only.
        two_factor: vault_core::access::TwoFactorPolicy::none(),
    };
    let vault = Vault::create_on_clusters(
        dir,
        &SecretString::from(PASSPHRASE),
        init,
        OpenOptions::default(),
        keystore,
        records,
    )
    .expect("create vault");
    let admin = vault
        .login(ADMIN.0, &SecretString::from(ADMIN.1), Context::cli())
        .expect("admin login");
    vault
        .add_user(
            &admin,
            OFFICER.0,
            &SecretString::from(OFFICER.1),
            Role::Officer,
            false,
        )
        .expect("add officer");
    vault
        .add_user(
            &admin,
            CLERK.0,
            &SecretString::from(CLERK.1),
            Role::Clerk,
            false,
        )
        .expect("add clerk");
    vault
        .create_collection(&admin, COLLECTION, &schema())
        .expect("create collection");
    let clerk = vault
        .login(CLERK.0, &SecretString::from(CLERK.1), Context::cli())
        .expect("clerk login");
    Fixture { vault, clerk }
}

const GIVEN: [&str; 8] = [
    "Ada", "Bram", "Chloe", "Dev", "Elena", "Farid", "Greta", "Hiro",
];
const FAMILY: [&str; 8] = [
    "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi", "Silva", "Tanaka", "Usman",
];
const WORDS: [&str; 16] = [
    "account",
    "review",
    "called",
    "about",
    "billing",
    "address",
    "updated",
    "customer",
    "requested",
    "statement",
    "mailed",
    "branch",
    "follow-up",
    "scheduled",
    "verified",
    "notes",
];

/// A valid synthetic SSN for row `i`: area 001-665, group 01-99, serial 0001-9999.
pub fn synthetic_ssn(i: u64) -> String {
    let area = 1 + (i.wrapping_mul(7919) % 665);
    let group = 1 + ((i / 665).wrapping_mul(31) % 99);
    let serial = 1 + (i.wrapping_mul(104_729) % 9999);
    format!("{area:03}-{group:02}-{serial:04}")
}

/// `n` characters of word-like ASCII filler.
pub fn filler(n: usize, seed: u64) -> String {
    let mut s = String::with_capacity(n + 16);
    let mut k = seed as usize;
    while s.len() < n {
        s.push_str(WORDS[k % WORDS.len()]);
        s.push(' ');
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    s.truncate(n);
    s
}

/// A body whose note fields hold `pad` characters of filler (SSN with dashes).
pub fn body_with_padding(i: u64, pad: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("given_name".into(), json!(GIVEN[(i % 8) as usize]));
    m.insert("family_name".into(), json!(FAMILY[((i / 8) % 8) as usize]));
    m.insert("ssn".into(), json!(synthetic_ssn(i)));
    let text = filler(pad, i);
    let mut rest = text.as_str();
    for name in NOTE_FIELDS {
        let take = rest.len().min(NOTE_CHUNK);
        m.insert(name.into(), json!(&rest[..take]));
        rest = &rest[take..];
        if rest.is_empty() {
            break;
        }
    }
    assert!(rest.is_empty(), "padding too large for the note fields");
    m
}

/// A record body (without the SSN dashes, i.e. already in the normal form the
/// vault stores) whose compact JSON is `target` bytes, within a few bytes.
pub fn body_of_size(i: u64, target: usize) -> Map<String, Value> {
    let mut pad = target.saturating_sub(120);
    for _ in 0..8 {
        let mut m = body_with_padding(i, pad);
        // The vault stores the SSN as 9 digits: measure that form.
        let ssn = m["ssn"].as_str().expect("ssn").replace('-', "");
        m.insert("ssn".into(), json!(ssn));
        let len = serde_json::to_vec(&m).expect("json").len();
        if len == target {
            return m;
        }
        pad = (pad as i64 + target as i64 - len as i64).max(0) as usize;
    }
    let mut m = body_with_padding(i, pad);
    let ssn = m["ssn"].as_str().expect("ssn").replace('-', "");
    m.insert("ssn".into(), json!(ssn));
    m
}

/// Reads `VmHWM` (peak resident set) and `VmRSS` from /proc/self/status, in KiB.
pub fn mem_kib() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets the peak resident set (`VmHWM`) to the current RSS (Linux >= 4.0:
/// write "5" to /proc/self/clear_refs). Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The keystore database of the cluster `scripts/cluster.sh start` brought
/// up (its env file sourced); its records database is `pivault_records`.
pub fn cluster_config() -> vault_core::keystore::postgres::PgConfig {
    let var = |n: &str| {
        std::env::var(n).unwrap_or_else(|_| {
            panic!("{n} is not set: run scripts/cluster.sh start and source its env file")
        })
    };
    vault_core::keystore::postgres::PgConfig {
        engine: "postgresql".into(),
        members: var("PIVAULT_PG_MEMBERS")
            .split(',')
            .map(str::to_owned)
            .collect(),
        database: "pivault_keys".into(),
        user: "pivault".into(),
        password_file: var("PIVAULT_PG_PASSWORD_FILE").into(),
        ca_file: std::env::var_os("PIVAULT_PG_CA_FILE").map(Into::into),
    }
}

/// The officer of [`fixture`], signed in.
pub fn officer(vault: &Vault) -> Session {
    vault
        .login(OFFICER.0, &SecretString::from(OFFICER.1), Context::cli())
        .expect("officer login")
}
