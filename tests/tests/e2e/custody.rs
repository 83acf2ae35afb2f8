//! Custody (issue 10): staff never hold the vault passphrase. The custodian
//! unseals the vault once in `pivault-server`; a clerk on the same machine
//! uses `pivault` with their own username and password through the
//! server's local Unix-domain socket, and the audit trail names both the
//! clerk's OS user (from the kernel's peer credentials) and vault user.
//!
//! When the tests run as root, the clerk really is another OS user
//! (`nobody`, 65534) who cannot read the passphrase file; otherwise the
//! clerk runs as the test's own user and the socket's mode is what denies.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::cli::{self, Run};
use crate::common::{CUSTOMERS, USERS};
use crate::server;

/// The OS user the clerk runs as: `nobody` under root, else ourselves.
fn clerk_uid() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    (me == 0).then_some((65534, 65534))
}

/// A directory the clerk may enter and write (their home, in effect).
fn clerk_dir(clerk: Option<(u32, u32)>) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some((uid, gid)) = clerk {
        std::os::unix::fs::chown(d.path(), Some(uid), Some(gid)).unwrap();
    }
    d
}

/// Writes a file the clerk owns, mode 0600.
fn clerk_file(dir: &Path, name: &str, text: &str, clerk: Option<(u32, u32)>) -> PathBuf {
    let p = dir.join(name);
    cli::write_private(&p, text.as_bytes());
    if let Some((uid, gid)) = clerk {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    p
}

/// The `pivault` binary where the clerk's OS user can run it: the build
/// directory may sit under a home only its owner enters (`/root`), so the
/// binary is linked (or copied) into a directory everyone may enter, which
/// is removed when the returned guard drops.
fn clerk_binary(clerk: Option<(u32, u32)>) -> (Option<tempfile::TempDir>, PathBuf) {
    if clerk.is_none() {
        return (None, cli::pivault_bin());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = dir.path().join("pivault");
    let from = cli::pivault_bin();
    if std::fs::hard_link(&from, &to).is_err() {
        std::fs::copy(&from, &to).expect("copy pivault for the clerk");
    }
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    (Some(dir), to)
}

/// `pivault ARGS` as the clerk: their OS user, their password file, the
/// socket, and no passphrase anywhere in the environment.
fn as_clerk(
    bin: &Path,
    home: &Path,
    socket: &Path,
    clerk: Option<(u32, u32)>,
    env: &[(&str, &Path)],
    args: &[&str],
) -> Run {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("PIVAULT_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home)
        .env("PIVAULT_USER", "clerk")
        .env("PIVAULT_PASSWORD_FILE", home.join("password"))
        .env("PIVAULT_SOCKET", socket)
        .env("PIVAULT_TOKEN_FILE", home.join("token"))
        .current_dir(home)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        if v.as_os_str().is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    if let Some((uid, gid)) = clerk {
        c.uid(uid).gid(gid);
    }
    let out = c.output().expect("run pivault as the clerk");
    Run::from_output(args.join(" "), &out)
}

#[test]
fn a_clerk_without_the_passphrase_works_through_the_socket_and_is_audited_by_os_user() {
    let clerk = clerk_uid();
    let (_bin_dir, bin) = clerk_binary(clerk);
    // The socket lives in a directory the clerk may enter; its group is the
    // clerk's group, mode 0660: the clerk connects as a group member.
    let run_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(run_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = run_dir.path().join("pivault.sock");
    let group = clerk.map(|(_, g)| g.to_string());
    let mut extra = vec!["--logins-per-minute", "10000", "--socket"];
    extra.push(socket.to_str().unwrap());
    if let Some(g) = &group {
        extra.extend(["--socket-group", g.as_str()]);
    }
    let srv = server::start(&extra);
    let mode = std::fs::metadata(&socket)
        .expect("socket created")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "default socket mode");

    let home = clerk_dir(clerk);
    let home = home.path();
    let (_, _, clerk_pw) = USERS.iter().find(|(u, _, _)| *u == "clerk").unwrap();
    clerk_file(home, "password", clerk_pw, clerk);
    let body = json!({ "given_name": "Ada", "family_name": "Quimby", "ssn": "123-45-6789",
                       "card_number": "4111111111111111" });
    let rec = clerk_file(home, "rec.json", &body.to_string(), clerk);
    let mut changed = body.clone();
    changed["given_name"] = json!("Adah");
    let rec2 = clerk_file(home, "rec2.json", &changed.to_string(), clerk);

    // The clerk cannot read the custodian's passphrase file (when the test
    // can make the clerk another OS user): opening the vault directly fails.
    let pass = srv.vault_dir.parent().unwrap().join("passphrase");
    if clerk.is_some() {
        let r = as_clerk(
            &bin,
            home,
            &socket,
            clerk,
            &[
                ("PIVAULT_PASSPHRASE_FILE", &pass),
                ("PIVAULT_DIR", &srv.vault_dir),
            ],
            &["record", "list"],
        );
        assert_ne!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("passphrase file"), "{}", r.stderr);
    }

    // Store, read, update: no passphrase, no TLS set-up.
    let put = as_clerk(
        &bin,
        home,
        &socket,
        clerk,
        &[],
        &[
            "--json",
            "record",
            "put",
            CUSTOMERS,
            "--data",
            rec.to_str().unwrap(),
        ],
    );
    put.ok();
    let id = put.json()["record_id"]
        .as_str()
        .expect("record_id")
        .to_owned();
    let get = as_clerk(
        &bin,
        home,
        &socket,
        clerk,
        &[],
        &["--json", "record", "get", &id],
    );
    get.ok();
    assert_eq!(get.json()["fields"]["given_name"], "Ada", "{}", get.stdout);
    assert!(
        !get.stdout.contains("123-45-6789"),
        "a clerk sees the SSN masked"
    );
    as_clerk(
        &bin,
        home,
        &socket,
        clerk,
        &[],
        &[
            "--json",
            "record",
            "update",
            &id,
            "--data",
            rec2.to_str().unwrap(),
        ],
    )
    .ok();
    // A login token (0600, the clerk's) makes later commands password-free.
    as_clerk(&bin, home, &socket, clerk, &[], &["login"]).ok();
    let who = as_clerk(&bin, home, &socket, clerk, &[], &["--json", "whoami"]);
    who.ok();
    assert_eq!(who.json()["username"], "clerk", "{}", who.stdout);
    assert_eq!(who.json()["role"], "clerk", "{}", who.stdout);
    let get = as_clerk(
        &bin,
        home,
        &socket,
        clerk,
        &[("PIVAULT_PASSWORD_FILE", &home.join("no-such-password"))],
        &["--json", "record", "get", &id],
    );
    get.ok();
    assert_eq!(get.json()["fields"]["given_name"], "Adah", "{}", get.stdout);
    // A stale token (expired, revoked): with a password file the command
    // logs in afresh and runs once more; without one, it says what to do.
    clerk_file(home, "token", "not-a-valid-token", clerk);
    as_clerk(
        &bin,
        home,
        &socket,
        clerk,
        &[],
        &["--json", "record", "get", &id],
    )
    .ok();
    let r = as_clerk(
        &bin,
        home,
        &socket,
        clerk,
        &[("PIVAULT_PASSWORD_FILE", Path::new(""))],
        &["--json", "record", "get", &id],
    );
    r.code(4);
    assert!(
        r.stderr.contains("run `pivault login` again"),
        "{}",
        r.stderr
    );
    as_clerk(&bin, home, &socket, clerk, &[], &["login"]).ok();

    // The audit trail names the OS user (from the kernel) and the vault user.
    let token = srv.token("auditor");
    let a = srv.call(
        "GET",
        "/v1/audit/events?action=record.create",
        Some(&token),
        None,
    );
    assert_eq!(a.status, 200, "{a:?}");
    let events: Vec<Value> = a.json()["items"].as_array().cloned().unwrap_or_default();
    let put_event = events
        .iter()
        .find(|e| {
            e["targets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == id.as_str()))
        })
        .unwrap_or_else(|| panic!("no record.create event for {id}: {events:?}"));
    assert_eq!(put_event["channel"], "local", "{put_event}");
    let uid = clerk.map_or_else(
        || {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").unwrap().uid()
        },
        |(u, _)| u,
    );
    let source = put_event["source"].as_str().unwrap_or_default();
    assert!(
        source.starts_with(&format!("uid={uid}")),
        "OS user in {put_event}"
    );
    if clerk.is_some() {
        assert!(source.contains("(nobody)"), "OS user name in {put_event}");
    }
    let clerk_id = srv
        .call("GET", "/v1/users", Some(&srv.token("admin")), None)
        .json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "clerk")
        .map(|u| u["user_id"].clone())
        .expect("clerk listed");
    assert_eq!(put_event["actor"], clerk_id, "vault user in {put_event}");

    // The server's access log: one line per request, route templates and
    // IDs only, the OS user of socket clients; no record ID, no value.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = srv.stderr_lines();
    let access: Vec<&String> = log.iter().filter(|l| l.contains(" access ")).collect();
    assert!(
        access.iter().any(|l| l.contains("GET /v1/records/{id} 200")
            && l.contains(&format!("local uid={uid}"))
            && l.contains(&format!("user={}", clerk_id.as_str().unwrap()))),
        "{access:#?}"
    );
    assert!(
        log.iter().all(|l| !l.contains(&id) && !l.contains("Ada")),
        "{log:#?}"
    );

    // Take the socket away from the clerk: the same command fails clearly
    // (exit 17, nothing done) and says what to do.
    let closed_mode = if clerk.is_some() { 0o600 } else { 0o000 };
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(closed_mode)).unwrap();
    let r = as_clerk(
        &bin,
        home,
        &socket,
        clerk,
        &[],
        &["--json", "record", "get", &id],
    );
    r.code(17);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);
    assert!(r.stderr.contains("group"), "{}", r.stderr);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();

    // A socket in a directory others may write (where anyone could have put
    // a fake server) is refused before the password is sent.
    let open_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let r = as_clerk(
        &bin,
        home,
        &open_dir.path().join("pivault.sock"),
        clerk,
        &[],
        &["record", "get", &id],
    );
    r.code(17);
    assert!(r.stderr.contains("writable by other users"), "{}", r.stderr);

    // No server at all: exit 17 and the way forward, for staff and custodian.
    let r = as_clerk(
        &bin,
        home,
        &run_dir.path().join("absent.sock"),
        clerk,
        &[],
        &["record", "get", &id],
    );
    r.code(17);
    assert!(r.stderr.contains("not running"), "{}", r.stderr);
    assert!(r.stderr.contains("PIVAULT_PASSPHRASE_FILE"), "{}", r.stderr);

    // A graceful stop removes the socket.
    let (status, _, _dir) = srv.stop();
    assert!(status.success());
    assert!(!socket.exists(), "the socket is removed at stop");
}

#[test]
fn a_second_server_does_not_take_over_a_live_socket_and_a_stale_one_is_replaced() {
    let run_dir = tempfile::tempdir().expect("tempdir");
    let socket = run_dir.path().join("pivault.sock");
    let s = socket.to_str().unwrap();
    let first = server::start(&["--socket", s, "--socket-mode", "0600"]);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second server on the same socket refuses to start.
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    crate::common::fast_vault(&vault_dir).vault.close().unwrap();
    let pass = dir.path().join("passphrase");
    cli::write_private(&pass, crate::common::PASSPHRASE.as_bytes());
    let out = Command::new(cli::pivault_bin().with_file_name("pivault-server"))
        .arg("--vault")
        .arg(&vault_dir)
        .args(["--bind", "127.0.0.1:0", "--socket", s])
        .env("PIVAULT_PASSPHRASE_FILE", &pass)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another pivault-server is listening"), "{err}");
    // A passphrase file open to others is refused before anything starts.
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(cli::pivault_bin().with_file_name("pivault-server"))
        .arg("--vault")
        .arg(&vault_dir)
        .args(["--bind", "127.0.0.1:0", "--no-socket"])
        .env("PIVAULT_PASSPHRASE_FILE", &pass)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    // The first server is still answering.
    assert_eq!(first.call("GET", "/healthz", None, None).status, 200);
    drop(first); // SIGKILL: the socket file stays behind, stale.
    assert!(socket.exists());
    let again = server::start(&["--socket", s]);
    assert_eq!(again.call("GET", "/healthz", None, None).status, 200);
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());
}

/// `--self-signed --tls-name` covers other names, so staff on another
/// machine can use HTTPS; a client using a name the certificate does not
/// cover is told so (exit 17), not "storage error".
#[test]
fn a_self_signed_certificate_covers_the_names_given_and_a_mismatch_is_named() {
    use std::io::BufRead;
    let start = |names: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let vault_dir = dir.path().join("vault");
        crate::common::fast_vault(&vault_dir).vault.close().unwrap();
        let pass = dir.path().join("passphrase");
        cli::write_private(&pass, crate::common::PASSPHRASE.as_bytes());
        let cert = dir.path().join("server.crt");
        let mut c = Command::new(cli::pivault_bin().with_file_name("pivault-server"));
        c.arg("--vault")
            .arg(&vault_dir)
            .args([
                "--bind",
                "127.0.0.2:0",
                "--no-socket",
                "--self-signed",
                "--tls-cert",
            ])
            .arg(&cert)
            .arg("--tls-key")
            .arg(dir.path().join("server.key"))
            .env("PIVAULT_PASSPHRASE_FILE", &pass)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for n in names {
            c.args(["--tls-name", n]);
        }
        let mut child = c.spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let l = lines
                .next()
                .expect("the server prints its address")
                .unwrap();
            if let Some(rest) = l.split("listening on ").nth(1) {
                break rest.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (child, dir, url, cert)
    };
    let whoami = |dir: &Path, url: &str, cert: &Path| {
        let pw = dir.join("clerk.pw");
        let (_, _, clerk_pw) = USERS.iter().find(|(u, _, _)| *u == "clerk").unwrap();
        cli::write_private(&pw, clerk_pw.as_bytes());
        let mut c = Command::new(cli::pivault_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("PIVAULT_") {
                c.env_remove(k);
            }
        }
        let out = c
            .args(["--json", "--user", "clerk", "--server", url, "--ca-cert"])
            .arg(cert)
            .arg("whoami")
            .env("PIVAULT_PASSWORD_FILE", &pw)
            .env("PIVAULT_TOKEN_FILE", dir.join("token"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Covered: the address is one of the --tls-name values.
    let (mut child, dir, url, cert) = start(&["127.0.0.2", "vault.shop.test"]);
    assert!(url.starts_with("https://127.0.0.2:"), "{url}");
    let (code, err) = whoami(dir.path(), &url, &cert);
    assert_eq!(code, Some(0), "{err}");
    let _ = child.kill();
    // Not covered: only localhost names, reached as 127.0.0.2.
    let (mut child, dir, url, cert) = start(&[]);
    let (code, err) = whoami(dir.path(), &url, &cert);
    assert_eq!(code, Some(17), "{err}");
    assert!(err.contains("does not name the host"), "{err}");
    assert!(err.contains("--tls-name"), "{err}");
    let _ = child.kill();
}
