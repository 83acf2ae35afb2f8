//! Field-level edits that lose nothing (issue 11): `record update --set`
//! and `--unset` (a JSON merge patch), `record replace` for a whole new
//! body, `record history`, and two edits of different fields racing each
//! other both surviving.

use std::io::Write;
use std::process::Stdio;
use std::sync::Barrier;

use serde_json::json;

use crate::cli::{CliVault, EXIT_INVALID_INPUT, Run};
use crate::common::{self, CUSTOMERS};

/// `pivault ARGS` as `user` with `stdin` as its standard input.
fn run_with_stdin(v: &CliVault, user: &str, args: &[&str], stdin: &str) -> Run {
    let mut c = v.user_command(Some(user), args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn pivault");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run::from_output(args.join(" "), &out)
}

#[test]
fn a_clerk_fixes_a_phone_number_on_a_masked_record_and_the_ssn_stays() {
    let v = CliVault::standard();
    let rec = v.input_file(
        "rec.json",
        &json!({ "given_name": "Ada", "family_name": "Quimby", "ssn": "219-09-9998",
                 "phone": "617-555-0100", "email": "ada@example.com",
                 "license": "MA:S12345678" })
        .to_string(),
    );
    let put = v.run(
        Some("clerk"),
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
    let id = put.json()["record_id"].as_str().unwrap().to_owned();

    // The clerk sees the SSN masked and changes only the phone number.
    let r = run_with_stdin(
        &v,
        "clerk",
        &["--json", "record", "update", &id, "--set", "phone=-"],
        "617-555-0199\n",
    );
    r.ok();
    assert_eq!(r.json()["record_version"], 2, "{}", r.stdout);
    // The officer's reveal proves the SSN survived; the phone changed.
    let got = v.run(
        Some("officer"),
        &[
            "--json",
            "record",
            "get",
            &id,
            "--reveal",
            "ssn",
            "--reason",
            "edit check",
        ],
    );
    got.ok();
    let f = &got.json()["fields"];
    assert_eq!(f["ssn"], "219-09-9998", "{f}");
    assert_eq!(f["phone"], "6175550199", "{f}");
    assert_eq!(f["email"], "ada@example.com", "{f}");

    // A value as a flag is refused without echoing it; nothing changes.
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "update",
            &id,
            "--set",
            "ssn=078-05-1120",
        ],
    );
    r.code(EXIT_INVALID_INPUT);
    assert!(r.stderr.contains("--set ssn=-"), "{}", r.stderr);
    assert!(!r.all_output().contains("078-05-1120"), "{}", r.stderr);
    // A bad value read from stdin: the field is named, the value is not.
    let r = run_with_stdin(
        &v,
        "clerk",
        &["--json", "record", "update", &id, "--set", "ssn=-"],
        "000-12-3456\n",
    );
    r.code(EXIT_INVALID_INPUT);
    assert!(r.stderr.contains("ssn"), "{}", r.stderr);
    assert!(!r.all_output().contains("000-12-3456"), "{}", r.stderr);

    // A revealed licence, pasted back, is accepted as it printed.
    let got = v.run(
        Some("officer"),
        &[
            "--json",
            "record",
            "get",
            &id,
            "--reveal",
            "license",
            "--reason",
            "edit check",
        ],
    );
    let shown = got.json()["fields"]["license"].as_str().unwrap().to_owned();
    assert_eq!(shown, "MA S12345678");
    let r = run_with_stdin(
        &v,
        "clerk",
        &[
            "--json",
            "record",
            "update",
            &id,
            "--set",
            "license=-",
            "--unset",
            "email",
        ],
        &format!("{shown}\n"),
    );
    r.ok();

    // History: three versions, each naming what changed (names only).
    let h = v.run(Some("clerk"), &["--json", "record", "history", &id]);
    h.ok();
    let versions = h.json()["versions"].as_array().cloned().unwrap();
    let summary: Vec<(u64, Vec<String>)> = versions
        .iter()
        .map(|x| {
            (
                x["version"].as_u64().unwrap(),
                x["fields_changed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, vec![]),
            (2, vec!["phone".to_owned()]),
            (3, vec!["email".to_owned()]),
        ],
        "{}",
        h.stdout
    );
    assert!(
        versions.iter().all(|x| x["username"] == "clerk"),
        "{}",
        h.stdout
    );
    assert!(!h.stdout.contains("617-555"), "history never shows values");

    // `record replace` is the explicit whole-body replacement.
    let whole = v.input_file(
        "whole.json",
        &json!({ "given_name": "Ada", "family_name": "Quimby" }).to_string(),
    );
    v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "replace",
            &id,
            "--data",
            whole.to_str().unwrap(),
        ],
    )
    .ok();
    let got = v.run(
        Some("officer"),
        &[
            "--json",
            "record",
            "get",
            &id,
            "--reveal",
            "ssn",
            "--reason",
            "edit check",
        ],
    );
    assert!(got.json()["fields"].get("ssn").is_none(), "{}", got.stdout);
    v.assert_audit_ok();
}

/// Two clerks edit different fields of one record at the same moment, many
/// times over: every edit is applied to the version current under the record
/// lock, so both fields end at their writer's last value and nothing else
/// changes. (With whole-body replacement, one writer would put back the
/// other's old value.)
#[test]
fn racing_edits_of_different_fields_both_survive() {
    let dir = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&dir.path().join("vault"));
    let id = fx
        .vault
        .put_record(
            &fx.clerk,
            CUSTOMERS,
            vault_core::ids::SubjectId::new(),
            &json!({ "given_name": "Ada", "family_name": "Quimby", "ssn": "219-09-9998" }),
        )
        .unwrap();
    const ROUNDS: usize = 40;
    let given = ["Ann", "Bea", "Cy", "Dee"];
    let family = ["Ames", "Bell", "Cole", "Dunn"];
    let barrier = Barrier::new(2);
    std::thread::scope(|sc| {
        for (field, names) in [("given_name", given), ("family_name", family)] {
            let (fx, barrier) = (&fx, &barrier);
            sc.spawn(move || {
                barrier.wait();
                for i in 0..ROUNDS {
                    fx.vault
                        .patch_record(&fx.clerk, id, &json!({ field: names[i % names.len()] }))
                        .unwrap();
                }
            });
        }
    });
    let view = fx
        .vault
        .get_record(&fx.officer, id, &["ssn"], Some("race check"))
        .unwrap();
    assert_eq!(view.fields["given_name"], given[(ROUNDS - 1) % 4]);
    assert_eq!(view.fields["family_name"], family[(ROUNDS - 1) % 4]);
    assert_eq!(view.fields["ssn"], "219-09-9998");
    assert_eq!(view.meta.version, 1 + 2 * ROUNDS as u32);
    let history = fx.vault.record_history(&fx.clerk, id).unwrap();
    assert_eq!(history.len(), 1 + 2 * ROUNDS);
    assert!(history[1..].iter().all(|h| h.fields.len() == 1));
}

/// A schema changes without losing records (issue 11): a new optional
/// field, a retired one that stored records keep until their next update;
/// removing a field, changing its type or adding a required one is refused.
#[test]
fn a_schema_gains_and_retires_fields_without_losing_records() {
    use vault_core::schema::Schema;
    let dir = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&dir.path().join("vault"));
    let v = &fx.vault;
    let old = v
        .put_record(
            &fx.clerk,
            CUSTOMERS,
            vault_core::ids::SubjectId::new(),
            &json!({ "given_name": "Ada", "family_name": "Quimby", "ssn": "219-09-9998",
                     "card_number": "4111 1111 1111 1111" }),
        )
        .unwrap();
    let mut file: serde_json::Value =
        serde_json::from_str(&common::customers_schema().to_json()).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut x = file.clone();
        f(&mut x);
        Schema::from_json(&x.to_string())
    };
    // Refused: a field dropped, a type changed, a new required field.
    let dropped = with(&|x| {
        x["fields"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["name"] != "card_number")
    })
    .unwrap();
    let e = v
        .update_collection(&fx.admin, CUSTOMERS, &dropped)
        .unwrap_err();
    assert!(e.to_string().contains("retired"), "{e}");
    let retyped = with(&|x| {
        for f in x["fields"].as_array_mut().unwrap() {
            if f["name"] == "card_number" {
                f["type"] = json!("account_number");
            }
        }
    })
    .unwrap();
    assert!(v.update_collection(&fx.admin, CUSTOMERS, &retyped).is_err());
    let required = with(&|x| {
        x["fields"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "email", "type": "email", "required": true}))
    })
    .unwrap();
    assert!(
        v.update_collection(&fx.admin, CUSTOMERS, &required)
            .is_err()
    );
    assert!(
        v.update_collection(&fx.clerk, CUSTOMERS, &required)
            .is_err()
    );

    // Accepted: retire card_number, add an optional email.
    for f in file["fields"].as_array_mut().unwrap() {
        if f["name"] == "card_number" {
            f["retired"] = json!(true);
        }
    }
    file["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "email", "type": "email"}));
    let next = Schema::from_json(&file.to_string()).unwrap();
    v.update_collection(&fx.admin, CUSTOMERS, &next).unwrap();

    // The stored record still holds its card number (masked as before).
    let view = v.get_record(&fx.clerk, old, &[], None).unwrap();
    assert_eq!(view.fields["card_number"], "**** **** **** 1111");
    // No new value for a retired field; the new field works.
    let e = v
        .put_record(
            &fx.clerk,
            CUSTOMERS,
            vault_core::ids::SubjectId::new(),
            &json!({ "given_name": "Bea", "family_name": "Ames", "card_number": "4111 1111 1111 1111" }),
        )
        .unwrap_err();
    assert!(e.to_string().contains("retired"), "{e}");
    assert!(!e.to_string().contains("4111"), "{e}");
    v.put_record(
        &fx.clerk,
        CUSTOMERS,
        vault_core::ids::SubjectId::new(),
        &json!({ "given_name": "Bea", "family_name": "Ames", "email": "bea@example.com" }),
    )
    .unwrap();
    // At its next update the old record drops the retired field and keeps the rest.
    v.patch_record(&fx.clerk, old, &json!({ "email": "ada@example.com" }))
        .unwrap();
    let view = v
        .get_record(&fx.officer, old, &["ssn"], Some("schema check"))
        .unwrap();
    assert!(
        view.fields.get("card_number").is_none(),
        "{:?}",
        view.fields
    );
    assert_eq!(view.fields["ssn"], "219-09-9998");
    assert_eq!(view.fields["email"], "ada@example.com");
    let history = v.record_history(&fx.clerk, old).unwrap();
    assert_eq!(history[1].fields, vec!["card_number", "email"]);
}
