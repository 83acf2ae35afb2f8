//! A service provider's cluster (issue 16): `pivault vault create` gives
//! every vault a database role of its own; the provider's operator lists
//! them and reaches no vault's keys; one vault's credentials reach no other
//! vault's keystore by any SQL a stolen credential could send. Run with
//! the cluster `scripts/cluster.sh` starts (see cluster.rs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vault_core::keystore::postgres::PgConfig;
use vault_core::keystore::provider;

use crate::cli::{pivault_bin, write_private};
use crate::common;

/// The provider's `keystore.json`: the cluster, the operator's role.
fn provider_file(dir: &Path) -> (PathBuf, PgConfig) {
    let shared = common::cluster_keystore();
    let cfg = PgConfig {
        user: "pivault_provider".into(),
        password_file: std::env::var("PIVAULT_PG_PROVIDER_PASSWORD_FILE")
            .expect("PIVAULT_PG_PROVIDER_PASSWORD_FILE (scripts/cluster.sh)")
            .into(),
        ..shared
    };
    let f = dir.join("provider.json");
    std::fs::write(&f, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    (f, cfg)
}

struct Operator {
    work: PathBuf,
    provider: PathBuf,
}

impl Operator {
    fn run(&self, vault: &Path, args: &[&str]) -> std::process::Output {
        Command::new(pivault_bin())
            .arg("--vault")
            .arg(vault)
            .args(args)
            .env("PIVAULT_PASSPHRASE_FILE", self.work.join("pass"))
            .env("PIVAULT_PASSWORD_FILE", self.work.join("admin.pw"))
            .env_remove("PIVAULT_DIR")
            .output()
            .unwrap()
    }

    fn create(&self, vault: &Path) -> std::process::Output {
        self.run(
            vault,
            &[
                "--json",
                "vault",
                "create",
                "--provider",
                self.provider.to_str().unwrap(),
                "--admin",
                "owner",
                "--insecure-fast-kdf",
                "--two-factor",
                "none",
            ],
        )
    }

    fn list(&self) -> Value {
        let o = self.run(
            &self.work.join("none"),
            &[
                "--json",
                "vault",
                "list",
                "--provider",
                self.provider.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        crate::documents::check(&v, "vault list");
        v
    }
}

fn vault_roles(c: &mut postgres::Client) -> BTreeSet<String> {
    c.query(
        "SELECT rolname FROM pg_roles WHERE rolname LIKE 'pvr\\_%'",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// What the statement got back: `Ok` or the server's SQLSTATE.
fn try_sql(c: &mut postgres::Client, sql: &str) -> Result<(), String> {
    c.batch_execute(sql).map_err(|e| {
        e.as_db_error()
            .map(|d| d.code().code().to_owned())
            .unwrap_or_else(|| e.to_string())
    })
}

/// A table's file number, from the catalog (no privilege on it needed).
fn relfilenode(c: &mut postgres::Client, schema: &str, table: &str) -> i64 {
    c.query_one(
        "SELECT c.relfilenode::text::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relname = $2",
        &[&schema, &table],
    )
    .unwrap()
    .get(0)
}

fn doctor_level(op: &Operator, vault: &Path, check: &str) -> String {
    let o = op.run(vault, &["--json", "doctor"]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("doctor: {}", String::from_utf8_lossy(&o.stderr)));
    let found = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {v}"));
    format!("{}: {}", found["level"].as_str().unwrap(), found["detail"])
}

#[test]
fn cluster_vaults_created_together_each_get_a_role_no_other_credential_reaches() {
    let _one = crate::cluster::serial();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    write_private(&work.join("pass"), b"hosted-vault-passphrase-71Kq!");
    write_private(&work.join("admin.pw"), b"Hosted-Larch-Marten-Quill-38");
    let (provider, provider_cfg) = provider_file(&work);
    let op = Operator { work, provider };
    let mut as_provider = provider::connect_primary(&provider_cfg).unwrap();
    let roles_before = vault_roles(&mut as_provider);

    // Four vaults created at once, and a fifth creation racing the first
    // into the same directory: exactly one of those two wins, and the loser
    // leaves no role behind.
    let dirs: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("v{i}"))).collect();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let mut hs: Vec<_> = dirs.iter().map(|d| s.spawn(|| op.create(d))).collect();
        hs.push(s.spawn(|| op.create(&dirs[0])));
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<Value> = outs
        .iter()
        .filter(|o| o.status.success())
        .map(|o| serde_json::from_slice(&o.stdout).unwrap())
        .collect();
    assert_eq!(
        ok.len(),
        4,
        "four vaults, one lost race: {:?}",
        outs.iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
    for v in &ok {
        crate::documents::check(v, "vault create");
    }
    let roles_after = vault_roles(&mut as_provider);
    let new_roles: BTreeSet<_> = roles_after.difference(&roles_before).cloned().collect();
    assert_eq!(
        new_roles.len(),
        4,
        "one role per vault, none orphaned: {new_roles:?}"
    );

    // A creation refused after its role was made (a bucket count out of
    // range is checked with the rest of `init`) takes the role off again
    // and leaves no password file.
    let refused = tmp.path().join("refused");
    let o = op.run(
        &refused,
        &[
            "--json",
            "vault",
            "create",
            "--provider",
            op.provider.to_str().unwrap(),
            "--admin",
            "owner",
            "--insecure-fast-kdf",
            "--buckets",
            "0",
        ],
    );
    assert!(!o.status.success());
    assert_eq!(
        vault_roles(&mut as_provider),
        roles_after,
        "the refused creation's role was withdrawn"
    );
    assert!(!refused.join(provider::PASSWORD_FILE).exists());

    // A provider file with a wrong password: refused by the cluster, no
    // role made, the directory left empty, so the creation can be run again
    // there with the right file.
    write_private(&op.work.join("wrong.pw"), b"not-the-provider-password");
    let wrong = PgConfig {
        password_file: op.work.join("wrong.pw"),
        ..provider_cfg.clone()
    };
    let wrong_file = op.work.join("wrong-provider.json");
    std::fs::write(&wrong_file, serde_json::to_vec(&wrong).unwrap()).unwrap();
    let retried = tmp.path().join("retried");
    let o = Operator {
        work: op.work.clone(),
        provider: wrong_file,
    }
    .create(&retried);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(vault_roles(&mut as_provider), roles_after);
    assert_eq!(
        std::fs::read_dir(&retried).map(|d| d.count()).unwrap_or(0),
        0
    );
    let o = op.create(&retried);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Each vault's keystore.json names its own role; the password is beside
    // it, private, and works for that role only.
    let cfgs: Vec<PgConfig> = dirs
        .iter()
        .map(|d| serde_json::from_slice(&std::fs::read(d.join("keystore.json")).unwrap()).unwrap())
        .collect();
    let users: BTreeSet<_> = cfgs.iter().map(|c| c.user.clone()).collect();
    assert_eq!(users, new_roles);
    for c in &cfgs {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&c.password_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{} is private", c.password_file.display());
    }

    // Each directory's vault ID, as its creation printed it.
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| {
            ok.iter()
                .find(|v| v["dir"] == d.display().to_string())
                .and_then(|v| v["vault_id"].as_str())
                .unwrap_or_else(|| panic!("no vault created in {}", d.display()))
                .to_owned()
        })
        .collect();

    // The operator's list: every vault, its own role, never shared; no key.
    let listed = op.list();
    for (id, cfg) in ids.iter().zip(&cfgs) {
        let item = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["vault_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"));
        assert_eq!(item["role"], cfg.user.as_str(), "{item}");
        assert_eq!(item["shared_role"], false, "{item}");
        assert!(item["keystore_bytes"].as_i64().unwrap() > 0, "{item}");
    }

    // Vault 0's stolen credentials against vault 1's keystore.
    let schema = |id: &str| format!("pv_{}", id.replace('-', ""));
    let (s0, s1) = (schema(&ids[0]), schema(&ids[1]));
    let (cfg0, cfg1) = (cfgs[0].clone(), cfgs[1].clone());
    let mut v0 = provider::connect_primary(&cfg0).unwrap();
    let own: i64 = v0
        .query_one(&format!("SELECT count(*) FROM {s0}.buckets"), &[])
        .unwrap()
        .get(0);
    assert!(own > 0, "a vault reads its own wrapped bucket keys");
    let file_before = relfilenode(&mut v0, &s1, "buckets");
    let denied = "42501";
    for attack in [
        format!("SELECT * FROM {s1}.buckets"),
        format!("SELECT * FROM {s1}.deks"),
        format!("DELETE FROM {s1}.deks"),
        format!("DROP SCHEMA {s1} CASCADE"),
        format!("ALTER TABLE {s1}.buckets OWNER TO CURRENT_USER"),
        format!("GRANT {} TO CURRENT_USER", cfg1.user),
        format!("SET ROLE {}", cfg1.user),
        format!("ALTER ROLE {} PASSWORD 'taken-over'", cfg1.user),
        "CREATE ROLE pvr_00000000000000000000 LOGIN".to_owned(),
        "SELECT pivault_provision.create_vault_role('pvr_00000000000000000001', 'x')".to_owned(),
        "SELECT pg_read_binary_file('global/pg_control')".to_owned(),
        format!("ALTER ROLE {} CONNECTION LIMIT -1", cfg0.user),
    ] {
        assert_eq!(
            try_sql(&mut v0, &attack),
            Err(denied.to_owned()),
            "{attack}"
        );
    }
    // VACUUM FULL of another's table is skipped with a warning: its file stays.
    let _ = try_sql(&mut v0, &format!("VACUUM FULL {s1}.buckets"));
    assert_eq!(relfilenode(&mut v0, &s1, "buckets"), file_before);
    assert_eq!(
        provider::reachable_from(&cfg0, ids[0].parse().unwrap()).unwrap(),
        Vec::<String>::new()
    );

    // Nor can they take the cluster's connections: the role's limit
    // refuses the 17th on the primary (SQLSTATE 53300), while vault 1
    // still connects and reads its keys.
    let port: i32 = v0
        .query_one("SELECT inet_server_port()", &[])
        .unwrap()
        .get(0);
    let connect =
        || vault_core::keystore::postgres::connect_member(&cfg0, &format!("127.0.0.1:{port}"));
    let mut hoard = vec![];
    let refused = loop {
        match connect() {
            Ok(c) => hoard.push(c),
            Err(e) => break e,
        }
        assert!(
            hoard.len() <= 64,
            "a stolen credential opened 64 connections"
        );
    };
    assert!(refused.to_string().contains("(53300)"), "{refused}");
    // With the one the test holds (a backend of a client that just left
    // may still count for a moment).
    let limit = vault_core::keystore::postgres::ROLE_CONNECTION_LIMIT;
    assert!(
        (limit - 3..=limit).contains(&(hoard.len() + 1)),
        "{} connections held at the refusal, the limit is {limit}",
        hoard.len() + 1
    );
    let mut v1 = provider::connect_primary(&cfg1).unwrap();
    let theirs: i64 = v1
        .query_one(&format!("SELECT count(*) FROM {s1}.buckets"), &[])
        .unwrap()
        .get(0);
    assert!(theirs > 0, "vault 1 works beside the hoard");
    drop(hoard);

    // The operator's credentials: no vault's keys, no vault's role.
    for attack in [
        format!("SELECT * FROM {s0}.buckets"),
        format!("GRANT {} TO CURRENT_USER", cfg0.user),
        format!("ALTER ROLE {} PASSWORD 'taken-over'", cfg0.user),
        format!("SET ROLE {}", cfg0.user),
        "CREATE ROLE pvr_00000000000000000002 LOGIN".to_owned(),
        "GRANT pivault_vaults TO CURRENT_USER".to_owned(),
    ] {
        assert_eq!(
            try_sql(&mut as_provider, &attack),
            Err(denied.to_owned()),
            "{attack}"
        );
    }
    // Its one function makes only a `pvr_` role with a SCRAM verifier, and
    // drops none that owns a keystore.
    for (attack, why) in [
        (
            "SELECT pivault_provision.create_vault_role('pivault_vaults', 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5')",
            "a name that is not a vault role's",
        ),
        (
            "SELECT pivault_provision.create_vault_role('pvr_00000000000000000003', 'plain-password')",
            "a password, not a verifier",
        ),
    ] {
        assert!(try_sql(&mut as_provider, attack).is_err(), "{why}");
    }
    assert!(
        try_sql(
            &mut as_provider,
            &format!("SELECT pivault_provision.drop_vault_role('{}')", cfg0.user)
        )
        .is_err(),
        "a role owning a keystore is not dropped"
    );
    assert!(vault_roles(&mut as_provider).contains(&cfg0.user));

    // doctor: a vault with its own role passes isolation; one on the shared
    // role (`pivault init --keystore-cluster`) beside another is warned.
    let level = doctor_level(&op, &dirs[0], "keystore-cluster-isolation");
    assert!(level.starts_with("ok:"), "{level}");
    let shared_a = common::fast_vault_on(
        &tmp.path().join("shared-a"),
        Some(common::cluster_keystore()),
    );
    let shared_b = common::fast_vault_on(
        &tmp.path().join("shared-b"),
        Some(common::cluster_keystore()),
    );
    let level = vault_core::doctor::checks(&shared_a.vault, common::T0)
        .unwrap()
        .into_iter()
        .find(|c| c.name == "keystore-cluster-isolation")
        .expect("the isolation check");
    assert_eq!(level.level, vault_core::doctor::Level::Warn, "{level:?}");
    shared_a.vault.close().unwrap();
    shared_b.vault.close().unwrap();
    let listed = op.list();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["role"] == "pivault" && i["shared_role"] == true),
        "{listed}"
    );
}

/// Keys never cross to the cluster in clear: every vault role's connection
/// is TLS with the member's certificate verified. Without TLS the members
/// refuse a vault's role (`pg_hba`); with a CA that did not sign the
/// members' certificates pivault refuses the member before any password
/// is sent; a member off this machine needs a CA in the configuration.
#[test]
fn the_keystore_cluster_is_reached_over_verified_tls_only() {
    use vault_core::keystore::postgres::connect_member;
    let cfg = common::cluster_keystore();
    assert!(
        cfg.ca_file.is_some(),
        "scripts/cluster.sh sets PIVAULT_PG_CA_FILE"
    );
    for m in &cfg.members {
        let mut c = connect_member(&cfg, m).expect("a TLS connection");
        let r = c
            .query_one(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap();
        assert!(r.get::<_, bool>(0), "{m}: not TLS");
        let version: String = r.get(1);
        assert!(version.starts_with("TLSv1."), "{m}: {version}");
    }
    // In clear: refused by every member.
    let clear = PgConfig {
        ca_file: None,
        ..cfg.clone()
    };
    for m in &cfg.members {
        let Err(e) = connect_member(&clear, m) else {
            panic!("{m}: a vault role connected in clear");
        };
        assert!(e.to_string().contains("(28000)"), "{m}: {e}");
    }
    // Another CA: the member's certificate is not trusted.
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=someone else's CA",
            "-keyout",
        ])
        .arg(tmp.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let wrong_ca = PgConfig {
        ca_file: Some(other),
        ..cfg.clone()
    };
    let Err(e) = connect_member(&wrong_ca, &cfg.members[0]) else {
        panic!("a member trusted through someone else's CA");
    };
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // A file that holds no certificate is refused, not taken as no CA.
    write_private(&tmp.path().join("empty.pem"), b"");
    let empty = PgConfig {
        ca_file: Some(tmp.path().join("empty.pem")),
        ..cfg.clone()
    };
    let Err(e) = connect_member(&empty, &cfg.members[0]) else {
        panic!("connected with a CA file holding no certificate");
    };
    assert!(e.to_string().contains("no certificate"), "{e}");
    // Off this machine: only with a CA.
    let far = PgConfig {
        members: vec!["10.0.0.5:5432".into()],
        ca_file: None,
        ..cfg.clone()
    };
    assert!(
        far.validate()
            .unwrap_err()
            .to_string()
            .contains("needs TLS"),
        "a remote member in clear"
    );
    PgConfig {
        ca_file: cfg.ca_file.clone(),
        ..far
    }
    .validate()
    .expect("a remote member over TLS");
}

/// `vault create --records-cluster`: each hosted vault's records go to the
/// records database in a schema its own role makes and owns. Vault 0's
/// credentials read their own records rows and none of vault 1's, by any
/// of the statements a stolen credential would try; a records file on
/// another cluster is refused before any role is made.
#[test]
fn hosted_vaults_keep_their_records_on_the_cluster_and_no_other_vaults_role_reaches_them() {
    let _one = crate::cluster::serial();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    write_private(&work.join("pass"), b"hosted-vault-passphrase-71Kq!");
    write_private(&work.join("admin.pw"), b"Hosted-Larch-Marten-Quill-38");
    let (provider, provider_cfg) = provider_file(&work);
    let records_file = work.join("records.json");
    std::fs::write(
        &records_file,
        serde_json::to_vec(&common::cluster_records()).unwrap(),
    )
    .unwrap();
    let op = Operator { work, provider };
    let create = |dir: &Path, records: &Path| {
        op.run(
            dir,
            &[
                "--json",
                "vault",
                "create",
                "--provider",
                op.provider.to_str().unwrap(),
                "--records-cluster",
                records.to_str().unwrap(),
                "--admin",
                "owner",
                "--insecure-fast-kdf",
                "--two-factor",
                "none",
            ],
        )
    };
    let mut as_provider = provider::connect_primary(&provider_cfg).unwrap();
    let roles_before = vault_roles(&mut as_provider);
    // A records database on other members: refused, no role made.
    let elsewhere = op.work.join("elsewhere.json");
    std::fs::write(
        &elsewhere,
        serde_json::to_vec(&PgConfig {
            members: vec!["127.0.0.1:1".into()],
            ..common::cluster_records()
        })
        .unwrap(),
    )
    .unwrap();
    let o = create(&tmp.path().join("elsewhere"), &elsewhere);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("same members"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(vault_roles(&mut as_provider), roles_before);

    let dirs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("h{i}"))).collect();
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| {
            let o = create(d, &records_file);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            v["vault_id"].as_str().unwrap().replace('-', "")
        })
        .collect();
    // Each vault's records.json names its own role and the records database.
    let cfgs: Vec<PgConfig> = dirs
        .iter()
        .map(|d| serde_json::from_slice(&std::fs::read(d.join("records.json")).unwrap()).unwrap())
        .collect();
    let keys0: PgConfig =
        serde_json::from_slice(&std::fs::read(dirs[0].join("keystore.json")).unwrap()).unwrap();
    assert_eq!(cfgs[0].user, keys0.user, "one role per vault for both");
    assert_ne!(cfgs[0].user, cfgs[1].user);
    assert_eq!(cfgs[0].database, "pivault_records");
    // The doctor of a hosted vault names the records cluster.
    assert!(
        doctor_level(&op, &dirs[0], "records-engine").contains("records cluster"),
        "{}",
        doctor_level(&op, &dirs[0], "records-engine")
    );

    let (r0, r1) = (format!("pr_{}", ids[0]), format!("pr_{}", ids[1]));
    let mut v0 = provider::connect_primary(&cfgs[0]).unwrap();
    let own: i64 = v0
        .query_one(&format!("SELECT count(*) FROM {r0}.rows"), &[])
        .unwrap()
        .get(0);
    assert!(
        own > 0,
        "a vault reads its own records rows (the admin, the audit anchor)"
    );
    let denied = "42501";
    let file_before = relfilenode(&mut v0, &r1, "beacons_0");
    for attack in [
        format!("SELECT * FROM {r1}.rows"),
        format!("SELECT * FROM {r1}.beacons"),
        format!("DELETE FROM {r1}.rows"),
        format!("UPDATE {r1}.rows SET v = v"),
        format!("INSERT INTO {r1}.rows VALUES (0, 'x', 'y')"),
        format!("DROP SCHEMA {r1} CASCADE"),
        format!("ALTER TABLE {r1}.rows OWNER TO CURRENT_USER"),
        format!("SET ROLE {}", cfgs[1].user),
        // The byte scan, an oracle over whatever it reads: the
        // superuser's whole scan, which reads every file, is not its.
        "SELECT * FROM pivault_verify.scan(ARRAY['\\x00'::bytea])".to_owned(),
    ] {
        assert_eq!(
            try_sql(&mut v0, &attack),
            Err(denied.to_owned()),
            "{attack}"
        );
    }
    // Nor does its own scan, naming vault 1's schema as its vault, read a
    // file of vault 1's (answered unread).
    let named: Vec<(String, Option<bool>)> = v0
        .query(
            &format!("SELECT path, hit FROM pivault_verify.scan_vault(ARRAY['\\x00'::bytea], '{r1}', NULL, NULL)"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let file_1 = format!("/{file_before}");
    let of_1: Vec<_> = named.iter().filter(|(p, _)| p.ends_with(&file_1)).collect();
    assert!(
        !of_1.is_empty() && of_1.iter().all(|(_, hit)| hit.is_none()),
        "vault 1's search-index file unread: {of_1:?}"
    );
    // VACUUM of a table one does not own is skipped with a warning, not
    // refused: the table's file must not have changed.
    let _ = try_sql(&mut v0, &format!("VACUUM FULL {r1}.beacons_0"));
    assert_eq!(relfilenode(&mut v0, &r1, "beacons_0"), file_before);
    // Nor can it keep vault 1 from opening by holding its lock first: the
    // advisory lock the records store once used is anyone's to take in the
    // database, the vault's own table is not. Held while vault 1 opens.
    v0.query_one("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&r1])
        .unwrap();
    assert_eq!(
        try_sql(
            &mut v0,
            &format!("BEGIN; LOCK TABLE {r1}.holder IN EXCLUSIVE MODE NOWAIT")
        ),
        Err(denied.to_owned())
    );
    try_sql(&mut v0, "ROLLBACK").unwrap();
    assert!(
        doctor_level(&op, &dirs[1], "records-engine").contains("records cluster"),
        "vault 1 did not open while another vault's role held its old lock"
    );
    // The provider's operator reads no vault's records.
    let mut p = as_provider_in_records(&provider_cfg);
    assert_eq!(
        try_sql(&mut p, &format!("SELECT * FROM {r0}.rows")),
        Err(denied.to_owned())
    );
    the_audit_trails_are_append_only_to_every_vault_role(&mut v0, &mut p, &ids);
}

/// The hosted vaults' audit trails are on the records cluster. Vault 0's
/// own role (what the vault host holds) cannot change, remove, reorder or
/// fork its own trail, and cannot read or write vault 1's; the operator
/// reaches neither. Each trail reads back the same after every attempt.
fn the_audit_trails_are_append_only_to_every_vault_role(
    v0: &mut postgres::Client,
    operator: &mut postgres::Client,
    ids: &[String],
) {
    let denied = "42501";
    let stale = "40001";
    let trail = |c: &mut postgres::Client, id: &str| -> Vec<(i64, Vec<u8>)> {
        c.query(
            "SELECT seq, line FROM pivault_audit.events($1::text::uuid, 1, 1000000)",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let own = trail(v0, &ids[0]);
    assert!(
        own.len() >= 3,
        "vault 0's trail is on the cluster: {}",
        own.len()
    );
    let (id0, id1) = (&ids[0], &ids[1]);
    for (attack, code) in [
        ("SELECT * FROM pivault_audit.events".to_owned(), denied),
        ("DELETE FROM pivault_audit.events".to_owned(), denied),
        (
            "UPDATE pivault_audit.events SET line = line".to_owned(),
            denied,
        ),
        ("TRUNCATE pivault_audit.checkpoints".to_owned(), denied),
        ("DROP TABLE pivault_audit.events".to_owned(), denied),
        (
            "UPDATE pivault_audit.trails SET head = 0".to_owned(),
            denied,
        ),
        (
            format!("INSERT INTO pivault_audit.events VALUES ('{id0}', 999999, 'x')"),
            denied,
        ),
        (format!("SELECT pivault_audit.own_trail('{id0}')"), denied),
        // Its own trail through the functions: event 1 rewritten, an
        // event after a gap, a checkpoint naming a made-up head.
        (
            format!("SELECT pivault_audit.append('{id0}', 1, ARRAY['forged'::bytea])"),
            stale,
        ),
        (
            format!("SELECT pivault_audit.append('{id0}', 999999, ARRAY['forged'::bytea])"),
            stale,
        ),
        (
            format!(
                "SELECT pivault_audit.add_checkpoint('{id0}', {},                  convert_to('{{\"seq\":{},\"head\":\"{}\"}}', 'UTF8'))",
                own.len(),
                own.len(),
                "0".repeat(64)
            ),
            stale,
        ),
        // Vault 1's trail: not to read, not to write.
        (
            format!("SELECT * FROM pivault_audit.events('{id1}', 1, 10)"),
            denied,
        ),
        (
            format!("SELECT pivault_audit.append('{id1}', 1000, ARRAY['x'::bytea])"),
            denied,
        ),
    ] {
        assert_eq!(try_sql(v0, &attack), Err(code.to_owned()), "{attack}");
    }
    // The next number, but lines that do not chain to the head: one not
    // shaped as an event, one naming a made-up hash, and one whose hash is
    // right for a chain that starts afresh here (32 zero bytes before it),
    // as if the trail began again. Each is refused by the chain check, not
    // by the number (the head is the last event read).
    assert_eq!(
        own.last().map(|e| e.0),
        Some(own.len() as i64),
        "the trail read whole"
    );
    let made = "convert_to('{\"a\":1}', 'UTF8')";
    for line in [
        "'forged'::bytea".to_owned(),
        "convert_to('{\"a\":1} ' || repeat('ab', 32), 'UTF8')".to_owned(),
        format!(
            "{made} || ' '::bytea || convert_to(encode(sha256('pivault-audit-v1'::bytea || decode(repeat('00', 32), 'hex') || {made}), 'hex'), 'UTF8')"
        ),
    ] {
        let sql = format!(
            "SELECT pivault_audit.append('{id0}', {}, ARRAY[{line}])",
            own.len() + 1
        );
        match v0.batch_execute(&sql) {
            Err(e) => {
                let d = e.as_db_error().expect("refused by the database");
                assert_eq!(d.code().code(), stale, "{sql}");
                assert!(
                    d.message().contains("does not chain"),
                    "{sql}: {}",
                    d.message()
                );
            }
            Ok(()) => panic!("{sql}: appended"),
        }
    }
    assert_eq!(
        try_sql(
            operator,
            &format!("SELECT * FROM pivault_audit.events('{id0}', 1, 10)")
        ),
        Err(denied.to_owned()),
        "the operator reads no trail"
    );
    assert_eq!(trail(v0, &ids[0]), own, "vault 0's trail unchanged");
}

/// The provider's role, connected to the records database.
fn as_provider_in_records(provider_cfg: &PgConfig) -> postgres::Client {
    provider::connect_primary(&PgConfig {
        database: "pivault_records".into(),
        ..provider_cfg.clone()
    })
    .unwrap()
}

/// A provider's other machine for a hosting process: a directory with the
/// same certificate and key as `srv`'s (clients trust one certificate,
/// whichever machine answers).
fn another_machine(srv: &crate::server::Server) -> tempfile::TempDir {
    let m = tempfile::tempdir().expect("tempdir");
    for f in ["server.crt", "server.key"] {
        std::fs::copy(srv.cert.with_file_name(f), m.path().join(f)).expect("copy");
    }
    m
}

/// Each vault's audit trail verifies, as its auditor asks `views`' server.
fn trails_verify(views: &[&crate::server::Server]) {
    for v in views {
        let verify = v.call("GET", "/v1/audit/verify", Some(&v.token("auditor")), None);
        assert_eq!(verify.json()["ok"], true, "{}", verify.text);
    }
}

/// [`two_businesses_hosted`], both served by a first hosting process: the
/// vault IDs, the hosting file, the process.
fn two_businesses_held(work: &Path) -> (String, String, PathBuf, crate::server::Server) {
    let (id_a, id_b, hosting) = two_businesses_hosted(work);
    let first = tempfile::tempdir().expect("tempdir");
    let (one, _, _) = crate::server::spawn_hosting(first, &hosting, &[])
        .hosting(2, std::time::Duration::from_secs(120));
    (id_a, id_b, hosting, one)
}

/// A hosting file's line: the vault `dir` beside the file, its passphrase
/// file `dir.pass`, any free port on loopback.
fn hosting_line(dir: &str) -> Value {
    serde_json::json!({ "dir": dir, "passphrase_file": format!("{dir}.pass"), "bind": "127.0.0.1:0" })
}

/// Two businesses in `work`, A and B, each with its own passphrase and its
/// keys and records on the cluster, and a hosting file naming both: their
/// vault IDs and the file.
fn two_businesses_hosted(work: &Path) -> (String, String, PathBuf) {
    use crate::hosting::{PASSPHRASE_B, business_on_clusters};
    let id_a = business_on_clusters(&work.join("a"), None);
    let id_b = business_on_clusters(&work.join("b"), Some(PASSPHRASE_B));
    write_private(&work.join("a.pass"), common::PASSPHRASE.as_bytes());
    write_private(&work.join("b.pass"), PASSPHRASE_B.as_bytes());
    let hosting = work.join("hosting.json");
    std::fs::write(
        &hosting,
        serde_json::json!({ "vaults": [hosting_line("a"), hosting_line("b")] }).to_string(),
    )
    .expect("hosting file");
    (id_a, id_b, hosting)
}

/// One `pivault-server --hosting` process serving two businesses whose keys
/// and records are on the cluster: their clerks write at once while one
/// disposes of a record (certified with every member verified); nothing
/// crosses; a vault removed at SIGHUP (sent twice at once) lets go of its
/// lock on the cluster, so it opens elsewhere at once, with its records.
#[test]
fn a_hosting_process_serves_vaults_on_the_cluster_and_a_removed_one_lets_go_of_its_lock() {
    use std::time::Duration;

    use crate::hosting::{
        PASSPHRASE_B, a_is_not_reached_at_b, base_of, hup, live_count, put, reopened,
    };
    use crate::server;
    use serde_json::json;

    let _one = crate::cluster::serial();
    let _c = crate::cluster::cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let (id_a, id_b, hosting) = two_businesses_hosted(work);
    let (srv, bases, _) =
        server::spawn_hosting(tempfile::tempdir().expect("tempdir"), &hosting, &[])
            .hosting(2, Duration::from_secs(120));
    let base_of = |id: &str| base_of(&bases, id);
    let (a, b) = (srv.view(&base_of(&id_a)), srv.view(&base_of(&id_b)));
    let (clerk_a, clerk_b) = (a.token("clerk"), b.token("clerk"));
    let (officer_a, officer_b) = (a.token("officer"), b.token("officer"));

    let doomed = put(&a, &clerk_a, "Doomed");
    let (kept_a, kept_b, disposal) = std::thread::scope(|s| {
        let writer = |srv, clerk, who: &'static str| {
            s.spawn(move || {
                ["Ada", "Bo", "Cy", "Di", "Ed", "Flo"]
                    .iter()
                    .map(|given| put(srv, clerk, &format!("{given} {who}")))
                    .collect::<Vec<_>>()
            })
        };
        let (wa, wb) = (writer(&a, &clerk_a, "Alpha"), writer(&b, &clerk_b, "Beta"));
        let d = a.call(
            "POST",
            "/v1/disposals",
            Some(&officer_a),
            Some(&json!({ "scope": "record", "record": doomed, "data_owner": "Quimby Hardware" })),
        );
        let (mut ka, mut kb) = (wa.join().expect("A's clerk"), wb.join().expect("B's clerk"));
        ka.sort();
        kb.sort();
        (ka, kb, d)
    });
    assert_eq!(disposal.status, 200, "A's disposal: {disposal:?}");
    let cert = disposal.json()["certificate_id"]
        .as_str()
        .expect("certificate")
        .to_owned();
    let doc = a.call(
        "GET",
        &format!("/v1/certificates/{cert}"),
        Some(&officer_a),
        None,
    );
    assert_eq!(doc.status, 200, "{doc:?}");
    assert!(
        doc.text.contains("\"verified\":true") && !doc.text.contains("\"verified\":false"),
        "every member verified: {}",
        doc.text
    );
    assert_eq!(
        a.live_ids(&officer_a),
        kept_a,
        "A: its clerk's puts, less the disposed"
    );
    assert_eq!(
        b.live_ids(&officer_b),
        kept_b,
        "B: exactly its clerk's puts"
    );
    a_is_not_reached_at_b(&b, &clerk_a, &officer_b, &kept_a[0]);

    // B removed; the signal sent twice at once. Reloads run one at a time:
    // B is stopped and closed once, and A serves throughout.
    std::fs::write(
        &hosting,
        json!({ "vaults": [hosting_line("a")] }).to_string(),
    )
    .expect("hosting file");
    hup(&srv);
    hup(&srv);
    srv.wait_stderr(
        &[
            &format!("vault {id_b}: stopped and closed (removed from the hosting file)"),
            "reloaded",
        ],
        Duration::from_secs(60),
    );
    // Let a second reload, if the signals were not merged, finish: it
    // finds nothing to change (B is not stopped twice).
    std::thread::sleep(Duration::from_secs(2));
    let said = srv.stderr_lines();
    assert!(
        !said.iter().any(|l| l.contains(&format!("vault {id_b}"))),
        "{said:?}"
    );
    assert!(
        said.iter()
            .filter(|l| l.contains("reloaded"))
            .all(|l| l.contains("serving 1 of 1 vault(s)")),
        "{said:?}"
    );
    // B's lock on the cluster went with it: B opens here at once.
    let b_here = reopened(&work.join("b"), PASSPHRASE_B);
    assert_eq!(
        live_count(&b_here),
        kept_b.len(),
        "B's records, read elsewhere"
    );
    b_here.close().expect("close B");
    put(&a, &clerk_a, "After");
    let v = a.call("GET", "/v1/audit/verify", Some(&a.token("auditor")), None);
    assert_eq!(v.json()["ok"], true, "A's trail: {}", v.text);
    drop((a, b));
    let (status, _, _keep) = srv.stop();
    assert!(status.success(), "a clean stop");
    reopened(&work.join("a"), common::PASSPHRASE)
        .close()
        .expect("close A");
}

/// A provider's two machines over the same vaults on the cluster: two
/// `pivault-server --hosting` processes, the second `--standby` (here two
/// hosting files naming the same directories at other ports, the servers
/// sharing one certificate). The second forwards each vault's requests to
/// the first while both vaults are written through it; killed, the first's
/// vaults are taken over by the second, on the addresses it stood by on,
/// with every acknowledged record and the clients' tokens; the first,
/// restarted `--standby`, forwards to the second. Nothing crosses between
/// the vaults at any point, and both trails verify.
#[test]
fn a_second_hosting_process_stands_by_for_every_vault_and_takes_them_over_when_the_first_is_killed()
{
    use std::time::Duration;

    use crate::hosting::{a_is_not_reached_at_b, base_of, put};
    use crate::server;

    let _one = crate::cluster::serial();
    let _c = crate::cluster::cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let (id_a, id_b, hosting, one) = two_businesses_held(work);
    // The second machine: the same certificate and key.
    let mut two = server::spawn_hosting(another_machine(&one), &hosting, &["--standby"]);
    let standing = two.hosting_standing_by(2, Duration::from_secs(120));
    // The cluster refusing the vaults' role for a while: the second waits
    // it out for each vault instead of giving it up.
    let refused = crate::server_standby::LoginRefused::now(&crate::cluster::cluster());
    // Said once for each vault, in either order.
    let mut waiting: Vec<String> = (0..2)
        .map(|_| two.wait_line("cannot reach its cluster now", Duration::from_secs(30)))
        .collect();
    waiting.sort();
    for (line, dir) in waiting.iter().zip(["a", "b"]) {
        let vault = work.join(dir).display().to_string();
        assert!(
            line.contains(&format!("standing by for the vault {vault}: ")),
            "{waiting:?}"
        );
    }
    drop(refused);
    let (a, b) = (
        one.view(&base_of(&standing, &id_a)),
        one.view(&base_of(&standing, &id_b)),
    );
    // Signed in and written through the standby: each request relayed.
    let (clerk_a, clerk_b) = (a.token("clerk"), b.token("clerk"));
    let (officer_a, officer_b) = (a.token("officer"), b.token("officer"));
    let mut kept_a: Vec<String> = ["Ada", "Bo"]
        .iter()
        .map(|g| put(&a, &clerk_a, &format!("{g} Alpha")))
        .collect();
    let mut kept_b: Vec<String> = ["Cy", "Di", "Ed"]
        .iter()
        .map(|g| put(&b, &clerk_b, &format!("{g} Beta")))
        .collect();
    let relayed = a.call("GET", "/v1/records", Some(&clerk_a), None);
    assert!(
        relayed.via.contains("pivault-standby"),
        "relayed by the standby: {relayed:?}"
    );
    a_is_not_reached_at_b(&b, &clerk_a, &officer_b, &kept_a[0]);

    // The first machine dies: the second takes both vaults over, on the
    // addresses it stood by on.
    let (_, _first_dir) = one.kill();
    let (two, served, said) = two.hosting(2, Duration::from_secs(120));
    for (id, base) in &standing {
        assert_eq!(&base_of(&served, id), base, "served where it stood by");
    }
    assert_eq!(
        said.iter().filter(|l| l.contains(") taken over")).count(),
        2,
        "{said:?}"
    );
    kept_a.push(put(&a, &clerk_a, "Flo Alpha"));
    kept_b.push(put(&b, &clerk_b, "Gus Beta"));
    kept_a.sort();
    kept_b.sort();
    assert_eq!(a.live_ids(&officer_a), kept_a, "A: every acknowledged put");
    assert_eq!(b.live_ids(&officer_b), kept_b, "B: every acknowledged put");
    a_is_not_reached_at_b(&b, &clerk_a, &officer_b, &kept_a[0]);

    // The first machine back, standing by: it forwards to the second.
    let mut again = server::spawn_hosting(another_machine(&two), &hosting, &["--standby"]);
    let standing = again.hosting_standing_by(2, Duration::from_secs(120));
    // A's record read through a standby, which relays it.
    let read_relayed = |standby: &server::Server, record: &str| {
        let relayed = standby.call(
            "GET",
            &format!("/v1/records/{record}"),
            Some(&clerk_a),
            None,
        );
        assert_eq!(relayed.status, 200, "{relayed:?}");
        assert!(
            relayed.via.contains("pivault-standby"),
            "relayed: {relayed:?}"
        );
    };
    let a_again = two.view(&base_of(&standing, &id_a));
    read_relayed(&a_again, &kept_a[0]);
    let b_again = two.view(&base_of(&standing, &id_b));
    a_is_not_reached_at_b(&b_again, &clerk_a, &officer_b, &kept_a[0]);
    trails_verify(&[&a, &b]);
    drop((a, b, a_again, b_again));

    // The second machine hangs past the lease: the first takes both vaults
    // over. Running again, the second finds them taken, and instead of
    // ending it stands by for each again, forwarding to the first.
    let signal = crate::server_standby::signal;
    signal(two.pid(), "-STOP");
    let (again, _, _) = again.hosting(2, Duration::from_secs(120));
    signal(two.pid(), "-CONT");
    let stood = two.wait_stderr(
        &[
            &format!(
                "vault {id_a} ({}) standing by on https://",
                work.join("a").display()
            ),
            &format!(
                "vault {id_b} ({}) standing by on https://",
                work.join("b").display()
            ),
        ],
        Duration::from_secs(120),
    );
    let at = |line: &str| {
        let addr = line
            .split("standing by on https://")
            .nth(1)
            .and_then(|r| r.split(": forwarding").next())
            .expect("an address");
        two.view(&format!("https://{addr}"))
    };
    let (a, b) = (at(&stood[0]), at(&stood[1]));
    read_relayed(&a, &kept_a[1]);
    a_is_not_reached_at_b(&b, &clerk_a, &officer_b, &kept_a[0]);
    kept_b.push(put(&b, &clerk_b, "Hal Beta"));
    kept_b.sort();
    assert_eq!(b.live_ids(&officer_b), kept_b, "B: every acknowledged put");
    trails_verify(&[&a, &b]);
    drop((a, b));
    let (status, _, _keep) = two.stop();
    assert!(status.success(), "the standby stops cleanly");
    let (status, _, _keep) = again.stop();
    assert!(status.success(), "the holder stops cleanly");
}

/// Two hosting standbys (a provider's second and third machines) race for
/// the vaults of a holder that is killed while clerks write through both:
/// each vault is taken over by exactly one of them, the other stands by
/// for it and relays to the winner, and no acknowledged put is lost.
/// The single-vault race is `server_standby::two_standbys_racing_for_a_killed_server…`;
/// here each vault's thread of each process races on its own.
#[test]
fn two_hosting_standbys_racing_for_a_killed_holders_vaults_take_each_over_once_and_lose_nothing() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use crate::hosting::{a_is_not_reached_at_b, base_of};
    use crate::server;

    let _one = crate::cluster::serial();
    let _c = crate::cluster::cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let (id_a, id_b, hosting, one) = two_businesses_held(work);

    let mut two = server::spawn_hosting(another_machine(&one), &hosting, &["--standby"]);
    let at_two = two.hosting_standing_by(2, Duration::from_secs(120));
    let mut three = server::spawn_hosting(another_machine(&one), &hosting, &["--standby"]);
    let at_three = three.hosting_standing_by(2, Duration::from_secs(120));
    // A written through the second machine, B through the third.
    let (a, b) = (
        one.view(&base_of(&at_two, &id_a)),
        one.view(&base_of(&at_three, &id_b)),
    );
    let (clerk_a, clerk_b) = (a.token("clerk"), b.token("clerk"));
    let (officer_a, officer_b) = (a.token("officer"), b.token("officer"));
    let stop = AtomicBool::new(false);
    // Puts until `stop`: the IDs acknowledged (201), and how many failed
    // (refused, or the exchange broken while the vault changed hands).
    let write = |v: &server::Server, clerk: &str, family: &str| {
        let (mut acked, mut failed) = (Vec::new(), 0u32);
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let body = serde_json::json!({ "collection": common::CUSTOMERS, "data": {
                "given_name": format!("Racer{}", "x".repeat(n % 7 + 1)), "family_name": family } });
            match catch_unwind(AssertUnwindSafe(|| {
                v.call("POST", "/v1/records", Some(clerk), Some(&body))
            })) {
                Ok(r) if r.status == 201 => {
                    acked.push(r.json()["record_id"].as_str().expect("id").to_owned());
                }
                _ => {
                    failed += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        (acked, failed)
    };
    let taken = |lines: &[String], id: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("vault {id} (")) && l.contains(") taken over"))
            .count()
    };
    let ((mut acked_a, failed_a), (mut acked_b, failed_b), said_two, said_three) =
        std::thread::scope(|s| {
            let wa = s.spawn(|| write(&a, &clerk_a, "Alpha"));
            let wb = s.spawn(|| write(&b, &clerk_b, "Beta"));
            std::thread::sleep(Duration::from_millis(1500));
            let (_, _first_dir) = one.kill();
            // Until each vault is served again by one of the two.
            let deadline = Instant::now() + Duration::from_secs(120);
            let (said_two, said_three) = loop {
                let (s2, s3) = (two.printed_so_far(), three.printed_so_far());
                let both = [s2.clone(), s3.clone()].concat();
                if taken(&both, &id_a) >= 1 && taken(&both, &id_b) >= 1 {
                    break (s2, s3);
                }
                assert!(
                    Instant::now() < deadline,
                    "the vaults were not taken over: {:?}",
                    both.iter()
                        .filter(|l| !l.contains(": access "))
                        .collect::<Vec<_>>()
                );
                std::thread::sleep(Duration::from_millis(200));
            };
            // Clerks go on writing through the same addresses a while.
            std::thread::sleep(Duration::from_secs(3));
            stop.store(true, Ordering::SeqCst);
            (
                wa.join().expect("A's clerk"),
                wb.join().expect("B's clerk"),
                said_two,
                said_three,
            )
        });
    // A few seconds more: a second takeover of the same vault would show.
    std::thread::sleep(Duration::from_secs(3));
    // Everything each printed (the access log's lines left out).
    let said = |p: &mut server::Starting| -> Vec<String> {
        p.printed_so_far()
            .into_iter()
            .filter(|l| !l.contains(": access "))
            .collect()
    };
    drop((said_two, said_three));
    let (said_two, said_three) = (said(&mut two), said(&mut three));
    for id in [&id_a, &id_b] {
        assert_eq!(
            taken(&said_two, id) + taken(&said_three, id),
            1,
            "vault {id} taken over once: {said_two:?} {said_three:?}"
        );
    }
    assert!(two.running() && three.running(), "both machines still run");
    assert!(
        acked_a.len() > 5 && acked_b.len() > 5,
        "writes acknowledged: A {} (failed {failed_a}), B {} (failed {failed_b})",
        acked_a.len(),
        acked_b.len()
    );
    // Every acknowledged put reads back, through the addresses written to
    // (the winner serves there, or the loser relays to it).
    let (live_a, live_b) = (a.live_ids(&officer_a), b.live_ids(&officer_b));
    acked_a.retain(|id| !live_a.contains(id));
    acked_b.retain(|id| !live_b.contains(id));
    assert_eq!(acked_a, Vec::<String>::new(), "A: acknowledged puts lost");
    assert_eq!(acked_b, Vec::<String>::new(), "B: acknowledged puts lost");
    a_is_not_reached_at_b(&b, &clerk_a, &officer_b, &live_a[0]);
    trails_verify(&[&a, &b]);
    let winner = |id: &str| {
        if taken(&said_two, id) == 1 {
            "second"
        } else {
            "third"
        }
    };
    eprintln!(
        "acknowledged A {} B {}; failed while changing hands A {failed_a} B {failed_b}; \
         A taken by the {} machine, B by the {}",
        live_a.len(),
        live_b.len(),
        winner(&id_a),
        winner(&id_b)
    );
    drop((a, b));
    // A machine that took a vault over serves it; it stops cleanly (one
    // that only stands by is killed with the test).
    for (p, said) in [(two, &said_two), (three, &said_three)] {
        if said.iter().any(|l| l.contains(") taken over")) {
            let (status, _, _keep) = p.listening(Duration::from_secs(5)).stop();
            assert!(status.success(), "stops cleanly");
        }
    }
}

/// A hosting standby's file edited at SIGHUP as the holder dies: vault B
/// taken out of the file the moment the holder is killed (the signal and
/// the kill at once) is not taken over by the standby, which takes A over
/// alone and keeps nothing of B open (nobody holds B: it opens elsewhere);
/// B put back at the next SIGHUP is taken over and served, with its
/// records. The file edited, a standby never holds a vault it was told to
/// leave, nor leaves one it still stands by for.
#[test]
fn a_vault_taken_out_of_a_standbys_file_as_the_holder_dies_is_not_taken_over_until_put_back() {
    use std::time::Duration;

    use crate::hosting::{PASSPHRASE_B, base_of, put, reopened};
    use crate::server;

    let _one = crate::cluster::serial();
    let _c = crate::cluster::cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let (id_a, id_b, hosting, one) = two_businesses_held(work);
    let both = std::fs::read(&hosting).expect("hosting file");
    let mut two = server::spawn_hosting(another_machine(&one), &hosting, &["--standby"]);
    let standing = two.hosting_standing_by(2, Duration::from_secs(120));
    let (a, b) = (
        one.view(&base_of(&standing, &id_a)),
        one.view(&base_of(&standing, &id_b)),
    );
    let (clerk_a, clerk_b) = (a.token("clerk"), b.token("clerk"));
    let mut kept_a = vec![put(&a, &clerk_a, "Ada Alpha")];
    let kept_b = vec![put(&b, &clerk_b, "Bo Beta")];

    // B out of the file; SIGHUP to the standby and SIGKILL to the holder at once.
    std::fs::write(
        &hosting,
        serde_json::json!({ "vaults": [hosting_line("a")] }).to_string(),
    )
    .expect("hosting file");
    let (pid_two, pid_one) = (two.pid(), one.pid());
    std::thread::scope(|s| {
        for (sig, pid) in [("-HUP", pid_two), ("-KILL", pid_one)] {
            s.spawn(move || crate::server_standby::signal(pid, sig));
        }
    });
    let (_, _first_dir) = one.kill();
    two.wait_line(
        &format!("vault {id_a} ({}) taken over", work.join("a").display()),
        Duration::from_secs(120),
    );
    // A few seconds on: B is not taken over, and nobody holds it.
    std::thread::sleep(Duration::from_secs(3));
    let said: Vec<String> = two
        .printed_so_far()
        .into_iter()
        .filter(|l| !l.contains(": access "))
        .collect();
    assert!(
        !said
            .iter()
            .any(|l| l.contains(&format!("vault {id_b} (")) && l.contains("taken over")),
        "{said:?}"
    );
    let left = format!(
        "no longer standing by for the vault {}",
        work.join("b").display()
    );
    assert!(said.iter().any(|l| l.contains(&left)), "{said:?}");
    let vault_b = work.join("b");
    reopened(&vault_b, PASSPHRASE_B)
        .close()
        .expect("B opens and closes elsewhere: nobody holds it");
    kept_a.push(put(&a, &clerk_a, "Cy Alpha"));
    kept_a.sort();
    assert_eq!(
        a.live_ids(&a.token("officer")),
        kept_a,
        "A: every acknowledged put"
    );

    // B put back: taken over (it is free) and served, with its record.
    std::fs::write(&hosting, &both).expect("hosting file");
    crate::server_standby::signal(two.pid(), "-HUP");
    let line = two.wait_line(
        &format!("vault {id_b} ({}) listening on https://", vault_b.display()),
        Duration::from_secs(60),
    );
    let port = line.rsplit(':').next().expect("port").trim().to_owned();
    let b_again = a.view(&format!("https://localhost:{port}"));
    assert_eq!(
        b_again.live_ids(&b_again.token("officer")),
        kept_b,
        "B: its record"
    );
    trails_verify(&[&a, &b_again]);
}
