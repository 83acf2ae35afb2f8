//! Profiles: `pivault login` remembers where and as whom you work (the
//! server or socket, your username, the CA certificate to trust), so later
//! commands need none of `PIVAULT_USER`, `PIVAULT_SERVER` or
//! `PIVAULT_CA_CERT`. Several named profiles (`--profile NAME`), one of
//! them current.
//!
//! The file is `$XDG_CONFIG_HOME/pivault/config.toml` (else
//! `~/.config/pivault/config.toml`), or `PIVAULT_CONFIG`. It holds no secret
//! (tokens live in their own 0600 files), but whoever can write it can
//! point your next login at a server of their choosing: so it is written
//! 0600 and refused, like ssh's `StrictModes`, when group or others may
//! read or write it. Comments and layout of a hand-edited file survive
//! (toml_edit). Concurrent logins serialise on a lock file, so two
//! profiles written at once both survive.
//!
//! ```toml
//! current = "shop"
//!
//! [profiles.shop]
//! server = "https://vault.shop.lan:8443"
//! user = "alice"
//! ca_cert = "/home/alice/.config/pivault/shop-ca.pem"
//! ```

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use toml_edit::{DocumentMut, Item, value};

/// The profile used when none is named and the file names no current one.
pub const DEFAULT_PROFILE: &str = "default";

/// What a profile remembers. Every member optional: flags and environment
/// variables given on a command always win over it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// `--server` URL.
    pub server: Option<String>,
    /// `--socket` path (when not the default one).
    pub socket: Option<PathBuf>,
    /// `--user`.
    pub user: Option<String>,
    /// `--ca-cert` file (absolute).
    pub ca_cert: Option<PathBuf>,
}

/// The configuration file's path.
pub fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PIVAULT_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| anyhow!("set HOME (or PIVAULT_CONFIG) to keep profiles"))?;
    Ok(base.join("pivault").join("config.toml"))
}

/// Reads and parses the file, refusing one that others may read or write.
/// `None` when there is no file.
fn read(path: &Path) -> anyhow::Result<Option<DocumentMut>> {
    if !path.exists() {
        return Ok(None);
    }
    vault_core::secret::check_private_file(path).with_context(|| {
        format!(
            "refusing the profile file {}: whoever may write it chooses the server your password goes to",
            path.display()
        )
    })?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the profile file {}", path.display()))?;
    let doc = text
        .parse::<DocumentMut>()
        .map_err(|e| anyhow!("the profile file {} is not valid TOML: {e}", path.display()))?;
    Ok(Some(doc))
}

fn profile_of(doc: &DocumentMut, name: &str) -> Option<Profile> {
    let t = doc.get("profiles")?.get(name)?;
    let text = |k: &str| t.get(k).and_then(Item::as_str).map(str::to_owned);
    Some(Profile {
        server: text("server"),
        socket: text("socket").map(PathBuf::from),
        user: text("user"),
        ca_cert: text("ca_cert").map(PathBuf::from),
    })
}

fn current_of(doc: &DocumentMut) -> String {
    doc.get("current")
        .and_then(Item::as_str)
        .unwrap_or(DEFAULT_PROFILE)
        .to_owned()
}

/// The profile to use: `name` (from `--profile`/`PIVAULT_PROFILE`), else
/// the current one. A named profile that does not exist is an error unless
/// `creating` (a login makes it); a missing file or current profile is not
/// (nothing is remembered yet).
pub fn load(name: Option<&str>, creating: bool) -> anyhow::Result<Option<(String, Profile)>> {
    let path = config_path()?;
    let Some(doc) = read(&path)? else {
        if let Some(n) = name
            && !creating
        {
            bail!(
                "no profile {n}: there is no profile file yet (`pivault login --profile {n}` makes one)"
            );
        }
        return Ok(None);
    };
    let chosen = name.map_or_else(|| current_of(&doc), str::to_owned);
    match profile_of(&doc, &chosen) {
        Some(p) => Ok(Some((chosen, p))),
        None if name.is_some() && !creating => bail!(
            "no profile {chosen} in {} (`pivault profile list` shows them)",
            path.display()
        ),
        None => Ok(None),
    }
}

/// Remembers `p` under `name` (or the current profile), making it current
/// if no profile was. Returns the profile's name and the file.
pub fn remember(name: Option<&str>, p: &Profile) -> anyhow::Result<(String, PathBuf)> {
    let path = config_path()?;
    update(&path, |doc| {
        let chosen = name.map_or_else(|| current_of(doc), str::to_owned);
        check_name(&chosen)?;
        if doc.get("current").is_none() {
            doc["current"] = value(chosen.clone());
        }
        if doc.get("profiles").is_none() {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            doc["profiles"] = Item::Table(t);
        }
        let entry = &mut doc["profiles"][chosen.as_str()];
        if entry.is_none() {
            *entry = toml_edit::table();
        }
        let mut set = |k: &str, v: Option<String>| match v {
            Some(v) => entry[k] = value(v),
            None => {
                if let Some(t) = entry.as_table_like_mut() {
                    t.remove(k);
                }
            }
        };
        set("server", p.server.clone());
        set("socket", p.socket.as_ref().map(|s| s.display().to_string()));
        set("user", p.user.clone());
        set(
            "ca_cert",
            p.ca_cert.as_ref().map(|s| s.display().to_string()),
        );
        Ok(chosen)
    })
    .map(|chosen| (chosen, path))
}

/// Every profile, and the current one's name.
pub fn list() -> anyhow::Result<(Vec<(String, Profile)>, String)> {
    let path = config_path()?;
    let Some(doc) = read(&path)? else {
        return Ok((Vec::new(), DEFAULT_PROFILE.to_owned()));
    };
    let names: Vec<String> = doc
        .get("profiles")
        .and_then(Item::as_table_like)
        .map(|t| t.iter().map(|(k, _)| k.to_owned()).collect())
        .unwrap_or_default();
    let out = names
        .into_iter()
        .filter_map(|n| profile_of(&doc, &n).map(|p| (n, p)))
        .collect();
    Ok((out, current_of(&doc)))
}

/// Makes `name` the current profile.
pub fn use_profile(name: &str) -> anyhow::Result<PathBuf> {
    let path = config_path()?;
    update(&path, |doc| {
        if profile_of(doc, name).is_none() {
            bail!("no profile {name} (`pivault profile list` shows them)");
        }
        doc["current"] = value(name);
        Ok(())
    })?;
    Ok(path)
}

/// Forgets a profile (its login token file stays until `pivault logout`).
pub fn remove(name: &str) -> anyhow::Result<PathBuf> {
    let path = config_path()?;
    update(&path, |doc| {
        let removed = doc
            .get_mut("profiles")
            .and_then(Item::as_table_like_mut)
            .and_then(|t| t.remove(name));
        if removed.is_none() {
            bail!("no profile {name} (`pivault profile list` shows them)");
        }
        if doc.get("current").and_then(Item::as_str) == Some(name) {
            doc.remove("current");
        }
        Ok(())
    })?;
    Ok(path)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        bail!("a profile name is 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// Read-modify-write of the file under its lock, written to a fresh 0600
/// file and renamed over the old one: a reader sees the old or the new
/// file, never half of one, and two writers do not lose each other's change.
fn update<T>(
    path: &Path,
    f: impl FnOnce(&mut DocumentMut) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("the profile file needs a directory"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _lock = Lock::take(&path.with_extension("toml.lock"))?;
    let mut doc = read(path)?.unwrap_or_default();
    let out = f(&mut doc)?;
    let tmp = path.with_extension(format!("toml.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(doc.to_string().as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(out)
}

/// A lock file held while the profile file is rewritten; removed on drop.
/// One left by a killed process is taken over once it is a minute old.
struct Lock(PathBuf);

impl Lock {
    fn take(path: &Path) -> anyhow::Result<Lock> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => return Ok(Lock(path.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > Duration::from_secs(60));
                    if stale {
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "the profile file is locked by another pivault ({}); remove it if no pivault is running",
                            path.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
