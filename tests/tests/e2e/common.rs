//! Shared helpers of the end-to-end tests: a vault with a fast unlock KDF,
//! one user per role, a `customers` collection and a manual clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vault_core::access::Role;
use vault_core::clock::ManualClock;
use vault_core::crypto::KdfParams;
use vault_core::ids::{RecordId, Username};
use vault_core::keystore::postgres::PgConfig;
use vault_core::schema::{FieldSpec, FieldType, Schema};
use vault_core::secret::SecretString;
use vault_core::vault::{Context, InitOptions, OpenOptions, Session, Vault};

/// Vault passphrase of every test vault.
pub const PASSPHRASE: &str = "e2e-vault-passphrase-Qz7!wide";
/// Start of the manual clock: 2025-01-01T00:00:00Z.
pub const T0: i64 = 1_735_689_600_000;
/// Key buckets of test vaults.
pub const BUCKETS: u32 = 64;
/// Name of the collection created by [`fast_vault`].
pub const CUSTOMERS: &str = "customers";

/// The fixture users: (username, role, password). Passwords are 12+ characters
/// and on no common-password list; each is distinct.
pub const USERS: [(&str, Role, &str); 5] = [
    ("admin", Role::Admin, "Adm1n-orchid-Lantern-42"),
    ("officer", Role::Officer, "0fficer-Kestrel-Granite-7"),
    ("clerk", Role::Clerk, "Cl3rk-Meadow-Tungsten-93"),
    ("auditor", Role::Auditor, "Aud1tor-Basalt-Heron-58"),
    ("contractor", Role::Contractor, "Contr-Saffron-Pylon-316"),
];

/// The password of a fixture user.
pub fn password_of(username: &str) -> SecretString {
    let (_, _, p) = USERS
        .iter()
        .find(|(u, _, _)| *u == username)
        .expect("fixture user");
    SecretString::from(*p)
}

/// A command-line login context from a source no other call used (as if
/// from another terminal or address), so that a test's failed logins count
/// once each toward an account's lock-out (which needs failures from
/// distinct sources) and never trip the per-source throttle.
pub fn fresh_source() -> Context {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Context {
        channel: vault_core::audit::Channel::Cli,
        source: Some(format!(
            "test-source-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        )),
        request_id: None,
    }
}

/// Open options with the given manual clock and the default lock-out policy.
pub fn open_options(clock: &Arc<ManualClock>) -> OpenOptions {
    OpenOptions {
        clock: clock.clone(),
        ..OpenOptions::default()
    }
}

/// The `customers` schema: given and family name (required), SSN, card
/// number and driver's licence (optional).
pub fn customers_schema() -> Schema {
    let f = |name: &str, ty: FieldType, required: bool| FieldSpec {
        name: name.into(),
        ty,
        required,
        purpose: None,
    };
    Schema::new(
        "customer accounts and identity verification",
        vec![
            f("given_name", FieldType::GivenName, true),
            f("family_name", FieldType::FamilyName, true),
            f("ssn", FieldType::Ssn, false),
            f("card_number", FieldType::CardNumber, false),
            f("drivers_license", FieldType::DriversLicense, false),
        ],
        None,
    )
    .expect("valid schema")
}

/// A vault with one user per role, logged in.
#[derive(Debug)]
pub struct Fixture {
    /// The open vault.
    pub vault: Vault,
    /// Its directory.
    pub dir: PathBuf,
    /// The clock the vault was opened with.
    pub clock: Arc<ManualClock>,
    /// Session of user `admin`.
    pub admin: Session,
    /// Session of user `officer`.
    pub officer: Session,
    /// Session of user `clerk`.
    pub clerk: Session,
    /// Session of user `auditor`.
    pub auditor: Session,
    /// Session of user `contractor`.
    pub contractor: Session,
}

impl Fixture {
    /// The session of a fixture user by role.
    pub fn session(&self, role: Role) -> &Session {
        match role {
            Role::Admin => &self.admin,
            Role::Officer => &self.officer,
            Role::Clerk => &self.clerk,
            Role::Auditor => &self.auditor,
            _ => &self.contractor,
        }
    }

    /// Ends the vault without closing it, as its process's death would
    /// (no checkpoint, no event sent again: [`Vault::abandon`]), runs
    /// `between` (what else the failure did), and opens it again with the
    /// same clock.
    pub fn reopen_after_crash(self, between: impl FnOnce()) -> Fixture {
        self.reopened_after(|vault| {
            vault.abandon();
            between();
        })
    }

    /// Closes the vault and opens it again with the same clock.
    pub fn reopen(self) -> Fixture {
        self.reopened_after(|vault| vault.close().expect("close"))
    }

    /// Kills the vault as [`Self::reopen_after_crash`] does and tries to
    /// open it again: the open's error (a trail it must refuse), or the
    /// fixture.
    pub fn try_reopen_after_crash(self) -> vault_core::Result<Fixture> {
        self.try_reopened_after(Vault::abandon)
    }

    /// Ends the vault with `end` and opens it again with the same clock,
    /// the sessions kept.
    pub fn reopened_after(self, end: impl FnOnce(Vault)) -> Fixture {
        self.try_reopened_after(end).expect("open vault")
    }

    fn try_reopened_after(self, end: impl FnOnce(Vault)) -> vault_core::Result<Fixture> {
        let Fixture {
            vault,
            dir,
            clock,
            admin,
            officer,
            clerk,
            auditor,
            contractor,
        } = self;
        end(vault);
        let vault = Vault::open(&dir, &SecretString::from(PASSPHRASE), open_options(&clock))?;
        Ok(Fixture {
            vault,
            dir,
            clock,
            admin,
            officer,
            clerk,
            auditor,
            contractor,
        })
    }
}

/// Creates a vault in `dir` (absent or empty) with only the first admin.
pub fn create_vault(
    dir: &Path,
    clock: &Arc<ManualClock>,
    admin: &str,
    admin_password: &str,
) -> Vault {
    create_vault_on(dir, clock, admin, admin_password, conformance_keystore())
}

/// The keystore the fixtures use: embedded, or with
/// `PIVAULT_TEST_KEYSTORE=cluster` the PostgreSQL cluster of
/// `scripts/cluster.sh` (`PIVAULT_PG_*`), so that the same tests run
/// against both engines (`scripts/test.sh` runs the storage modules twice).
pub fn conformance_keystore() -> Option<PgConfig> {
    (std::env::var("PIVAULT_TEST_KEYSTORE").as_deref() == Ok("cluster")).then(cluster_keystore)
}

/// The records store the fixtures use: embedded, or with
/// `PIVAULT_TEST_RECORDS=cluster` the `pivault_records` database of the
/// cluster of `scripts/cluster.sh` (`scripts/test.sh` runs the storage
/// modules with both the keystore and the records there).
pub fn conformance_records() -> Option<PgConfig> {
    (std::env::var("PIVAULT_TEST_RECORDS").as_deref() == Ok("cluster")).then(cluster_records)
}

/// The records database on the cluster `scripts/cluster.sh` started.
pub fn cluster_records() -> PgConfig {
    PgConfig {
        database: "pivault_records".into(),
        ..cluster_keystore()
    }
}

/// The keystore on the cluster `scripts/cluster.sh` started, from its
/// environment (`PIVAULT_PG_*`; `scripts/test.sh` starts it and sets them).
pub fn cluster_keystore() -> PgConfig {
    let var = |n: &str| {
        std::env::var(n).unwrap_or_else(|_| {
            panic!(
                "{n} is not set: the keystore cluster is not running. Start it with \
                 `scripts/cluster.sh start` and `source` the env file it prints \
                 (scripts/test.sh does both)"
            )
        })
    };
    PgConfig {
        engine: "postgresql".into(),
        members: var("PIVAULT_PG_MEMBERS")
            .split(',')
            .map(str::to_owned)
            .collect(),
        database: "pivault_keys".into(),
        user: "pivault".into(),
        password_file: var("PIVAULT_PG_PASSWORD_FILE").into(),
        // scripts/cluster.sh's CA: every vault connection is TLS.
        ca_file: std::env::var_os("PIVAULT_PG_CA_FILE").map(Into::into),
    }
}

/// [`create_vault`] with its keystore on a cluster (`Some`) or embedded.
pub fn create_vault_on(
    dir: &Path,
    clock: &Arc<ManualClock>,
    admin: &str,
    admin_password: &str,
    keystore: Option<PgConfig>,
) -> Vault {
    create_vault_with(
        dir,
        clock,
        admin,
        admin_password,
        keystore,
        conformance_records(),
    )
}

/// [`create_vault`] with its keystore and its records each on a cluster
/// (`Some`) or embedded.
pub fn create_vault_with(
    dir: &Path,
    clock: &Arc<ManualClock>,
    admin: &str,
    admin_password: &str,
    keystore: Option<PgConfig>,
    records: Option<PgConfig>,
) -> Vault {
    let init = InitOptions {
        kdf: KdfParams::INSECURE_FAST,
        buckets: BUCKETS,
        admin: Username::parse(admin).expect("admin name"),
        admin_password: SecretString::from(admin_password),
        // The fixture's staff sign in with passwords only, so that every
        // other test drives its subject, not a code; two_factor.rs tests
        // the default (required for admin, officer and contractor).
        two_factor: vault_core::access::TwoFactorPolicy::none(),
    };
    Vault::create_on_clusters(
        dir,
        &SecretString::from(PASSPHRASE),
        init,
        open_options(clock),
        keystore,
        records,
    )
    .expect("create vault")
}

/// Opens an existing test vault.
pub fn open_vault(dir: &Path, clock: &Arc<ManualClock>) -> Vault {
    Vault::open(dir, &SecretString::from(PASSPHRASE), open_options(clock)).expect("open vault")
}

/// Logs a fixture user in over the CLI channel.
pub fn login(vault: &Vault, username: &str) -> Session {
    vault
        .login(username, &password_of(username), Context::cli())
        .expect("login")
}

/// A vault in `dir` with the five [`USERS`] (one per role), all logged in,
/// and the [`CUSTOMERS`] collection; the clock starts at [`T0`].
pub fn fast_vault(dir: &Path) -> Fixture {
    fast_vault_on(dir, conformance_keystore())
}

/// [`fast_vault`] with its keystore on a cluster (`Some`) or embedded.
pub fn fast_vault_on(dir: &Path, keystore: Option<PgConfig>) -> Fixture {
    fast_vault_with(dir, keystore, conformance_records())
}

/// [`fast_vault`] with its keystore and its records each on a cluster
/// (`Some`) or embedded.
pub fn fast_vault_with(
    dir: &Path,
    keystore: Option<PgConfig>,
    records: Option<PgConfig>,
) -> Fixture {
    let clock = Arc::new(ManualClock::new(T0));
    let (admin_name, _, admin_pw) = USERS[0];
    let vault = create_vault_with(dir, &clock, admin_name, admin_pw, keystore, records);
    let admin = login(&vault, admin_name);
    for (name, role, pw) in &USERS[1..] {
        vault
            .add_user(&admin, name, &SecretString::from(*pw), *role, false)
            .expect("add fixture user");
    }
    vault
        .create_collection(&admin, CUSTOMERS, &customers_schema())
        .expect("create collection");
    let officer = login(&vault, "officer");
    let clerk = login(&vault, "clerk");
    let auditor = login(&vault, "auditor");
    let contractor = login(&vault, "contractor");
    Fixture {
        vault,
        dir: dir.to_path_buf(),
        clock,
        admin,
        officer,
        clerk,
        auditor,
        contractor,
    }
}

/// The events whose action starts with `prefix`, as the auditor reads them.
pub fn events(fx: &Fixture, prefix: &str) -> Vec<vault_core::audit::AuditEvent> {
    fx.vault
        .audit_events(
            &fx.auditor,
            &vault_core::audit::EventFilter {
                action_prefix: Some(prefix.into()),
                ..Default::default()
            },
        )
        .unwrap()
}

/// `doctor`'s `sealed-rows` check: its level and what it found; or, when
/// another check's read of a sealed row stopped `doctor` (the row is not
/// the one the vault last wrote), a failure with that error.
pub fn sealed_rows(fx: &Fixture) -> (vault_core::doctor::Level, String) {
    doctor_check(fx, "sealed-rows")
}

/// `doctor`'s check `name`, run by the officer: its level and what it
/// found; a failure with the error when an integrity error stopped
/// `doctor`.
pub fn doctor_check(fx: &Fixture, name: &str) -> (vault_core::doctor::Level, String) {
    match fx.vault.security_checks(&fx.officer) {
        Ok(checks) => {
            let c = checks
                .checks
                .into_iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("a {name} check"));
            (c.level, c.detail)
        }
        Err(vault_core::Error::Integrity(m)) => (vault_core::doctor::Level::Fail, m.to_owned()),
        Err(e) => panic!("doctor: {e}"),
    }
}

/// What an insider holding the trail's files or the vault's database role
/// (but not the vault's key) can write: after the event line `last` (its
/// JSON, a space, its chain hash), the next event, well-formed and chained
/// to it, saying `actor` revealed `record`'s SSN. Answers the new line
/// (without a newline) and its sequence number.
pub fn forged_reveal(
    last: &[u8],
    actor: vault_core::ids::UserId,
    record: vault_core::ids::RecordId,
) -> (Vec<u8>, u64) {
    let split = last.len() - 65;
    let (body, hash) = (&last[..split], &last[split + 1..]);
    let before: serde_json::Value = serde_json::from_slice(body).expect("an event's JSON");
    let seq = before["seq"].as_u64().expect("seq") + 1;
    let prev: [u8; 32] = hex::decode(hash)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let json = format!(
        r#"{{"seq":{seq},"time_ms":{},"actor":"{actor}","channel":"http","source":"127.0.0.1","action":"record.reveal","targets":["{record}","field:ssn"],"outcome":"success","code":null,"reason":"customer called about a bill","request_id":null}}"#,
        before["time_ms"].as_i64().expect("time_ms") + 1
    );
    let link = vault_core::audit::chain_link(&prev, json.as_bytes());
    (format!("{json} {}", hex::encode(link)).into_bytes(), seq)
}

/// A checkpoint line in the canonical form, after the trail's last one
/// (`last`, which it chains to) and covering the event line `line` (its
/// seq and chain hash), but signed with no key of the vault's: what someone
/// holding the trail's files or the vault's database role can add beside a
/// forged event, so that the vault finds nothing after its last checkpoint.
pub fn forged_checkpoint(last: &[u8], line: &[u8]) -> Vec<u8> {
    let prev = vault_core::audit::SignedHead::from_line(last)
        .expect("a checkpoint line")
        .checkpoint_hash;
    let split = line.len() - 65;
    let ev: serde_json::Value = serde_json::from_slice(&line[..split]).expect("an event's JSON");
    format!(
        r#"{{"v":2,"seq":{},"head":"{}","prev":"{}","time_ms":{},"sig":"{}"}}"#,
        ev["seq"],
        std::str::from_utf8(&line[split + 1..]).expect("hex"),
        hex::encode(prev),
        ev["time_ms"],
        "00".repeat(64)
    )
    .into_bytes()
}

/// The event `seq` said to be one the vault does not vouch for by an
/// `audit.unvouched` event: `Some(that event's targets)`.
pub fn disowned(fx: &Fixture, seq: u64) -> Option<Vec<String>> {
    use vault_core::audit::{UNVOUCHED_ACTION, unvouched_ranges, unvouched_target};
    unvouched_ranges(&events(fx, UNVOUCHED_ACTION))
        .into_iter()
        .find(|u| u.from <= seq && seq <= u.to)
        .map(|u| vec![unvouched_target(u.from, u.to)])
}

/// The trail's segments of the vault in `dir` (files), oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    s.sort();
    s
}

/// The lines of the text file `path`.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An event's targets but the state digest's generation (`state:<n>`),
/// which the first event after a change of sealed rows names as well.
pub fn ids(targets: &[String]) -> Vec<String> {
    targets
        .iter()
        .filter(|t| !t.starts_with(vault_core::audit::STATE_TARGET))
        .cloned()
        .collect()
}

/// Each of `records` has exactly one `record.create` event naming it
/// first: each put audited once, under its own record.
pub fn each_created_once(fx: &Fixture, records: impl IntoIterator<Item = RecordId>) {
    let creates = events(fx, "record.create");
    for id in records {
        let own = creates
            .iter()
            .filter(|e| e.targets.first() == Some(&id.to_string()))
            .count();
        assert_eq!(own, 1, "record {id}: one create event");
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    assert!(!needle.is_empty());
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

/// The seed of a randomised test: `PIVAULT_MODEL_SEED`, or the clock. Tests
/// print it so a failing run can be replayed.
pub fn model_seed() -> u64 {
    std::env::var("PIVAULT_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// xorshift64*: a small seeded generator, so a run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
