//! `pivault two-factor …`: enrol a second factor (REQ-AUTH-07), confirm
//! it, and the policy of which roles need one; the code at sign-in comes
//! from `--code-file` (a file or `-` for stdin) or a no-echo prompt, never
//! from a flag. The secret and the recovery codes are shown once.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use vault_core::secret::SecretString;
use vault_core::vault::{Session, Vault};

use crate::exit;
use crate::output::Out;
use crate::remote::Remote;

#[derive(Subcommand, Debug)]
pub enum TwoFactorCmd {
    /// Start enrolling your second factor: prints a new secret and its
    /// otpauth:// URI for an authenticator app, once. A login that may only
    /// enrol (your role requires a factor) can run it. Then run `confirm`.
    Enrol,
    /// Confirm the enrolment with the 6-digit code the app shows now
    /// (prompted, or from --code-file); prints your recovery codes, once.
    Confirm,
    /// Show which roles must sign in with a second factor; with --require,
    /// set them (admin).
    Policy {
        /// Comma-separated roles (admin, officer, clerk, auditor,
        /// contractor), or `none`. The default is admin,officer,contractor.
        #[arg(long, value_name = "ROLES")]
        require: Option<String>,
    },
}

/// The second factor's code for a sign-in or a confirmation: from the
/// `--code-file` (`-` reads one line of stdin), else `None`.
pub fn code_from_file(file: Option<&Path>) -> anyhow::Result<Option<SecretString>> {
    let Some(f) = file else { return Ok(None) };
    let code = if f == Path::new("-") {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        SecretString::new(line.trim().to_owned())
    } else {
        let s = SecretString::from_private_file(f)
            .with_context(|| format!("cannot use the code file {}", f.display()))?;
        SecretString::new(s.expose().trim().to_owned())
    };
    if code.expose().is_empty() {
        bail!("the second-factor code file {} is empty", f.display());
    }
    Ok(Some(code))
}

/// The code: from the file, else a prompt on a terminal.
pub fn code(file: Option<&Path>, prompt: &str) -> anyhow::Result<SecretString> {
    if let Some(c) = code_from_file(file)? {
        return Ok(c);
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        return Ok(SecretString::new(
            rpassword::prompt_password(prompt)?.trim().to_owned(),
        ));
    }
    bail!(
        "this sign-in needs the second factor's code: give it with --code-file FILE (or - for stdin), \
         or run in a terminal to be prompted (codes are never taken as flags)"
    )
}

const CODE_PROMPT: &str = "Code from your authenticator app (or a recovery code): ";

/// Signs in on a vault opened directly: with the code from `--code-file`
/// when one is given, else asking for it only if the account needs one.
pub fn login(
    vault: &Vault,
    user: &str,
    password: &SecretString,
    code_file: Option<&Path>,
    ctx: vault_core::vault::Context,
) -> anyhow::Result<Session> {
    let given = code_from_file(code_file)?;
    match vault.login_with_code(user, password, given.as_ref(), ctx.clone()) {
        Err(vault_core::Error::SecondFactorRequired) if given.is_none() => {
            let c = code(None, CODE_PROMPT)?;
            Ok(vault.login_with_code(user, password, Some(&c), ctx)?)
        }
        r => Ok(r?),
    }
}

/// The prompt for a code at a server's sign-in.
pub fn prompt_code(file: Option<&Path>) -> anyhow::Result<SecretString> {
    code(file, CODE_PROMPT)
}

fn enrolment_text(v: &Value) -> String {
    let uri = v["otpauth_uri"].as_str().unwrap_or("?");
    // Light modules drawn dark: a terminal's dark background is the
    // quiet zone a phone's camera expects to be light.
    let qr = qrcode::QrCode::new(uri.as_bytes())
        .map(|c| {
            use qrcode::render::unicode::Dense1x2;
            c.render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .build()
        })
        .unwrap_or_default();
    format!(
        "Scan this with your authenticator app, or add the URI or the secret by hand:\n{qr}\n  {uri}\n  secret: {}\n\
         It is shown once and signs no one in until you confirm it:\n  pivault two-factor confirm",
        v["secret"].as_str().unwrap_or("?"),
    )
}

fn confirmed_text(v: &Value) -> String {
    let codes: Vec<&str> = v["recovery_codes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "two-factor sign-in enrolled. Recovery codes, each good once if the phone is lost \
         (shown only now: print them or keep them offline):\n  {}",
        codes.join("\n  ")
    )
}

fn policy_text(v: &Value) -> String {
    let roles: Vec<&str> = v["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if roles.is_empty() {
        "no role must sign in with a second factor".into()
    } else {
        format!("a second factor is required for: {}", roles.join(", "))
    }
}

/// Runs a two-factor command on a vault opened directly.
pub fn cmd_local(
    out: &Out,
    vault: &Vault,
    s: &Session,
    code_file: Option<&Path>,
    c: &TwoFactorCmd,
) -> anyhow::Result<u8> {
    match c {
        TwoFactorCmd::Enrol => {
            let e = vault.begin_two_factor_enrolment(s)?;
            let v = json!({ "secret": e.secret_base32.expose(), "otpauth_uri": e.uri.expose(),
                            "period_s": vault_core::totp::PERIOD_S, "digits": vault_core::totp::DIGITS,
                            "next": "pivault two-factor confirm" });
            out.data("two-factor-enrolment", v.clone(), || enrolment_text(&v));
        }
        TwoFactorCmd::Confirm => {
            let c = code(code_file, "Code from your authenticator app: ")?;
            let done = vault.confirm_two_factor_enrolment(s, &c)?;
            let v = json!({ "recovery_codes":
                done.recovery_codes.iter().map(|c| c.expose()).collect::<Vec<_>>() });
            out.data("two-factor-confirmed", v.clone(), || confirmed_text(&v));
        }
        TwoFactorCmd::Policy { require } => {
            let p = match require {
                Some(list) => {
                    let p = vault_core::access::TwoFactorPolicy::parse(list)?;
                    vault.set_two_factor_policy(s, &p)?;
                    p
                }
                None => vault.get_two_factor_policy(s)?,
            };
            let v = vault_core::views::two_factor_policy(&p);
            out.data("two-factor-policy", v.clone(), || policy_text(&v));
        }
    }
    Ok(exit::OK)
}

/// Runs a two-factor command through a server. A confirmation replaces the
/// kept login token (if any) with the new one the server returns.
pub fn cmd_remote(
    out: &Out,
    r: &Remote,
    code_file: Option<&Path>,
    token_file: Option<&Path>,
    c: &TwoFactorCmd,
) -> anyhow::Result<u8> {
    match c {
        TwoFactorCmd::Enrol => {
            let mut v = r.post("/v1/two-factor/enrolment", json!({}))?;
            v["next"] = json!("pivault two-factor confirm");
            out.data("two-factor-enrolment", v.clone(), || enrolment_text(&v));
        }
        TwoFactorCmd::Confirm => {
            let c = code(code_file, "Code from your authenticator app: ")?;
            let mut v = r.post(
                "/v1/two-factor/enrolment/confirm",
                json!({ "code": c.expose() }),
            )?;
            // The new token goes where the old one was kept, never to the
            // terminal; without a kept login, the next command signs in
            // afresh (with a code).
            let token = v["token"].as_str().map(|t| SecretString::new(t.to_owned()));
            let o = v
                .as_object_mut()
                .context("the server's answer is not an object")?;
            o.remove("token");
            o.remove("expires");
            if let (Some(path), Some(token)) = (token_file, token) {
                crate::remote::keep_token(path, &token)?;
                o.insert("token_file".into(), json!(path.display().to_string()));
            }
            out.data("two-factor-confirmed", v.clone(), || confirmed_text(&v));
        }
        TwoFactorCmd::Policy { require } => {
            let v = match require {
                Some(list) => {
                    let p = vault_core::access::TwoFactorPolicy::parse(list)?;
                    r.call(
                        "PUT",
                        "/v1/policy/two-factor",
                        Some(json!({ "required": p.roles() })),
                    )?
                }
                None => r.get("/v1/policy/two-factor")?,
            };
            out.data("two-factor-policy", v.clone(), || policy_text(&v));
        }
    }
    Ok(exit::OK)
}
