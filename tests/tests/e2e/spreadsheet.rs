//! Imports from a real spreadsheet export (issue 11): a byte-order mark,
//! CRLF line ends, headers with spaces and capitals mapped by a mapping
//! file, US dates, SSNs written with spaces, card numbers in groups, an
//! empty column; `--check` stores nothing; a bad value is reported by line
//! and column header, never by value.

use crate::cli::{CliVault, EXIT_INVALID_INPUT, EXIT_OK};

const EXPORT: &str = "\u{feff}Customer No,First Name,LAST NAME,Social Security,Date of Birth,Card Number,Notes,E-mail\r\n\
C-2001,Ada,Quimby,219 09 9998,03/14/1979,4111 1111 1111 1111,,ada@example.com\r\n\
C-2002,Bea,Ames,078-05-1120,7/4/1980,,,\r\n\
C-2003,Cy,Cole,219099997,12/31/1999,,,cy@example.com\r\n";

const MAPPING: &str = "# the front desk's spreadsheet\n\
Customer No=subject\n\
First Name=given_name\n\
last name=family_name\n\
Social  Security=ssn\n\
Date of Birth=born\n\
Card Number=card\n\
Notes=\n\
E-mail=email\n";

#[test]
fn a_spreadsheet_export_imports_with_a_mapping_file() {
    let v = CliVault::standard();
    let before = v.record_ids().len();
    let csv = v.input_file("export.csv", EXPORT);
    let map = v.input_file("export.map", MAPPING);
    let (csv, map) = (csv.to_str().unwrap(), map.to_str().unwrap());

    // Without the mapping, the first unknown header is named, by position.
    let r = v.run(
        Some("clerk"),
        &["--json", "record", "import", "customers", csv],
    );
    r.code(EXIT_INVALID_INPUT);
    assert!(r.stderr.contains("column 1"), "{}", r.stderr);
    assert!(r.stderr.contains("Customer No"), "{}", r.stderr);

    // --check validates everything and stores nothing.
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            "customers",
            csv,
            "--map-file",
            map,
            "--check",
        ],
    );
    r.code(EXIT_OK);
    assert_eq!(r.json()["valid"], 3, "{}", r.stdout);
    assert_eq!(r.json()["imported"], 0, "{}", r.stdout);
    assert_eq!(v.record_ids().len(), before, "--check stored nothing");

    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            "customers",
            csv,
            "--map-file",
            map,
        ],
    );
    r.code(EXIT_OK);
    assert_eq!(r.json()["imported"], 3, "{}", r.stdout);

    // The values arrived normalised: find C-2001's record and reveal it.
    let list = v.run(
        Some("officer"),
        &["--json", "record", "list", "--subject", "C-2001"],
    );
    list.ok();
    let id = list.json()["items"][0]["record_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = v.run(
        Some("officer"),
        &[
            "--json",
            "record",
            "get",
            &id,
            "--reveal",
            "ssn",
            "--reveal",
            "card",
            "--reason",
            "import check",
        ],
    );
    got.ok();
    let f = &got.json()["fields"];
    assert_eq!(f["given_name"], "Ada", "{f}");
    assert_eq!(f["family_name"], "Quimby", "{f}");
    assert_eq!(f["ssn"], "219-09-9998", "{f}");
    assert_eq!(f["born"], "1979-03-14", "{f}");
    assert_eq!(f["card"], "4111 1111 1111 1111", "{f}");
    assert_eq!(f["email"], "ada@example.com", "{f}");
    assert!(f.get("notes").is_none() && f.get("Notes").is_none(), "{f}");
}

#[test]
fn a_bad_value_is_named_by_line_and_column_never_by_value() {
    let v = CliVault::standard();
    let before = v.record_ids().len();
    let bad = EXPORT
        .replace("078-05-1120", "000-12-3456")
        .replace("12/31/1999", "31/12/1999");
    let csv = v.input_file("bad.csv", &bad);
    let map = v.input_file("export.map", MAPPING);
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            "customers",
            csv.to_str().unwrap(),
            "--map-file",
            map.to_str().unwrap(),
        ],
    );
    r.code(EXIT_INVALID_INPUT);
    let errors = r.json()["errors"].as_array().cloned().unwrap_or_default();
    let summary: Vec<(u64, String)> = errors
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 2, "{}", r.stdout);
    assert_eq!(summary[0].0, 3, "{summary:?}");
    assert!(
        summary[0].1.contains("\"Social Security\"") && summary[0].1.contains("ssn"),
        "{summary:?}"
    );
    assert_eq!(summary[1].0, 4, "{summary:?}");
    assert!(
        summary[1].1.contains("\"Date of Birth\"") && summary[1].1.contains("born"),
        "{summary:?}"
    );
    let all = r.all_output();
    assert!(
        !all.contains("000-12-3456") && !all.contains("31/12/1999"),
        "{all}"
    );
    assert_eq!(v.record_ids().len(), before, "nothing stored");
}
