//! Issue 11: profiles. `pivault login` remembers the server, the user and
//! the CA certificate in `~/.config/pivault/config.toml` (0600), so later
//! commands need none of PIVAULT_USER, PIVAULT_SERVER, PIVAULT_CA_CERT;
//! named profiles and `--profile`; flags still win. Against a hostile
//! insider: a profile file others may write is refused (it would choose
//! where your password goes). Under concurrent use: logins writing
//! different profiles at the same moment all survive.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cli::{self, Run};
use crate::common::USERS;
use crate::server;

const EXIT_USAGE: i32 = 2;

/// `pivault` with nothing but HOME (and the given extra variables): the
/// way a member of staff runs it after `login`.
fn run(home: &Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(cli::pivault_bin())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run pivault");
    Run::from_output(args.join(" "), &out)
}

fn password_file(dir: &Path, user: &str) -> PathBuf {
    let (_, _, pw) = USERS.iter().find(|(u, _, _)| *u == user).unwrap();
    let p = dir.join(format!("{user}.pw"));
    cli::write_private(&p, pw.as_bytes());
    p
}

#[test]
fn login_remembers_server_user_and_ca_and_later_commands_need_none() {
    let srv = server::start(&["--logins-per-minute", "10000"]);
    let home_dir = tempfile::tempdir().unwrap();
    let home = home_dir.path();
    let secrets = tempfile::tempdir().unwrap();
    let cert = srv.cert.to_str().unwrap().to_owned();
    for user in ["clerk", "officer", "auditor"] {
        password_file(secrets.path(), user);
    }
    let login = |user: &str, profile: Option<&str>| {
        let pw = secrets.path().join(format!("{user}.pw"));
        let mut args = vec![
            "--json",
            "--server",
            srv.base.as_str(),
            "--ca-cert",
            cert.as_str(),
            "--user",
            user,
            "--password-file",
            pw.to_str().unwrap(),
        ];
        if let Some(p) = profile {
            args.extend(["--profile", p]);
        }
        args.push("login");
        let r = run(home, &args);
        r.ok();
        r.json()
    };

    let first = login("clerk", None);
    assert_eq!(first["profile"], "default", "{first}");
    let config = home.join(".config/pivault/config.toml");
    assert_eq!(first["config_file"], config.to_str().unwrap());
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&srv.base) && text.contains("clerk"), "{text}");
    assert!(!text.contains("pvt_"), "no token in the profile file");

    // Later commands: HOME only.
    let me = run(home, &["--json", "whoami"]);
    me.ok();
    assert_eq!(me.json()["username"], "clerk", "{}", me.stdout);

    // A second, named profile; the current one stays.
    login("officer", Some("security"));
    let me = run(home, &["--json", "--profile", "security", "whoami"]);
    me.ok();
    assert_eq!(me.json()["username"], "officer");
    assert_eq!(run(home, &["--json", "whoami"]).json()["username"], "clerk");
    // A flag wins over the profile.
    let me = run(home, &["--json", "--user", "officer", "whoami"]);
    assert_eq!(me.json()["username"], "officer", "{}", me.stderr);
    let list = run(home, &["--json", "profile", "list"]);
    list.ok();
    let names: Vec<(String, bool)> = list.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["current"] == true))
        .collect();
    assert_eq!(
        names,
        vec![("default".into(), true), ("security".into(), false)]
    );
    run(home, &["profile", "use", "security"]).ok();
    assert_eq!(
        run(home, &["--json", "whoami"]).json()["username"],
        "officer"
    );
    let r = run(home, &["--json", "--profile", "nope", "whoami"]);
    r.code(EXIT_USAGE);
    assert!(r.stderr.contains("no profile nope"), "{}", r.stderr);

    // Concurrent logins into different profiles: every one survives.
    std::thread::scope(|s| {
        for n in 0..4 {
            let login = &login;
            s.spawn(move || login("auditor", Some(&format!("p{n}"))));
        }
    });
    let list = run(home, &["--json", "profile", "list"]).json();
    assert_eq!(list["items"].as_array().unwrap().len(), 6, "{list}");
    // A storm of concurrent rewrites (no server in the way to space them
    // out): 24 more profiles, removed by 24 processes at once. A lost
    // update would bring one back.
    let mut text = std::fs::read_to_string(&config).unwrap();
    for n in 0..24 {
        text.push_str(&format!("\n[profiles.x{n}]\nuser = \"clerk\"\n"));
    }
    std::fs::write(&config, text).unwrap();
    assert_eq!(
        run(home, &["--json", "profile", "list"]).json()["items"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    std::thread::scope(|s| {
        for n in 0..24 {
            s.spawn(move || {
                run(home, &["profile", "remove", &format!("x{n}")])
                    .ok()
                    .code
            });
        }
    });
    let list = run(home, &["--json", "profile", "list"]).json();
    assert_eq!(list["items"].as_array().unwrap().len(), 6, "{list}");

    // Insider: a profile file others may write is refused, whatever it says.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(&srv.base, "https://127.0.0.1:1");
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = run(home, &["--json", "whoami"]);
    r.code(EXIT_USAGE);
    assert!(
        r.stderr.contains("refusing the profile file"),
        "{}",
        r.stderr
    );
    drop(srv);
}
