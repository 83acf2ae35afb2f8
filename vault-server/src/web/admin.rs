//! The admin's pages: the users (full name, role, state, lock-out, second
//! factor), adding one with a role and an initial password, disabling,
//! enabling, unlocking, changing a role and setting the full name that
//! certificates print. Each action is the API's `Vault` call; a disabled user's open
//! pages fail their next request (the core revokes their sessions).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use vault_core::access::{Role, UserInfo, UserState};
use vault_core::clock::format_ms;
use vault_core::secret::SecretString;

use super::{Signed, error_page, esc, form_session, page, visitor};
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/users", get(users_page).post(add_user))
        .route("/ui/users/action", post(user_action))
}

/// The roles a person's account may have (service accounts are made with
/// `pivault service add`).
const ROLES: [&str; 5] = ["clerk", "officer", "auditor", "contractor", "admin"];

/// What the add form keeps after a refusal: never the password.
#[derive(Default)]
struct Typed<'a> {
    username: &'a str,
    full_name: &'a str,
    role: &'a str,
    reveal: bool,
}

fn user_list(who: &Signed, users: &[UserInfo]) -> String {
    let items: String = users
        .iter()
        .filter(|u| !u.service)
        .map(|u| {
            let name = esc(u.username.as_str());
            let disabled = u.state == UserState::Disabled;
            let action = |act: &str, label: &str| {
                format!(
                    "<form method=\"post\" action=\"/ui/users/action\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <input type=\"hidden\" name=\"username\" value=\"{name}\">\
                     <input type=\"hidden\" name=\"action\" value=\"{act}\">\
                     <button type=\"submit\" class=\"secondary\">{label} {name}</button></form>",
                    csrf = esc(&who.csrf),
                )
            };
            let mut actions = vec![if disabled {
                action("enable", "Enable")
            } else {
                action("disable", "Disable")
            }];
            if u.locked_until_ms.is_some() {
                actions.push(action("unlock", "Unlock"));
            }
            let roles: String = ROLES
                .iter()
                .map(|r| {
                    let sel = if *r == u.role.as_str() { " selected" } else { "" };
                    format!("<option value=\"{r}\"{sel}>{r}</option>")
                })
                .collect();
            actions.push(format!(
                "<form method=\"post\" action=\"/ui/users/action\" class=\"role\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"username\" value=\"{name}\">\
                 <input type=\"hidden\" name=\"action\" value=\"role\">\
                 <label for=\"role-{name}\">Role of {name}</label><select id=\"role-{name}\" name=\"role\">{roles}</select>\
                 <button type=\"submit\" class=\"secondary\">Change the role of {name}</button></form>",
                csrf = esc(&who.csrf),
            ));
            let full = u.full_name.as_deref().unwrap_or("");
            actions.push(format!(
                "<form method=\"post\" action=\"/ui/users/action\" class=\"role\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"username\" value=\"{name}\">\
                 <input type=\"hidden\" name=\"action\" value=\"name\">\
                 <label for=\"full-{name}\">Full name of {name}</label>\
                 <input id=\"full-{name}\" name=\"full_name\" autocomplete=\"off\" value=\"{full}\">\
                 <button type=\"submit\" class=\"secondary\">Set the full name of {name}</button></form>",
                csrf = esc(&who.csrf),
                full = esc(full),
            ));
            format!(
                "<li><h3>{name}</h3><dl><dt>Full name</dt><dd>{shown}</dd><dt>Role</dt><dd>{role}{reveal}</dd><dt>State</dt><dd>{state}</dd>\
                 <dt>Two-factor</dt><dd>{tf}</dd><dt>Last sign-in</dt><dd>{last}</dd></dl><div class=\"actions\">{actions}</div></li>",
                shown = if full.is_empty() { "(not set: certificates print the username)".to_owned() } else { esc(full) },
                role = esc(u.role.as_str()),
                reveal = if u.reveal_grant && u.role == Role::Clerk { " (may reveal)" } else { "" },
                state = match (disabled, u.locked_until_ms) {
                    (true, _) => "disabled".to_owned(),
                    (false, Some(t)) => format!("locked until {}", esc(&format_ms(t))),
                    (false, None) => "active".to_owned(),
                },
                tf = esc(u.two_factor.as_str()),
                last = u.last_login_ms.map_or_else(|| "never".to_owned(), format_ms),
                actions = actions.join(""),
            )
        })
        .collect();
    format!("<h2>Users</h2><ul class=\"cards\">{items}</ul>")
}

fn add_form(who: &Signed, typed: &Typed<'_>, error: Option<(&str, &str)>) -> String {
    let (field, message) = error.unwrap_or(("", ""));
    let note = |f: &str| {
        if field == f {
            format!("<p class=\"field-error\" id=\"e-{f}\">{}</p>", esc(message))
        } else {
            String::new()
        }
    };
    let bad = |f: &str| {
        if field == f {
            format!(" aria-invalid=\"true\" aria-describedby=\"e-{f}\"")
        } else {
            String::new()
        }
    };
    let alert = if error.is_some() {
        "<p role=\"alert\" class=\"error\">The user was not added: change what the message beside the field says, then send the form again.</p>"
    } else {
        ""
    };
    let roles: String = ROLES
        .iter()
        .map(|r| {
            format!(
                "<option value=\"{r}\"{sel}>{r}</option>",
                sel = if *r == typed.role { " selected" } else { "" }
            )
        })
        .collect();
    format!(
        "<h2>Add a user</h2>{alert}<form method=\"post\" action=\"/ui/users\" autocomplete=\"off\" novalidate>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"new-username\">Username</label>{un}\
         <input id=\"new-username\" name=\"username\" autocomplete=\"off\" spellcheck=\"false\" value=\"{user}\"{ub}>\
         <label for=\"new-full-name\">Full name</label>\
         <p class=\"hint\" id=\"h-new-full-name\">Optional. Certificates the user signs print it instead of the username. A new officer who waits for a second officer&#39;s approval gets it when approved.</p>{fn_}\
         <input id=\"new-full-name\" name=\"full_name\" autocomplete=\"off\" aria-describedby=\"h-new-full-name\" value=\"{full}\"{fb}>\
         <label for=\"new-role\">Role</label>{rn}<select id=\"new-role\" name=\"role\"{rb}>{roles}</select>\
         <label for=\"new-password\">Initial password</label>\
         <p class=\"hint\" id=\"h-new-password\">At least 12 characters, not a common one. Give it to the user in person; they sign in with it.</p>{pn}\
         <input id=\"new-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" aria-describedby=\"h-new-password{pd}\"{pi}>\
         <label class=\"check\"><input type=\"checkbox\" name=\"reveal\" value=\"1\"{rv}> A clerk who may reveal sensitive fields (with a reason)</label>\
         <button type=\"submit\">Add the user</button></form>",
        csrf = esc(&who.csrf),
        un = note("username"),
        ub = bad("username"),
        user = esc(typed.username),
        fn_ = note("full_name"),
        fb = bad("full_name"),
        full = esc(typed.full_name),
        rn = note("role"),
        rb = bad("role"),
        pn = note("password"),
        pd = if field == "password" {
            " e-password"
        } else {
            ""
        },
        pi = if field == "password" {
            " aria-invalid=\"true\""
        } else {
            ""
        },
        rv = if typed.reveal { " checked" } else { "" },
    )
}

async fn render(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
    status: StatusCode,
    top: &str,
    typed: &Typed<'_>,
    error: Option<(&str, &str)>,
) -> Response {
    match app.as_user(rc, who.bearer(), |v, s| v.list_users(s)).await {
        Ok(users) => page(
            status,
            "Users",
            Some(who),
            &format!(
                "{top}{}{}",
                add_form(who, typed, error),
                user_list(who, &users)
            ),
        ),
        Err(e) => error_page(who, &e),
    }
}

async fn users_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let typed = Typed {
        role: "clerk",
        ..Typed::default()
    };
    render(&app, &rc, &who, StatusCode::OK, "", &typed, None).await
}

#[derive(Deserialize)]
struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    reveal: Option<String>,
    #[serde(default)]
    full_name: String,
}

/// Adds a user through `Vault::add_user` (the admin's permission, the
/// password policy and the audit event are the core's).
async fn add_user(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<AddForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let typed = Typed {
        username: f.username.trim(),
        full_name: f.full_name.trim(),
        role: &f.role,
        reveal: f.reveal.is_some(),
    };
    // Checked before the user is made, so that a refused name adds no one.
    let full = Some(typed.full_name.to_owned()).filter(|n| !n.is_empty());
    let checked = match Role::parse(&f.role) {
        Ok(r) if ROLES.contains(&r.as_str()) => full
            .as_deref()
            .map_or(Ok(()), vault_core::access::check_full_name)
            .map(|()| r)
            .map_err(|e| ("full_name", e.to_string())),
        _ => Err(("role", "Choose one of the roles in the list.".to_owned())),
    };
    let role = match checked {
        Ok(r) => r,
        Err((field, message)) => {
            return render(
                &app,
                &rc,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                "",
                &typed,
                Some((field, &message)),
            )
            .await;
        }
    };
    let (name, pw, reveal) = (
        typed.username.to_owned(),
        SecretString::new(f.password.clone()),
        typed.reveal,
    );
    let r = app
        .as_user_long(&rc, who.bearer(), move |v, s| {
            v.add_person(s, &name, &pw, role, reveal, full.as_deref())
        })
        .await;
    match r {
        Ok(_) => {
            let top = format!(
                "<p role=\"status\">User <strong>{}</strong> added as {}. They sign in with the initial password{}.</p>",
                esc(typed.username),
                esc(role.as_str()),
                " (and set up two-factor sign-in if their role requires it)"
            );
            let fresh = Typed {
                role: "clerk",
                ..Typed::default()
            };
            render(&app, &rc, &who, StatusCode::CREATED, &top, &fresh, None).await
        }
        Err(e) if e.code == "approval_required" => {
            // Not a mistake in the form: the two-person rule holds the new
            // user (and their full name) until a second officer approves.
            let top = format!(
                "<p role=\"status\" id=\"pending\">User <strong>{}</strong> waits for a second officer&#39;s approval: {}.</p>",
                esc(typed.username),
                esc(&e.detail)
            );
            let fresh = Typed {
                role: "clerk",
                ..Typed::default()
            };
            render(&app, &rc, &who, StatusCode::ACCEPTED, &top, &fresh, None).await
        }
        Err(e) => {
            let field = if e.code == "weak_password" {
                "password"
            } else {
                "username"
            };
            render(
                &app,
                &rc,
                &who,
                e.status,
                "",
                &typed,
                Some((field, &e.detail)),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    username: String,
    action: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    full_name: String,
}

/// Disables, enables or unlocks a user (`Vault::disable_user`, ...).
async fn user_action(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let name = f.username.clone();
    let (act, role) = (f.action.clone(), f.role.clone());
    let full = Some(f.full_name.trim().to_owned()).filter(|n| !n.is_empty());
    let r = app
        .as_user(&rc, who.bearer(), move |v, s| match act.as_str() {
            "disable" => v.disable_user(s, &name),
            "enable" => v.enable_user(s, &name),
            "unlock" => v.unlock_user(s, &name),
            "role" => v.set_role(s, &name, Role::parse(&role)?),
            "name" => v.set_full_name(s, &name, full.as_deref()),
            _ => Err(vault_core::Error::InvalidInput(
                "the action is disable, enable, unlock, role or name".into(),
            )),
        })
        .await;
    let typed = Typed {
        role: "clerk",
        ..Typed::default()
    };
    match r {
        Ok(_) => {
            let role_done;
            let done = match f.action.as_str() {
                "disable" => "disabled: their open sessions end at their next request",
                "enable" => "enabled again",
                "role" => {
                    role_done = format!("is now {}", esc(&f.role));
                    role_done.as_str()
                }
                "name" if f.full_name.trim().is_empty() => {
                    "has no full name now: certificates print the username"
                }
                "name" => {
                    role_done = format!("is now named {}", esc(f.full_name.trim()));
                    role_done.as_str()
                }
                _ => "unlocked",
            };
            let top = format!(
                "<p role=\"status\">User <strong>{}</strong> {done}.</p>",
                esc(&f.username)
            );
            render(&app, &rc, &who, StatusCode::OK, &top, &typed, None).await
        }
        Err(e) => {
            let top = format!("<p role=\"alert\" class=\"error\">{}</p>", esc(&e.detail));
            render(&app, &rc, &who, e.status, &top, &typed, None).await
        }
    }
}
