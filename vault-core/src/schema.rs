//! Collection schemas: typed fields, validation, masking and classification.
//!
//! This module owns what a record body may contain. A collection declares its
//! fields (name, type, whether required, why it is kept); [`Schema::validate`]
//! turns a submitted body into a normalised one or refuses it, [`Schema::mask`]
//! decides what a reader sees (REQ-ACL-01, REQUIREMENTS §D) and
//! [`Schema::classify`] flags "MA personal information" (REQ-DEF-03, M.G.L.
//! c. 93H §1, c. 93I §1). Card security codes, PINs and passwords are refused
//! outright, as field names and as keys in a body, because the vault must never
//! hold them. Error messages name fields and kinds, never submitted values, so
//! they are safe to log and to return to clients.
//!
//! The domain types here deliberately do not implement `Serialize`: the only
//! serialised form is the schema file format, produced by private structs in
//! [`Schema::to_json`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// US state, district and territory codes accepted as issuing states and as
/// residences: the 50 states, DC, and the territories that issue driver's
/// licences (AS, GU, MP, PR, VI).
pub const US_STATE_CODES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "AS", "GU", "MP", "PR", "VI",
];

/// The residence assumed when nothing in the record or schema says otherwise.
/// Massachusetts, because over-flagging a record as personal information only
/// costs extra care, while under-flagging it could hide a reportable breach.
pub const DEFAULT_RESIDENCE: &str = "MA";

/// Largest decoded biometric template accepted (64 KiB): templates are small,
/// and a bound keeps a single record from bloating the store.
pub const MAX_BIOMETRIC_BYTES: usize = 64 * 1024;

const MAX_FIELDS: usize = 256;
const MAX_PURPOSE_CHARS: usize = 2000;
const MAX_NAME_CHARS: usize = 100;
const MAX_TEXT_CHARS: usize = 4096;
const MAX_ADDRESS_CHARS: usize = 512;
const MAX_EMAIL_CHARS: usize = 254;
const ADDRESS_KEYS: &[&str] = &["line1", "line2", "city", "state", "postal_code", "country"];

/// Shown for every biometric field: templates are never displayed or revealed.
const BIOMETRIC_MASK: &str = "[biometric]";

/// Field types a collection can declare.
///
/// The order of the variants is the sort order of
/// [`Classification::sensitive_elements`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    /// First name, or a first initial ("J." counts, as 93H §1 says).
    GivenName,
    /// Last name.
    FamilyName,
    /// A whole name in one string; counts as a name when it has two words.
    FullName,
    /// Social Security number (sensitive).
    Ssn,
    /// Driver's licence number with its issuing state (sensitive).
    DriversLicense,
    /// State-issued ID number with its issuing state (sensitive).
    StateId,
    /// Financial account number (sensitive).
    AccountNumber,
    /// Credit or debit card number (sensitive).
    CardNumber,
    /// Email address.
    Email,
    /// Telephone number.
    Phone,
    /// Postal address, free text or structured.
    Address,
    /// A calendar date.
    Date,
    /// Free text, bounded.
    Text,
    /// Biometric template as opaque bytes (sensitive under 93I; never revealed).
    Biometric,
    /// The data subject's state of residence, which decides the MA flag.
    ResidenceState,
}

impl FieldType {
    /// Every field type, in declaration order.
    pub const ALL: [FieldType; 15] = [
        FieldType::GivenName,
        FieldType::FamilyName,
        FieldType::FullName,
        FieldType::Ssn,
        FieldType::DriversLicense,
        FieldType::StateId,
        FieldType::AccountNumber,
        FieldType::CardNumber,
        FieldType::Email,
        FieldType::Phone,
        FieldType::Address,
        FieldType::Date,
        FieldType::Text,
        FieldType::Biometric,
        FieldType::ResidenceState,
    ];

    /// The canonical name used in schema files, the API and the audit trail.
    pub fn as_str(&self) -> &'static str {
        match self {
            FieldType::GivenName => "given_name",
            FieldType::FamilyName => "family_name",
            FieldType::FullName => "full_name",
            FieldType::Ssn => "ssn",
            FieldType::DriversLicense => "drivers_license",
            FieldType::StateId => "state_id",
            FieldType::AccountNumber => "account_number",
            FieldType::CardNumber => "card_number",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Address => "address",
            FieldType::Date => "date",
            FieldType::Text => "text",
            FieldType::Biometric => "biometric",
            FieldType::ResidenceState => "residence_state",
        }
    }

    /// Parses a type name: the canonical names of [`FieldType::as_str`] plus a
    /// few common spellings (`drivers_licence`, `credit_card`, ...), so that
    /// hand-written schema files are forgiving while [`Schema::to_json`]
    /// always writes the canonical name.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let ty = match t.as_str() {
            "given_name" | "first_name" => FieldType::GivenName,
            "family_name" | "last_name" | "surname" => FieldType::FamilyName,
            "full_name" | "name" => FieldType::FullName,
            "ssn" | "social_security_number" => FieldType::Ssn,
            "drivers_license" | "drivers_licence" | "driver_license" | "driver_licence" => {
                FieldType::DriversLicense
            }
            "state_id" => FieldType::StateId,
            "account_number" | "financial_account" | "account" => FieldType::AccountNumber,
            "card_number" | "card" | "payment_card" | "credit_card" | "debit_card" => {
                FieldType::CardNumber
            }
            "email" => FieldType::Email,
            "phone" | "telephone" => FieldType::Phone,
            "address" => FieldType::Address,
            "date" => FieldType::Date,
            "text" => FieldType::Text,
            "biometric" => FieldType::Biometric,
            "residence_state" | "residence" => FieldType::ResidenceState,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown field type {}",
                    shown_name(&t).unwrap_or_else(|| "(not shown)".into())
                )));
            }
        };
        Ok(ty)
    }

    /// Whether a field of this type may be marked `searchable` (it has a
    /// beacon normalisation in `beacon.rs`): the values a clerk is asked
    /// for at a counter. Card and account numbers, addresses, dates, free
    /// text and biometrics are not.
    pub fn is_searchable(&self) -> bool {
        matches!(
            self,
            FieldType::GivenName
                | FieldType::FamilyName
                | FieldType::FullName
                | FieldType::Ssn
                | FieldType::DriversLicense
                | FieldType::StateId
                | FieldType::Email
                | FieldType::Phone
        )
    }

    /// Whether the type is one of the elements that make a name into personal
    /// information (93H §1, 93I §1): these are masked by default and their
    /// reveals are audited.
    pub fn is_sensitive(&self) -> bool {
        matches!(
            self,
            FieldType::Ssn
                | FieldType::DriversLicense
                | FieldType::StateId
                | FieldType::AccountNumber
                | FieldType::CardNumber
                | FieldType::Biometric
        )
    }

    /// Validates one non-null value of this type and returns its normalised
    /// form (see [`Schema::validate`]). `field` only labels error messages;
    /// the value itself never appears in them.
    pub fn normalise(&self, field: &str, v: &Value) -> Result<Value> {
        match self {
            FieldType::GivenName | FieldType::FamilyName | FieldType::FullName => {
                norm_name(field, v)
            }
            FieldType::Ssn => norm_ssn(field, v),
            FieldType::DriversLicense => norm_licence(field, v, "driver's licence"),
            FieldType::StateId => norm_licence(field, v, "state ID"),
            FieldType::AccountNumber => norm_account(field, v),
            FieldType::CardNumber => norm_card(field, v),
            FieldType::Email => norm_email(field, v),
            FieldType::Phone => norm_phone(field, v),
            FieldType::Address => norm_address(field, v),
            FieldType::Date => norm_date(field, v),
            FieldType::Text => norm_text(field, v),
            FieldType::Biometric => norm_biometric(field, v),
            FieldType::ResidenceState => norm_residence(field, v),
        }
    }

    /// The default display of a stored (normalised) value, REQUIREMENTS §D:
    /// sensitive types keep only their last four characters behind a fixed
    /// number of stars, so the mask does not leak the length either. Values
    /// of fewer than eight characters show fewer trailing characters, so a
    /// short number is never shown whole. Non-sensitive types are returned
    /// unchanged.
    ///
    /// Licences and state IDs display as one string, issuing state then
    /// masked number: `"MA *****5678"`. The state is kept because it is not
    /// identifying on its own and tells a clerk which document to ask for.
    pub fn mask_value(&self, v: &Value) -> Value {
        match self {
            FieldType::Ssn => Value::String(format!("***-**-{}", tail4(&digits_of(v)))),
            FieldType::AccountNumber => Value::String(format!("****{}", tail4(&digits_of(v)))),
            FieldType::CardNumber => {
                Value::String(format!("**** **** **** {}", tail4(&digits_of(v))))
            }
            FieldType::DriversLicense | FieldType::StateId => {
                let (state, number) = licence_parts(v);
                let masked = format!("*****{}", tail4(&number));
                Value::String(match state {
                    Some(st) => format!("{st} {masked}"),
                    None => masked,
                })
            }
            FieldType::Biometric => Value::String(BIOMETRIC_MASK.into()),
            _ => v.clone(),
        }
    }

    /// The revealed display of a stored (normalised) value: SSN as
    /// `123-45-6789`, card in groups (`4111 1111 1111 1111`, American
    /// Express `3782 822463 10005`), licence as `"MA S12345678"`. A biometric
    /// is never revealed and stays `[biometric]`.
    pub fn display_value(&self, v: &Value) -> Value {
        match self {
            FieldType::Ssn => {
                let d = digits_of(v);
                if d.len() == 9 {
                    Value::String(format!("{}-{}-{}", &d[..3], &d[3..5], &d[5..]))
                } else {
                    v.clone()
                }
            }
            FieldType::CardNumber => {
                let d = digits_of(v);
                if d.is_empty() {
                    v.clone()
                } else {
                    Value::String(group_card(&d))
                }
            }
            FieldType::DriversLicense | FieldType::StateId => {
                let (state, number) = licence_parts(v);
                Value::String(match state {
                    Some(st) => format!("{st} {number}"),
                    None => number,
                })
            }
            FieldType::Biometric => Value::String(BIOMETRIC_MASK.into()),
            _ => v.clone(),
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FieldType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        FieldType::parse(s)
    }
}

/// One declared field of a collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// The key in record bodies: `[a-z][a-z0-9_]{0,63}`.
    pub name: String,
    /// What the value must look like.
    pub ty: FieldType,
    /// Whether every record must carry it.
    pub required: bool,
    /// Why this field is kept (data minimisation); optional per field.
    pub purpose: Option<String>,
}

/// A collection's schema: why it exists and what its records hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// Why the collection is kept (data minimisation, 17.03(2)(g)); required.
    pub purpose: String,
    /// The declared fields, in declaration order.
    pub fields: Vec<FieldSpec>,
    /// Residence assumed for records that carry none (a 2-letter code such as
    /// `"MA"`). `None` means [`DEFAULT_RESIDENCE`], the conservative choice.
    pub default_residence: Option<String>,
    /// Fields retired from use: still declared (records written before keep
    /// them, masked and typed as before, until their next update or their
    /// disposal), but no new value is accepted.
    pub retired: Vec<String>,
    /// Fields with a blind index (`"searchable": true`): `record find` looks
    /// their values up by keyed, truncated beacons (`beacon.rs`). Only the
    /// types of [`FieldType::is_searchable`].
    pub searchable: Vec<String>,
}

/// One problem of a record body or patch ([`Schema::field_errors`]): the
/// declared field it belongs to, if any, and the validation message (which
/// names the field, never the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The declared field, or `None` for the body as a whole.
    pub field: Option<String>,
    /// What is wrong, as [`Schema::validate`] says it.
    pub message: String,
}

/// The problems [`Schema::check`] found, each with its declared field.
type Problems = Vec<(Option<String>, Error)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A whole record body: required fields must be there.
    Record,
    /// A merge patch: only the named fields are checked.
    Patch,
}

/// The REQ-DEF-03 classification of one record body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    /// A name plus at least one sensitive element, for a Massachusetts resident.
    pub ma_personal_information: bool,
    /// The distinct sensitive types present, sorted (declaration order of [`FieldType`]).
    pub sensitive_elements: Vec<FieldType>,
    /// A full name of two words, or a given name (or initial) and a family name.
    pub has_name: bool,
    /// Whether the subject is taken to reside in Massachusetts.
    pub ma_resident: bool,
}

/// The schema file as written on disk; private so that only this format is
/// ever serialised.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    residence: Option<String>,
    fields: Vec<FieldFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purpose: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    retired: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    searchable: bool,
}

impl Schema {
    /// Builds a schema and checks it as [`Schema::from_json`] does: a
    /// non-empty purpose, 1–256 fields with unique valid names, no field that
    /// would hold a card security code, PIN or password, and a valid
    /// residence code. Purposes are trimmed and the residence upper-cased.
    pub fn new(
        purpose: impl Into<String>,
        fields: Vec<FieldSpec>,
        default_residence: Option<String>,
    ) -> Result<Schema> {
        let purpose = purpose.into().trim().to_string();
        if purpose.is_empty() {
            return Err(Error::invalid(
                "schema purpose is required (data minimisation: say why the collection is kept)",
            ));
        }
        if purpose.chars().count() > MAX_PURPOSE_CHARS {
            return Err(Error::invalid(
                "schema purpose is too long (at most 2000 characters)",
            ));
        }
        if fields.is_empty() {
            return Err(Error::invalid("schema declares no fields"));
        }
        if fields.len() > MAX_FIELDS {
            return Err(Error::invalid(
                "schema declares too many fields (at most 256)",
            ));
        }
        let mut out: Vec<FieldSpec> = Vec::with_capacity(fields.len());
        for f in fields {
            if is_never_stored_name(&f.name) {
                return Err(Error::invalid(format!(
                    "field {}: card security codes, PINs and passwords are never stored",
                    shown_name(&f.name).unwrap_or_else(|| "(name not shown)".into())
                )));
            }
            if !is_valid_field_name(&f.name) {
                return Err(Error::invalid(format!(
                    "field {}: invalid field name (expected [a-z][a-z0-9_]{{0,63}})",
                    shown_name(&f.name).unwrap_or_else(|| "(name not shown)".into())
                )));
            }
            if out.iter().any(|o| o.name == f.name) {
                return Err(Error::invalid(format!("field {}: declared twice", f.name)));
            }
            let purpose = match f.purpose {
                None => None,
                Some(p) => {
                    let p = p.trim().to_string();
                    if p.is_empty() {
                        return Err(Error::invalid(format!(
                            "field {}: purpose must not be empty (omit it instead)",
                            f.name
                        )));
                    }
                    if p.chars().count() > MAX_PURPOSE_CHARS {
                        return Err(Error::invalid(format!(
                            "field {}: purpose is too long (at most 2000 characters)",
                            f.name
                        )));
                    }
                    Some(p)
                }
            };
            out.push(FieldSpec { purpose, ..f });
        }
        let default_residence = match default_residence {
            None => None,
            Some(r) => {
                let r = r.trim().to_ascii_uppercase();
                if !is_us_state(&r) {
                    return Err(Error::invalid(
                        "schema residence: not a 2-letter US state or territory code",
                    ));
                }
                Some(r)
            }
        };
        Ok(Schema {
            purpose,
            fields: out,
            default_residence,
            retired: Vec::new(),
            searchable: Vec::new(),
        })
    }

    /// Whether `field` has a blind index (see [`Schema::searchable`]).
    pub fn is_searchable(&self, field: &str) -> bool {
        self.searchable.iter().any(|r| r == field)
    }

    /// Marks fields searchable, refusing a type that has no beacon.
    pub fn set_searchable(&mut self, fields: Vec<String>) -> Result<()> {
        for f in &fields {
            let spec = self
                .field(f)
                .ok_or_else(|| Error::invalid(format!("field {f}: not declared")))?;
            if !spec.ty.is_searchable() {
                return Err(Error::invalid(format!(
                    "field {f}: type {} cannot be searchable (only names, SSN, driver's licence, state ID, email, phone)",
                    spec.ty.as_str()
                )));
            }
        }
        self.searchable = fields;
        Ok(())
    }

    /// Whether `field` is retired (see [`Schema::retired`]).
    pub fn is_retired(&self, field: &str) -> bool {
        self.retired.iter().any(|r| r == field)
    }

    /// Checks that `next` may replace this schema without losing or
    /// invalidating a stored record: every field stays declared with its
    /// type (a field no longer wanted is retired, not removed), a new field
    /// is optional, and no optional field becomes required. Purposes,
    /// residence and retirement may change.
    pub fn check_evolution(&self, next: &Schema) -> Result<()> {
        for old in &self.fields {
            let Some(new) = next.field(&old.name) else {
                return Err(Error::invalid(format!(
                    "field {} would disappear while records may hold it: mark it \"retired\": true instead",
                    old.name
                )));
            };
            if new.ty != old.ty {
                return Err(Error::invalid(format!(
                    "field {}: its type cannot change (stored values are {}); add a new field instead",
                    old.name,
                    old.ty.as_str()
                )));
            }
            if new.required && !old.required {
                return Err(Error::invalid(format!(
                    "field {}: cannot become required (records without it exist)",
                    old.name
                )));
            }
        }
        for new in &next.fields {
            if self.field(&new.name).is_none() && new.required {
                return Err(Error::invalid(format!(
                    "field {}: a new field must be optional (existing records lack it)",
                    new.name
                )));
            }
        }
        Ok(())
    }

    /// Parses the schema file format (JSON):
    ///
    /// ```json
    /// {
    ///   "purpose": "payroll and tax reporting",
    ///   "residence": "MA",
    ///   "fields": [
    ///     {"name": "given", "type": "given_name", "required": true},
    ///     {"name": "family", "type": "family_name", "required": true},
    ///     {"name": "ssn", "type": "ssn", "required": true, "purpose": "tax reporting"}
    ///   ]
    /// }
    /// ```
    ///
    /// * `purpose` (required, non-empty): why the collection is kept, because
    ///   data minimisation starts with a stated purpose.
    /// * `residence` (optional): the residence assumed for records that do not
    ///   carry one; absent means Massachusetts (conservative).
    /// * `fields`: `name` matches `[a-z][a-z0-9_]{0,63}` and is unique; `type`
    ///   is a [`FieldType`] name; `required` defaults to `false`; `purpose`
    ///   is optional.
    ///
    /// Unknown keys are rejected so that a typo (`"requried"`) cannot silently
    /// weaken a schema. A field named like a card security code, PIN or
    /// password (`cvv`, `cvc2`, `pin`, `password`, `security_code`, ...) is
    /// refused: those are never stored.
    pub fn from_json(s: &str) -> Result<Schema> {
        let file: SchemaFile =
            serde_json::from_str(s).map_err(|e| Error::invalid(format!("schema file: {e}")))?;
        let mut fields = Vec::with_capacity(file.fields.len());
        let mut retired = Vec::new();
        let mut searchable = Vec::new();
        for f in file.fields {
            // Refuse never-stored names before anything else looks at them.
            if is_never_stored_name(&f.name) {
                return Err(Error::invalid(format!(
                    "field {}: card security codes, PINs and passwords are never stored",
                    shown_name(&f.name).unwrap_or_else(|| "(name not shown)".into())
                )));
            }
            let ty = FieldType::parse(&f.ty).map_err(|e| match e {
                Error::InvalidInput(m) => Error::invalid(format!(
                    "field {}: {m}",
                    shown_name(&f.name).unwrap_or_else(|| "(name not shown)".into())
                )),
                other => other,
            })?;
            if f.retired {
                if f.required {
                    return Err(Error::invalid(format!(
                        "field {}: a retired field cannot be required",
                        f.name
                    )));
                }
                retired.push(f.name.clone());
            }
            if f.searchable {
                searchable.push(f.name.clone());
            }
            fields.push(FieldSpec {
                name: f.name,
                ty,
                required: f.required,
                purpose: f.purpose,
            });
        }
        let mut schema = Schema::new(file.purpose, fields, file.residence)?;
        schema.retired = retired;
        schema.set_searchable(searchable)?;
        Ok(schema)
    }

    /// Writes the schema file format of [`Schema::from_json`] (pretty JSON,
    /// canonical type names); the output parses back to an equal schema.
    pub fn to_json(&self) -> String {
        let file = SchemaFile {
            purpose: self.purpose.clone(),
            residence: self.default_residence.clone(),
            fields: self
                .fields
                .iter()
                .map(|f| FieldFile {
                    name: f.name.clone(),
                    ty: f.ty.as_str().to_string(),
                    required: f.required,
                    purpose: f.purpose.clone(),
                    retired: self.is_retired(&f.name),
                    searchable: self.is_searchable(&f.name),
                })
                .collect(),
        };
        // Only strings and booleans: serialisation cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Validates a record body (a JSON object) and returns it normalised.
    ///
    /// Every key must be declared; a key named like a card security code,
    /// PIN or password is refused as never stored; every required field must
    /// be present and not `null` (an optional field given as `null` is
    /// dropped). Normal forms: SSN as 9 digits; card and account numbers as
    /// digits only; licence and state ID as `{"state": "MA", "number":
    /// "S12345678"}` upper-cased; phone as digits with an optional leading
    /// `+`; email with the domain lower-cased; date as `YYYY-MM-DD`; names,
    /// text and address parts trimmed; residence state upper-cased.
    ///
    /// Errors name the field, never the value. An undeclared key is named
    /// only when it looks like a field name (so that a value pasted as a key
    /// is not echoed back).
    pub fn validate(&self, body: &Value) -> Result<Map<String, Value>> {
        let (out, mut errors) = self.check(body, Check::Record, true);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors.swap_remove(0).1)
        }
    }

    /// Every problem [`Schema::validate`] would find in a record body, not
    /// only the first, each with the declared field it belongs to (`None`
    /// for a problem of the body as a whole or of an undeclared key): what
    /// a form shows beside each field, so that one submission tells the
    /// user everything to fix. The messages are `validate`'s own (the first
    /// one is the error `validate` returns) and never contain a value.
    pub fn field_errors(&self, body: &Value) -> Vec<FieldError> {
        Self::messages(self.check(body, Check::Record, false).1)
    }

    /// Like [`Schema::field_errors`] for a merge patch of some fields (a
    /// correction): only the fields it names are checked, a `null` removes
    /// the field (refused when the field is required).
    pub fn patch_errors(&self, patch: &Value) -> Vec<FieldError> {
        Self::messages(self.check(patch, Check::Patch, false).1)
    }

    fn messages(errors: Problems) -> Vec<FieldError> {
        errors
            .into_iter()
            .map(|(field, e)| FieldError {
                field,
                message: match e {
                    Error::InvalidInput(m) => m,
                    e => e.to_string(),
                },
            })
            .collect()
    }

    /// The checks of [`Schema::validate`]: the normalised body and the
    /// problems found (only the first when `first_only`).
    fn check(&self, body: &Value, mode: Check, first_only: bool) -> (Map<String, Value>, Problems) {
        let mut errors = Vec::new();
        let mut out = Map::new();
        let Some(obj) = body.as_object() else {
            let e = Error::invalid(match mode {
                Check::Record => "record body must be a JSON object",
                Check::Patch => "a record patch is a JSON object of fields (null removes a field)",
            });
            return (out, vec![(None, e)]);
        };
        for key in obj.keys() {
            let e = if is_never_stored_name(key) {
                Error::invalid(format!(
                    "{}: card security codes, PINs and passwords are never stored",
                    field_label(key)
                ))
            } else if self.field(key).is_none() {
                Error::invalid(format!(
                    "{} is not declared in collection schema",
                    field_label(key)
                ))
            } else if self.is_retired(key) && !obj[key].is_null() {
                Error::invalid(format!("field {key} is retired: no new value is accepted"))
            } else {
                continue;
            };
            let field = self.field(key).map(|f| f.name.clone());
            errors.push((field, e));
            if first_only {
                return (out, errors);
            }
        }
        for spec in &self.fields {
            let present = obj.contains_key(&spec.name);
            match obj.get(&spec.name) {
                None | Some(Value::Null) => {
                    if spec.required && (mode == Check::Record || present) {
                        errors.push((
                            Some(spec.name.clone()),
                            Error::invalid(format!("field {} is required", spec.name)),
                        ));
                    }
                }
                Some(v) => match spec.ty.normalise(&spec.name, v) {
                    Ok(n) => {
                        out.insert(spec.name.clone(), n);
                    }
                    Err(e) => {
                        if !errors.iter().any(|(f, _)| f.as_deref() == Some(&spec.name)) {
                            errors.push((Some(spec.name.clone()), e));
                        }
                    }
                },
            }
            if first_only && !errors.is_empty() {
                return (out, errors);
            }
        }
        (out, errors)
    }

    /// The names of the sensitive fields, in declaration order.
    pub fn sensitive_fields(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|f| f.ty.is_sensitive())
            .map(|f| f.name.as_str())
            .collect()
    }

    /// The declared field of that name.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// REQ-DEF-03 classification of a normalised body.
    ///
    /// A record is Massachusetts personal information (93H §1, 93I §1) when
    /// it holds a name — a full name of at least two words, or a given name
    /// or initial together with a family name — plus at least one sensitive
    /// element (SSN, licence or state ID, account, card, biometric), for a
    /// Massachusetts resident. Residence comes from the first residence-state
    /// field present, else the state of the first structured US address,
    /// else the schema default, else Massachusetts.
    pub fn classify(&self, body: &Map<String, Value>) -> Classification {
        let mut sensitive = Vec::new();
        let (mut given, mut family, mut full) = (false, false, false);
        let mut declared_residence: Option<String> = None;
        let mut address_residence: Option<String> = None;
        for spec in &self.fields {
            let Some(v) = body.get(&spec.name) else {
                continue;
            };
            if is_blank(v) {
                continue;
            }
            if spec.ty.is_sensitive() {
                sensitive.push(spec.ty);
            }
            match spec.ty {
                FieldType::GivenName => given |= name_words(v) >= 1,
                FieldType::FamilyName => family |= name_words(v) >= 1,
                FieldType::FullName => full |= name_words(v) >= 2,
                FieldType::ResidenceState => {
                    if declared_residence.is_none()
                        && let Some(s) = v.as_str()
                    {
                        declared_residence = Some(s.trim().to_ascii_uppercase());
                    }
                }
                FieldType::Address if address_residence.is_none() => {
                    address_residence = address_state(v);
                }
                _ => {}
            }
        }
        sensitive.sort();
        sensitive.dedup();
        let residence = declared_residence
            .or(address_residence)
            .or_else(|| {
                self.default_residence
                    .as_ref()
                    .map(|r| r.trim().to_ascii_uppercase())
            })
            .unwrap_or_else(|| DEFAULT_RESIDENCE.to_string());
        let has_name = full || (given && family);
        let ma_resident = residence == "MA";
        Classification {
            ma_personal_information: has_name && ma_resident && !sensitive.is_empty(),
            sensitive_elements: sensitive,
            has_name,
            ma_resident,
        }
    }

    /// Masks every sensitive field of a normalised body except those named in
    /// `reveal`, which are shown formatted ([`FieldType::display_value`]).
    /// Biometric fields stay `[biometric]` even when listed. Non-sensitive
    /// fields are returned as stored. Keys the schema does not declare are
    /// dropped, since nothing says how to display them safely. Checking that
    /// the caller may reveal, and auditing it, is the caller's job; see also
    /// [`Schema::check_reveal`].
    pub fn mask(&self, body: &Map<String, Value>, reveal: &[&str]) -> Map<String, Value> {
        self.mask_owned(body.clone(), reveal)
    }

    /// [`Schema::mask`] taking the body by value: non-sensitive values are
    /// moved, not copied, and no second copy of the plaintext is left behind.
    pub fn mask_owned(&self, body: Map<String, Value>, reveal: &[&str]) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in body {
            let Some(spec) = self.field(&k) else { continue };
            let shown = if v.is_null() || !spec.ty.is_sensitive() {
                v
            } else if spec.ty != FieldType::Biometric && reveal.contains(&k.as_str()) {
                spec.ty.display_value(&v)
            } else {
                spec.ty.mask_value(&v)
            };
            out.insert(k, shown);
        }
        out
    }

    /// Checks a reveal request before it is authorised and audited: every
    /// name must be declared, and biometric fields are refused because they
    /// are never revealed through the API (§D). Non-sensitive fields are
    /// accepted silently: they are already visible, so there is nothing to
    /// reveal.
    pub fn check_reveal(&self, fields: &[&str]) -> Result<()> {
        for name in fields {
            match self.field(name) {
                None => {
                    return Err(Error::invalid(format!(
                        "{} is not declared in collection schema",
                        field_label(name)
                    )));
                }
                Some(spec) if spec.ty == FieldType::Biometric => {
                    return Err(Error::invalid(format!(
                        "field {}: biometric data is never revealed",
                        spec.name
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Names that must never be stored.

/// Whether a field or key name denotes a card security code, PIN or password,
/// which the vault refuses to store (§D). Matching is deliberately broad:
/// a false positive only forces a schema author to pick another name.
pub fn is_never_stored_name(name: &str) -> bool {
    // Fast path for the usual `[a-z0-9_]` field names (checked on every key
    // of every record written): the same tests without allocating.
    if name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        let mut buf = [0u8; 64];
        let mut n = 0;
        for b in name.bytes().filter(|&b| b != b'_') {
            buf[n] = b;
            n += 1;
        }
        let compact = std::str::from_utf8(&buf[..n]).expect("ASCII");
        return never_stored_parts(name, compact);
    }
    let lower = name.trim().to_lowercase();
    let compact: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
    never_stored_parts(&lower, &compact)
}

/// [`is_never_stored_name`] on a lower-cased name and its alphanumeric characters.
fn never_stored_parts(lower: &str, compact: &str) -> bool {
    const CONTAINS: &[&str] = &[
        "cvv",
        "cvc",
        "cvn",
        "password",
        "passwd",
        "passcode",
        "passphrase",
        "securitycode",
        "verificationcode",
        "verificationvalue",
        "pincode",
        "pinnumber",
    ];
    if CONTAINS.iter().any(|p| compact.contains(p)) {
        return true;
    }
    const TOKENS: &[&str] = &["pin", "pins", "pwd", "csc", "cav", "cid"];
    if lower
        .split(|c: char| !c.is_alphanumeric())
        .any(|t| TOKENS.contains(&t))
    {
        return true;
    }
    const SUFFIXES: &[&str] = &["cardpin", "atmpin", "debitpin", "accountpin"];
    SUFFIXES.iter().any(|s| compact.ends_with(s))
}

// ---------------------------------------------------------------------------
// Small helpers.

/// `[a-z][a-z0-9_]{0,63}`.
fn is_valid_field_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A key as it may appear in an error: only when it looks like a field name
/// and holds no run of four digits, so a value pasted as a key is never
/// echoed.
pub(crate) fn shown_name(name: &str) -> Option<String> {
    let mut run = 0;
    for c in name.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 4 {
            return None;
        }
    }
    is_valid_field_name(name).then(|| name.to_string())
}

fn field_label(name: &str) -> String {
    match shown_name(name) {
        Some(n) => format!("field {n}"),
        None => "a field (name not shown: it does not look like a field name)".to_string(),
    }
}

fn bad(field: &str, what: &str) -> Error {
    Error::invalid(format!("field {field}: {what}"))
}

fn expect_str<'a>(field: &str, v: &'a Value) -> Result<&'a str> {
    v.as_str().ok_or_else(|| bad(field, "expected a string"))
}

fn is_us_state(code: &str) -> bool {
    US_STATE_CODES.contains(&code)
}

fn is_us_country(c: &str) -> bool {
    matches!(
        c.trim().to_ascii_uppercase().as_str(),
        "US" | "USA" | "U.S." | "U.S.A." | "UNITED STATES" | "UNITED STATES OF AMERICA"
    )
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// Words of a name value that contain at least one letter.
fn name_words(v: &Value) -> usize {
    v.as_str()
        .map(|s| {
            s.split_whitespace()
                .filter(|w| w.chars().any(char::is_alphabetic))
                .count()
        })
        .unwrap_or(0)
}

/// The residence implied by a structured US address.
fn address_state(v: &Value) -> Option<String> {
    let m = v.as_object()?;
    if let Some(c) = m.get("country").and_then(Value::as_str)
        && !c.trim().is_empty()
        && !is_us_country(c)
    {
        return None;
    }
    let st = m.get("state")?.as_str()?.trim().to_ascii_uppercase();
    is_us_state(&st).then_some(st)
}

/// The ASCII digits of a string value (empty for anything else).
fn digits_of(v: &Value) -> String {
    v.as_str()
        .map(|s| s.chars().filter(char::is_ascii_digit).collect())
        .unwrap_or_default()
}

/// The last four characters, fewer for short values (never the whole of a
/// value under eight characters), left-padded with `*` to four.
fn tail4(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let visible = if n >= 8 { 4 } else { n.saturating_sub(4) };
    let mut out = "*".repeat(4 - visible);
    out.extend(&chars[n - visible..]);
    out
}

/// Issuing state (if a valid code) and number of a stored licence value.
pub(crate) fn licence_parts(v: &Value) -> (Option<String>, String) {
    let (state, number) = match v {
        Value::Object(m) => (
            m.get("state").and_then(Value::as_str).unwrap_or(""),
            m.get("number").and_then(Value::as_str).unwrap_or(""),
        ),
        Value::String(s) => s.split_once(':').unwrap_or(("", s.as_str())),
        _ => ("", ""),
    };
    let state = state.trim().to_ascii_uppercase();
    let number: String = number
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (is_us_state(&state).then_some(state), number)
}

/// Card digits in display groups: 4-6-5 for 15-digit American Express,
/// otherwise fours.
fn group_card(d: &str) -> String {
    if d.len() == 15 && (d.starts_with("34") || d.starts_with("37")) {
        return format!("{} {} {}", &d[..4], &d[4..10], &d[10..]);
    }
    let mut out = String::with_capacity(d.len() + d.len() / 4);
    for (i, c) in d.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Digits of a number written with optional spaces and dashes; `None` when
/// any other character appears.
fn digits_with_separators(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' => {}
            _ => return None,
        }
    }
    Some(out)
}

fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut x = u32::from(b - b'0');
        if i % 2 == 1 {
            x *= 2;
            if x > 9 {
                x -= 9;
            }
        }
        sum += x;
    }
    sum.is_multiple_of(10)
}

/// Decoded length of standard, padded base64 (`A–Z a–z 0–9 + /`, `=`
/// padding, length a multiple of four), or `None` if the text is not that.
fn base64_decoded_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let body = &b[..b.len() - pad];
    if !body
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
    {
        return None;
    }
    Some(b.len() / 4 * 3 - pad)
}

/// Refuses a card value given as an object, with a sharper message when the
/// object carries a security code or PIN.
fn refuse_object_with_secrets(field: &str, v: &Value) -> Result<()> {
    if let Value::Object(m) = v
        && m.keys().any(|k| is_never_stored_name(k))
    {
        return Err(bad(
            field,
            "card security codes, PINs and passwords are never stored",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Per-type validators. Each returns the normalised value; none puts the
// submitted value in an error.

fn norm_name(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?.trim();
    let n = s.chars().count();
    let ok = (1..=MAX_NAME_CHARS).contains(&n)
        && s.chars().any(char::is_alphabetic)
        && s.chars()
            .all(|c| c.is_alphabetic() || matches!(c, ' ' | '\'' | '\u{2019}' | '-' | '.'));
    if !ok {
        return Err(bad(
            field,
            "not a valid name (1-100 letters, spaces, apostrophes, hyphens, periods)",
        ));
    }
    Ok(Value::String(s.to_string()))
}

fn norm_ssn(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?.trim();
    let b = s.as_bytes();
    let digits: String = match b.len() {
        9 if b.iter().all(u8::is_ascii_digit) => s.to_string(),
        // 123-45-6789, or 123 45 6789 as spreadsheets often hold it.
        11 if (b[3] == b'-' || b[3] == b' ')
            && b[6] == b[3]
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 3 || i == 6 || c.is_ascii_digit()) =>
        {
            s.chars().filter(char::is_ascii_digit).collect()
        }
        _ => return Err(bad(field, "not a valid SSN")),
    };
    let (area, group, serial) = (&digits[..3], &digits[3..5], &digits[5..]);
    if area == "000" || area == "666" || area.starts_with('9') || group == "00" || serial == "0000"
    {
        return Err(bad(field, "not a valid SSN"));
    }
    Ok(Value::String(digits))
}

fn norm_licence(field: &str, v: &Value, kind: &str) -> Result<Value> {
    let expected = || {
        bad(
            field,
            &format!(
                "expected a {kind} as {{\"state\", \"number\"}}, \"ST:NUMBER\" or \"ST NUMBER\""
            ),
        )
    };
    let (state, number) = match v {
        // "MA S12345678" is how a revealed licence prints: input takes it back.
        Value::String(s) => s
            .split_once(':')
            .or_else(|| {
                let t = s.trim_start();
                let state = t.get(..2)?;
                (state.bytes().all(|b| b.is_ascii_alphabetic())
                    && t[2..].starts_with(char::is_whitespace))
                .then(|| (state, &t[2..]))
            })
            .ok_or_else(expected)?,
        Value::Object(m) => {
            for k in m.keys() {
                if is_never_stored_name(k) {
                    return Err(bad(
                        field,
                        "card security codes, PINs and passwords are never stored",
                    ));
                }
                if k != "state" && k != "number" {
                    return Err(expected());
                }
            }
            let st = m
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(expected)?;
            let no = m
                .get("number")
                .and_then(Value::as_str)
                .ok_or_else(expected)?;
            (st, no)
        }
        _ => return Err(expected()),
    };
    let state = state.trim().to_ascii_uppercase();
    if !is_us_state(&state) {
        return Err(bad(
            field,
            "not a valid issuing state (2-letter US state or territory code)",
        ));
    }
    let number: String = number
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !number.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad(field, &format!("not a valid {kind} number")));
    }
    let ok = if state == "MA" {
        let b = number.as_bytes();
        (b.len() == 9 && b[0] == b'S' && b[1..].iter().all(u8::is_ascii_digit))
            || (b.len() == 9 && b.starts_with(b"SA") && b[2..].iter().all(u8::is_ascii_digit))
    } else {
        (4..=20).contains(&number.len())
    };
    if !ok {
        return Err(bad(
            field,
            &format!("not a valid {kind} number for the issuing state"),
        ));
    }
    let mut m = Map::new();
    m.insert("state".into(), Value::String(state));
    m.insert("number".into(), Value::String(number));
    Ok(Value::Object(m))
}

fn norm_account(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?;
    match digits_with_separators(s) {
        Some(d) if (4..=17).contains(&d.len()) => Ok(Value::String(d)),
        _ => Err(bad(field, "not a valid account number (4-17 digits)")),
    }
}

fn norm_card(field: &str, v: &Value) -> Result<Value> {
    refuse_object_with_secrets(field, v)?;
    let s = expect_str(field, v)?;
    match digits_with_separators(s) {
        Some(d) if (13..=19).contains(&d.len()) && luhn_valid(&d) => Ok(Value::String(d)),
        _ => Err(bad(field, "not a valid card number")),
    }
}

fn norm_email(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?.trim();
    let invalid = || bad(field, "not a valid email address");
    if s.chars().count() > MAX_EMAIL_CHARS || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid());
    }
    let (local, domain) = s.split_once('@').ok_or_else(invalid)?;
    if local.is_empty() || domain.contains('@') || !domain.contains('.') {
        return Err(invalid());
    }
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    if !labels_ok {
        return Err(invalid());
    }
    Ok(Value::String(format!("{local}@{}", domain.to_lowercase())))
}

fn norm_phone(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?.trim();
    let (plus, rest) = match s.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut digits = String::new();
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(bad(field, "not a valid phone number (7-15 digits)")),
        }
    }
    if !(7..=15).contains(&digits.len()) {
        return Err(bad(field, "not a valid phone number (7-15 digits)"));
    }
    Ok(Value::String(if plus {
        format!("+{digits}")
    } else {
        digits
    }))
}

fn norm_date(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?.trim();
    let invalid = || {
        bad(
            field,
            "not a valid date (expected YYYY-MM-DD or MM/DD/YYYY)",
        )
    };
    // US spreadsheets write 03/14/1979 or 3/14/1979; a two-digit year is
    // refused (1979 or 2079 cannot be told apart).
    if s.contains('/') {
        let parts: Vec<&str> = s.split('/').collect();
        let [m, d, y] = parts[..] else {
            return Err(invalid());
        };
        let ok = |p: &str, lens: &[usize]| {
            lens.contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit())
        };
        if !(ok(m, &[1, 2]) && ok(d, &[1, 2]) && ok(y, &[4])) {
            return Err(invalid());
        }
        let (year, month, day): (i16, i8, i8) = (
            y.parse().map_err(|_| invalid())?,
            m.parse().map_err(|_| invalid())?,
            d.parse().map_err(|_| invalid())?,
        );
        if year < 1 {
            return Err(invalid());
        }
        let date = jiff::civil::Date::new(year, month, day).map_err(|_| invalid())?;
        return Ok(Value::String(date.to_string()));
    }
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(invalid());
    }
    let year: i16 = s[..4].parse().map_err(|_| invalid())?;
    let month: i8 = s[5..7].parse().map_err(|_| invalid())?;
    let day: i8 = s[8..].parse().map_err(|_| invalid())?;
    if year < 1 {
        return Err(invalid());
    }
    let date = jiff::civil::Date::new(year, month, day).map_err(|_| invalid())?;
    Ok(Value::String(date.to_string()))
}

fn norm_text(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?;
    if s.chars().count() > MAX_TEXT_CHARS {
        return Err(bad(field, "text is too long (at most 4096 characters)"));
    }
    Ok(Value::String(s.to_string()))
}

fn norm_address(field: &str, v: &Value) -> Result<Value> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            let n = s.chars().count();
            if n == 0 || n > MAX_ADDRESS_CHARS {
                return Err(bad(field, "not a valid address (1-512 characters)"));
            }
            Ok(Value::String(s.to_string()))
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, part) in m {
                if is_never_stored_name(k) {
                    return Err(bad(
                        field,
                        "card security codes, PINs and passwords are never stored",
                    ));
                }
                if !ADDRESS_KEYS.contains(&k.as_str()) {
                    return Err(bad(
                        field,
                        "address objects may only have line1, line2, city, state, postal_code, country",
                    ));
                }
                let text = match part {
                    Value::Null => continue,
                    Value::String(s) => s.trim(),
                    _ => return Err(bad(field, "address parts must be strings")),
                };
                if text.chars().count() > MAX_ADDRESS_CHARS {
                    return Err(bad(
                        field,
                        "address part is too long (at most 512 characters)",
                    ));
                }
                if !text.is_empty() {
                    out.insert(k.clone(), Value::String(text.to_string()));
                }
            }
            if out.is_empty() {
                return Err(bad(field, "address is empty"));
            }
            let us = out
                .get("country")
                .and_then(Value::as_str)
                .is_none_or(is_us_country);
            if let Some(Value::String(st)) = out.get_mut("state")
                && us
            {
                let code = st.to_ascii_uppercase();
                if !is_us_state(&code) {
                    return Err(bad(
                        field,
                        "address state must be a 2-letter US state or territory code",
                    ));
                }
                *st = code;
            }
            Ok(Value::Object(out))
        }
        _ => Err(bad(field, "expected an address string or object")),
    }
}

fn norm_biometric(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?;
    // Bound the work before scanning: 64 KiB decodes from at most this many characters.
    if s.len() > MAX_BIOMETRIC_BYTES.div_ceil(3) * 4 {
        return Err(bad(field, "biometric data is too large (at most 64 KiB)"));
    }
    match base64_decoded_len(s) {
        None => Err(bad(field, "biometric data must be standard padded base64")),
        Some(n) if n > MAX_BIOMETRIC_BYTES => {
            Err(bad(field, "biometric data is too large (at most 64 KiB)"))
        }
        Some(_) => Ok(Value::String(s.to_string())),
    }
}

fn norm_residence(field: &str, v: &Value) -> Result<Value> {
    let s = expect_str(field, v)?.trim().to_ascii_uppercase();
    if !is_us_state(&s) {
        return Err(bad(field, "not a 2-letter US state or territory code"));
    }
    Ok(Value::String(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        #[test]
        fn never_stored_fast_path_agrees_with_the_general_one(
            name in "[a-z0-9_]{0,64}|(cvv|pin|pwd|card_pin|pass_code|[a-z]{1,3})(_[a-z0-9]{1,5}){0,3}"
        ) {
            // A leading space takes the general (allocating) path; trimming
            // makes the two inputs equivalent.
            proptest::prop_assert_eq!(
                is_never_stored_name(&name),
                is_never_stored_name(&format!(" {name}"))
            );
        }
    }

    fn spec(name: &str, ty: FieldType, required: bool) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            ty,
            required,
            purpose: None,
        }
    }

    fn person_schema(residence: Option<&str>) -> Schema {
        Schema::new(
            "customer records",
            vec![
                spec("given", FieldType::GivenName, false),
                spec("family", FieldType::FamilyName, false),
                spec("name", FieldType::FullName, false),
                spec("ssn", FieldType::Ssn, false),
                spec("dl", FieldType::DriversLicense, false),
                spec("sid", FieldType::StateId, false),
                spec("acct", FieldType::AccountNumber, false),
                spec("card", FieldType::CardNumber, false),
                spec("email", FieldType::Email, false),
                spec("phone", FieldType::Phone, false),
                spec("addr", FieldType::Address, false),
                spec("dob", FieldType::Date, false),
                spec("notes", FieldType::Text, false),
                spec("bio", FieldType::Biometric, false),
                spec("res", FieldType::ResidenceState, false),
            ],
            residence.map(String::from),
        )
        .unwrap()
    }

    /// Appends a Luhn check digit to a digit prefix.
    fn with_luhn(prefix: &str) -> String {
        for d in 0..10 {
            let s = format!("{prefix}{d}");
            if luhn_valid(&s) {
                return s;
            }
        }
        unreachable!()
    }

    /// Table runner: (type, input, Some(expected normal form) | None for invalid).
    fn run_table(ty: FieldType, cases: &[(Value, Option<Value>)]) {
        for (input, expected) in cases {
            let got = ty.normalise("f", input);
            match expected {
                Some(want) => {
                    assert_eq!(
                        got.as_ref().ok(),
                        Some(want),
                        "{ty}: valid case {input} failed"
                    )
                }
                None => assert!(
                    matches!(got, Err(Error::InvalidInput(_))),
                    "{ty}: invalid case {input} accepted"
                ),
            }
        }
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    fn ok(v: &str) -> Option<Value> {
        Some(s(v))
    }

    #[test]
    fn ssn_table() {
        run_table(
            FieldType::Ssn,
            &[
                (s("123-45-6789"), ok("123456789")),
                (s("123456789"), ok("123456789")),
                (s(" 001-01-0001 "), ok("001010001")),
                (s("665-99-9999"), ok("665999999")),
                (s("899-12-3456"), ok("899123456")),
                (s("000-12-3456"), None),
                (s("666-12-3456"), None),
                (s("900-12-3456"), None),
                (s("999-12-3456"), None),
                (s("987654321"), None),
                (s("123-00-4567"), None),
                (s("123-45-0000"), None),
                (s("12-345-6789"), None),
                (s("123-456-789"), None),
                (s("123 45 6789"), ok("123456789")),
                (s("123-45 6789"), None),
                (s("123  45 6789"), None),
                (s("1234567890"), None),
                (s("12345678"), None),
                (s("abc-de-fghi"), None),
                (s("１２３456789"), None),
                (json!(123456789), None),
                (json!({"number": "123456789"}), None),
            ],
        );
    }

    #[test]
    fn licence_table() {
        let dl = |st: &str, no: &str| Some(json!({"state": st, "number": no}));
        for ty in [FieldType::DriversLicense, FieldType::StateId] {
            run_table(
                ty,
                &[
                    (
                        json!({"state": "MA", "number": "S12345678"}),
                        dl("MA", "S12345678"),
                    ),
                    (
                        json!({"state": "ma", "number": "s12345678"}),
                        dl("MA", "S12345678"),
                    ),
                    (s("MA:S12345678"), dl("MA", "S12345678")),
                    (s("MA S12345678"), dl("MA", "S12345678")),
                    (s(" ny  123-456-789"), dl("NY", "123456789")),
                    (s("MAS12345678"), None),
                    (s("MA:SA1234567"), dl("MA", "SA1234567")),
                    (s("ny: 123-456-789"), dl("NY", "123456789")),
                    (s("CA:A1234567"), dl("CA", "A1234567")),
                    (s("PR:1234"), dl("PR", "1234")),
                    (s("MA:12345678"), None),
                    (s("MA:S1234567"), None),
                    (s("MA:S123456789"), None),
                    (s("MA:X12345678"), None),
                    (s("NY:123"), None),
                    (s("NY:123456789012345678901"), None),
                    (s("NY:12#456"), None),
                    (s("ZZ:12345678"), None),
                    (s("S12345678"), None),
                    (json!({"state": "MA"}), None),
                    (
                        json!({"state": "MA", "number": "S12345678", "extra": "x"}),
                        None,
                    ),
                    (
                        json!({"state": "MA", "number": "S12345678", "pin": "1234"}),
                        None,
                    ),
                    (json!(12345678), None),
                ],
            );
        }
    }

    #[test]
    fn account_table() {
        run_table(
            FieldType::AccountNumber,
            &[
                (s("1234"), ok("1234")),
                (s("0001-2345 6789"), ok("000123456789")),
                (s("12345678901234567"), ok("12345678901234567")),
                (s("123"), None),
                (s("123456789012345678"), None),
                (s("12AB5678"), None),
                (s(""), None),
                (json!(12345678), None),
            ],
        );
    }

    #[test]
    fn card_table() {
        let c12 = with_luhn("41111111111");
        let c13 = with_luhn("411111111111");
        let c19 = with_luhn("411111111111111111");
        let c20 = with_luhn("4111111111111111111");
        assert_eq!(
            (c12.len(), c13.len(), c19.len(), c20.len()),
            (12, 13, 19, 20)
        );
        run_table(
            FieldType::CardNumber,
            &[
                (s("4111 1111 1111 1111"), ok("4111111111111111")),
                (s("4111-1111-1111-1111"), ok("4111111111111111")),
                (s("378282246310005"), ok("378282246310005")),
                (s("5555555555554444"), ok("5555555555554444")),
                (s(&c13), Some(s(&c13))),
                (s(&c19), Some(s(&c19))),
                (s(&c12), None),
                (s(&c20), None),
                (s("4111111111111112"), None),
                (s("4111 1111 1111 1113"), None),
                (s("4111x1111x1111x1111"), None),
                (json!(4111111111111111u64), None),
                (json!({"number": "4111111111111111", "cvv": "123"}), None),
            ],
        );
        // A card object with a security code is refused as never stored.
        let e = FieldType::CardNumber
            .normalise("card", &json!({"number": "4111111111111111", "cvv": "123"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("never stored"), "{e}");
    }

    #[test]
    fn name_table() {
        for ty in [
            FieldType::GivenName,
            FieldType::FamilyName,
            FieldType::FullName,
        ] {
            run_table(
                ty,
                &[
                    (s("  Jane "), ok("Jane")),
                    (s("J."), ok("J.")),
                    (s("O'Brien-Smith"), ok("O'Brien-Smith")),
                    (s("José Ñúñez"), ok("José Ñúñez")),
                    (s("Zoë D’Arcy"), ok("Zoë D’Arcy")),
                    (s(&"a".repeat(100)), ok(&"a".repeat(100))),
                    (s(&"a".repeat(101)), None),
                    (s(""), None),
                    (s("   "), None),
                    (s("."), None),
                    (s("John3"), None),
                    (s("Jane\nDoe"), None),
                    (s("Robert'); DROP"), None),
                    (json!(42), None),
                ],
            );
        }
    }

    #[test]
    fn email_table() {
        run_table(
            FieldType::Email,
            &[
                (s("Jane.Doe@Example.COM"), ok("Jane.Doe@example.com")),
                (s(" a@b.co "), ok("a@b.co")),
                (s("x+tag@mail.example.org"), ok("x+tag@mail.example.org")),
                (s("no-at-sign.example.com"), None),
                (s("@example.com"), None),
                (s("a@b@example.com"), None),
                (s("someone@localhost"), None),
                (s("someone@.example.com"), None),
                (s("someone@example..com"), None),
                (s("some one@example.com"), None),
                (s(&format!("{}@example.com", "a".repeat(250))), None),
                (json!(1), None),
            ],
        );
    }

    #[test]
    fn phone_table() {
        run_table(
            FieldType::Phone,
            &[
                (s("(617) 555-0123"), ok("6175550123")),
                (s("+1 617.555.0123"), ok("+16175550123")),
                (s("5550123"), ok("5550123")),
                (s("+123456789012345"), ok("+123456789012345")),
                (s("555012"), None),
                (s("1234567890123456"), None),
                (s("617-555-01x3"), None),
                (s("1+6175550123"), None),
                (s("++16175550123"), None),
                (json!(6175550123u64), None),
            ],
        );
    }

    #[test]
    fn date_table() {
        run_table(
            FieldType::Date,
            &[
                (s("1980-01-31"), ok("1980-01-31")),
                (s("2024-02-29"), ok("2024-02-29")),
                (s("2023-02-29"), None),
                (s("1980-13-01"), None),
                (s("1980-00-10"), None),
                (s("1980-1-31"), None),
                (s("31/01/1980"), None),
                (s("03/14/1979"), ok("1979-03-14")),
                (s(" 3/4/1979 "), ok("1979-03-04")),
                (s("03/14/79"), None),
                (s("02/30/2020"), None),
                (s("03/14/1979/1"), None),
                (s("03-14-1979"), None),
                (s("0000-01-01"), None),
                (s("1980-01-31T00:00"), None),
                (s("+1980-01-3"), None),
                (json!(19800131), None),
            ],
        );
    }

    #[test]
    fn text_table() {
        run_table(
            FieldType::Text,
            &[
                (s(""), ok("")),
                (s("line one\nline two"), ok("line one\nline two")),
                (s(&"é".repeat(4096)), ok(&"é".repeat(4096))),
                (s(&"x".repeat(4097)), None),
                (json!(["a"]), None),
            ],
        );
    }

    #[test]
    fn address_table() {
        run_table(
            FieldType::Address,
            &[
                (s(" 1 Main St, Boston MA "), ok("1 Main St, Boston MA")),
                (
                    json!({"line1": " 1 Main St ", "city": "Boston", "state": "ma", "postal_code": "02108", "line2": ""}),
                    Some(
                        json!({"line1": "1 Main St", "city": "Boston", "state": "MA", "postal_code": "02108"}),
                    ),
                ),
                (
                    json!({"city": "Toronto", "state": "Ontario", "country": "Canada"}),
                    Some(json!({"city": "Toronto", "state": "Ontario", "country": "Canada"})),
                ),
                (s(""), None),
                (s(&"x".repeat(513)), None),
                (json!({}), None),
                (json!({"line1": "1 Main St", "zip": "02108"}), None),
                (json!({"line1": 1}), None),
                (json!({"state": "Massachusetts"}), None),
                (json!({"state": "ZZ", "country": "US"}), None),
                (
                    json!({"line1": "1 Main St", "password": "hunter2hunter2"}),
                    None,
                ),
                (json!(5), None),
            ],
        );
    }

    #[test]
    fn biometric_table() {
        let max = "A".repeat(MAX_BIOMETRIC_BYTES / 3 * 4) + "AA=="; // 65536 bytes decoded
        let over = "A".repeat(MAX_BIOMETRIC_BYTES / 3 * 4) + "AAA="; // 65537 bytes decoded
        assert_eq!(base64_decoded_len(&max), Some(MAX_BIOMETRIC_BYTES));
        assert_eq!(base64_decoded_len(&over), Some(MAX_BIOMETRIC_BYTES + 1));
        run_table(
            FieldType::Biometric,
            &[
                (s("AAECAwQ="), ok("AAECAwQ=")),
                (s("AQ=="), ok("AQ==")),
                (s("ab+/"), ok("ab+/")),
                (s(&max), Some(s(&max))),
                (s(&over), None),
                (s(""), None),
                (s("AQ"), None),
                (s("AQ="), None),
                (s("A==="), None),
                (s("AQ==AQ=="), None),
                (s("ab-_"), None),
                (s("AAEC AwQ="), None),
                (json!([1, 2, 3]), None),
            ],
        );
    }

    #[test]
    fn residence_table() {
        run_table(
            FieldType::ResidenceState,
            &[
                (s("MA"), ok("MA")),
                (s(" ny "), ok("NY")),
                (s("dc"), ok("DC")),
                (s("PR"), ok("PR")),
                (s("Massachusetts"), None),
                (s("ZZ"), None),
                (s(""), None),
                (json!(1), None),
            ],
        );
    }

    #[test]
    fn luhn_and_base64_helpers() {
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert_eq!(base64_decoded_len("TWFu"), Some(3));
        assert_eq!(base64_decoded_len("TWE="), Some(2));
        assert_eq!(base64_decoded_len("TQ=="), Some(1));
        assert_eq!(base64_decoded_len("T==="), None);
    }

    /// No error message for an invalid value contains the value, its last
    /// four characters or its last four digits.
    #[test]
    fn errors_never_echo_values() {
        let c12 = with_luhn("41111111111");
        let c20 = with_luhn("4111111111111111111");
        let cases: Vec<(FieldType, Value)> = vec![
            (FieldType::Ssn, s("000-12-3456")),
            (FieldType::Ssn, s("666-12-3457")),
            (FieldType::Ssn, s("987-65-4321")),
            (FieldType::Ssn, s("123-00-4567")),
            (FieldType::Ssn, s("123-45-0000")),
            (FieldType::Ssn, s("123 45-6789")),
            (FieldType::Ssn, s("12345678")),
            (FieldType::Ssn, json!(123456789)),
            (FieldType::DriversLicense, s("MA:X87654321")),
            (FieldType::DriversLicense, s("ZZ:K98765432")),
            (
                FieldType::DriversLicense,
                json!({"state": "MA", "number": "S7654321"}),
            ),
            (FieldType::StateId, s("NY:12#4567")),
            (FieldType::AccountNumber, s("123456789012345678")),
            (FieldType::AccountNumber, s("98AB7654")),
            (FieldType::CardNumber, s("4111111111111112")),
            (FieldType::CardNumber, s(&c12)),
            (FieldType::CardNumber, s(&c20)),
            (
                FieldType::CardNumber,
                json!({"number": "4111111111111111", "cvv": "987"}),
            ),
            (FieldType::GivenName, s("Jane7890")),
            (FieldType::FamilyName, s(&"Q".repeat(101))),
            (FieldType::FullName, s("Robert'); DROP")),
            (FieldType::Email, s("jane.doe.example.com")),
            (FieldType::Email, s("jane@doe@example.com")),
            (FieldType::Phone, s("617-555-01x3")),
            (FieldType::Phone, s("61755")),
            (FieldType::Date, s("2023-02-29")),
            (FieldType::Date, s("31/01/1980")),
            (FieldType::Text, s(&"secretstuff".repeat(400))),
            (
                FieldType::Address,
                json!({"line1": "77 Elm Street", "zip": "02139"}),
            ),
            (
                FieldType::Address,
                json!({"state": "Massachusetts", "city": "Cambridge"}),
            ),
            (FieldType::Biometric, s("AAEC AwQ=")),
            (FieldType::ResidenceState, s("Mass")),
        ];
        fn leaves(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                Value::Object(m) => m.values().for_each(|x| leaves(x, out)),
                Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
                _ => {}
            }
        }
        for (ty, value) in &cases {
            let msg = ty.normalise("f", value).unwrap_err().to_string();
            let mut strings = Vec::new();
            leaves(value, &mut strings);
            for v in strings {
                let chars: Vec<char> = v.chars().collect();
                let digits: String = v.chars().filter(char::is_ascii_digit).collect();
                let mut needles = vec![v.clone()];
                if chars.len() >= 4 {
                    needles.push(chars[chars.len() - 4..].iter().collect());
                }
                if digits.len() >= 4 {
                    needles.push(digits[digits.len() - 4..].to_string());
                }
                for n in needles {
                    assert!(!msg.contains(&n), "{ty}: message {msg:?} leaks {n:?}");
                }
            }
        }
        // The same holds through Schema::validate, including for a value
        // pasted where a key belongs.
        let schema = person_schema(None);
        let e = schema
            .validate(&json!({"123-45-6789": "x"}))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("6789") && !e.contains("123-45"), "{e}");
        let e = schema
            .check_reveal(&["ssn4111111111111111"])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("1111"), "{e}");
        let e = schema
            .validate(&json!({"ssn": "666-12-3456"}))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid input: field ssn: not a valid SSN");
    }

    #[test]
    fn masking_matches_section_d() {
        let schema = person_schema(None);
        let body = schema
            .validate(&json!({
                "given": "Jane", "family": "Doe",
                "ssn": "123-45-6789",
                "dl": "MA:S12345678",
                "sid": {"state": "NY", "number": "AB-12-5678"},
                "acct": "0099 8877 4321",
                "card": "4111 1111 1111 1111",
                "bio": "AAECAwQ=",
                "email": "jane@example.com",
            }))
            .unwrap();
        let m = schema.mask(&body, &[]);
        assert_eq!(m["ssn"], "***-**-6789");
        assert_eq!(m["dl"], "MA *****5678");
        assert_eq!(m["sid"], "NY *****5678");
        assert_eq!(m["acct"], "****4321");
        assert_eq!(m["card"], "**** **** **** 1111");
        assert_eq!(m["bio"], "[biometric]");
        assert_eq!(m["given"], "Jane");
        assert_eq!(m["email"], "jane@example.com");

        let r = schema.mask(&body, &["ssn", "card", "dl", "acct", "bio", "email"]);
        assert_eq!(r["ssn"], "123-45-6789");
        assert_eq!(r["card"], "4111 1111 1111 1111");
        assert_eq!(r["dl"], "MA S12345678");
        assert_eq!(r["acct"], "009988774321");
        assert_eq!(r["bio"], "[biometric]", "biometric is never revealed");
        assert_eq!(r["sid"], "NY *****5678", "not listed: stays masked");

        // Fixed-width masks; short values never shown whole.
        assert_eq!(FieldType::AccountNumber.mask_value(&s("1234")), "********");
        assert_eq!(
            FieldType::AccountNumber.mask_value(&s("123456")),
            "******56"
        );
        assert_eq!(
            FieldType::CardNumber.display_value(&s("378282246310005")),
            "3782 822463 10005"
        );
        assert_eq!(
            FieldType::CardNumber.display_value(&s("4222222222222")),
            "4222 2222 2222 2"
        );
        // Undeclared keys are dropped from the display.
        let mut extra = body.clone();
        extra.insert("stray".into(), s("x"));
        assert!(!schema.mask(&extra, &[]).contains_key("stray"));
    }

    #[test]
    fn check_reveal_rules() {
        let schema = person_schema(None);
        assert!(schema.check_reveal(&["ssn", "card", "email"]).is_ok());
        assert!(schema.check_reveal(&[]).is_ok());
        let e = schema.check_reveal(&["bio"]).unwrap_err().to_string();
        assert!(e.contains("never revealed"), "{e}");
        let e = schema.check_reveal(&["nope"]).unwrap_err().to_string();
        assert!(
            e.contains("field nope is not declared in collection schema"),
            "{e}"
        );
    }

    #[test]
    fn classification_fixtures() {
        let schema = person_schema(None);
        let classify = |b: Value| schema.classify(&schema.validate(&b).unwrap());

        // name + SSN -> PI
        let c = classify(json!({"given": "Jane", "family": "Doe", "ssn": "123-45-6789"}));
        assert!(c.ma_personal_information && c.has_name && c.ma_resident);
        assert_eq!(c.sensitive_elements, vec![FieldType::Ssn]);

        // SSN alone -> sensitive, not PI
        let c = classify(json!({"ssn": "123-45-6789"}));
        assert!(!c.ma_personal_information && !c.has_name);
        assert_eq!(c.sensitive_elements, vec![FieldType::Ssn]);

        // initial + family name + licence -> PI
        let c = classify(json!({"given": "J.", "family": "Doe", "dl": "MA:S12345678"}));
        assert!(c.ma_personal_information);
        assert_eq!(c.sensitive_elements, vec![FieldType::DriversLicense]);
        let c = classify(json!({"given": "J", "family": "Doe", "dl": "MA:S12345678"}));
        assert!(c.ma_personal_information);

        // name + SSN for a New York resident -> not PI
        let c =
            classify(json!({"given": "Jane", "family": "Doe", "ssn": "123-45-6789", "res": "NY"}));
        assert!(!c.ma_personal_information && c.has_name && !c.ma_resident);

        // Residence from a structured address, then the schema default.
        let c = classify(json!({"name": "Jane Doe", "card": "4111111111111111",
            "addr": {"city": "Albany", "state": "NY"}}));
        assert!(!c.ma_resident && !c.ma_personal_information);
        let c = classify(
            json!({"name": "Jane Doe", "card": "4111111111111111", "res": "MA",
            "addr": {"city": "Albany", "state": "NY"}}),
        );
        assert!(
            c.ma_personal_information,
            "residence field wins over address"
        );
        let ny = person_schema(Some("NY"));
        let c = ny.classify(
            &ny.validate(&json!({"name": "Jane Doe", "ssn": "123456789"}))
                .unwrap(),
        );
        assert!(!c.ma_resident && !c.ma_personal_information);

        // Full name needs two words; given name alone is not a name.
        let c = classify(json!({"name": "Jane", "ssn": "123-45-6789"}));
        assert!(!c.has_name && !c.ma_personal_information);
        let c = classify(json!({"given": "Jane", "ssn": "123-45-6789"}));
        assert!(!c.has_name);

        // Name without a sensitive element is not PI; biometric counts (93I).
        let c = classify(json!({"name": "Jane Doe", "email": "j@example.com"}));
        assert!(c.has_name && !c.ma_personal_information && c.sensitive_elements.is_empty());
        let c = classify(
            json!({"name": "Jane Doe", "bio": "AQ==", "ssn": "123456789", "acct": "1234"}),
        );
        assert!(c.ma_personal_information);
        assert_eq!(
            c.sensitive_elements,
            vec![
                FieldType::Ssn,
                FieldType::AccountNumber,
                FieldType::Biometric
            ]
        );
    }

    #[test]
    fn schema_json_round_trip() {
        let text = r#"{
            "purpose": "payroll and tax reporting",
            "residence": "ma",
            "fields": [
                {"name": "given", "type": "given_name", "required": true},
                {"name": "family", "type": "last_name", "required": true},
                {"name": "ssn", "type": "ssn", "required": true, "purpose": "tax reporting"},
                {"name": "card", "type": "card_number"}
            ]
        }"#;
        let schema = Schema::from_json(text).unwrap();
        assert_eq!(schema.default_residence.as_deref(), Some("MA"));
        assert_eq!(schema.field("family").unwrap().ty, FieldType::FamilyName);
        assert!(!schema.field("card").unwrap().required);
        assert_eq!(schema.sensitive_fields(), vec!["ssn", "card"]);
        let again = Schema::from_json(&schema.to_json()).unwrap();
        assert_eq!(again, schema);
        assert!(schema.to_json().contains("\"family_name\""));

        let bare =
            Schema::from_json(r#"{"purpose":"p","fields":[{"name":"n","type":"text"}]}"#).unwrap();
        assert_eq!(bare.default_residence, None);
        assert!(!bare.to_json().contains("residence"));
        assert_eq!(Schema::from_json(&bare.to_json()).unwrap(), bare);

        for t in FieldType::ALL {
            assert_eq!(FieldType::parse(t.as_str()).unwrap(), t);
        }
    }

    #[test]
    fn schema_file_rejections() {
        let bad = [
            // unknown keys, top level and per field
            r#"{"purpose":"p","fields":[{"name":"a","type":"text"}],"extra":1}"#,
            r#"{"purpose":"p","fields":[{"name":"a","type":"text","requried":true}]}"#,
            // purpose missing or blank
            r#"{"fields":[{"name":"a","type":"text"}]}"#,
            r#"{"purpose":"  ","fields":[{"name":"a","type":"text"}]}"#,
            // bad names, types, residence, empty field list
            r#"{"purpose":"p","fields":[{"name":"A","type":"text"}]}"#,
            r#"{"purpose":"p","fields":[{"name":"1a","type":"text"}]}"#,
            r#"{"purpose":"p","fields":[{"name":"a-b","type":"text"}]}"#,
            r#"{"purpose":"p","fields":[{"name":"a","type":"blob"}]}"#,
            r#"{"purpose":"p","residence":"XX","fields":[{"name":"a","type":"text"}]}"#,
            r#"{"purpose":"p","fields":[]}"#,
            r#"{"purpose":"p","fields":[{"name":"a","type":"text","purpose":""}]}"#,
        ];
        for text in bad {
            assert!(Schema::from_json(text).is_err(), "accepted: {text}");
        }
        let long = format!(
            r#"{{"purpose":"p","fields":[{{"name":"{}","type":"text"}}]}}"#,
            "a".repeat(65)
        );
        assert!(Schema::from_json(&long).is_err());
        let max = format!(
            r#"{{"purpose":"p","fields":[{{"name":"{}","type":"text"}}]}}"#,
            "a".repeat(64)
        );
        assert!(Schema::from_json(&max).is_ok());
    }

    #[test]
    fn duplicate_field_names_refused() {
        let text = r#"{"purpose":"p","fields":[{"name":"ssn","type":"ssn"},{"name":"ssn","type":"text"}]}"#;
        let e = Schema::from_json(text).unwrap_err().to_string();
        assert!(e.contains("declared twice"), "{e}");
    }

    #[test]
    fn cvv_pin_password_fields_refused() {
        for name in [
            "cvv",
            "cvc",
            "cvv2",
            "cvc2",
            "card_cvv",
            "pin",
            "card_pin",
            "atm_pin",
            "pin_code",
            "password",
            "user_password",
            "passwd",
            "passcode",
            "security_code",
            "card_security_code",
            "card_verification_value",
        ] {
            let text = format!(r#"{{"purpose":"p","fields":[{{"name":"{name}","type":"text"}}]}}"#);
            let e = Schema::from_json(&text).unwrap_err().to_string();
            assert!(e.contains("never stored"), "{name}: {e}");
        }
        for name in [
            "shipping",
            "spinner",
            "pinyin_name",
            "postal_code",
            "account",
        ] {
            assert!(!is_never_stored_name(name), "{name} wrongly refused");
        }
        // A body carrying a security code is refused even though undeclared.
        let schema = person_schema(None);
        let e = schema
            .validate(&json!({"card": "4111111111111111", "CVV": "123"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("never stored") && !e.contains("123"), "{e}");
    }

    #[test]
    fn undeclared_and_required_fields() {
        let schema = Schema::new(
            "p",
            vec![
                spec("ssn", FieldType::Ssn, true),
                spec("note", FieldType::Text, false),
            ],
            None,
        )
        .unwrap();
        let e = schema
            .validate(&json!({"ssn": "123456789", "nickname": "JJ"}))
            .unwrap_err();
        assert_eq!(e.code(), "invalid_input");
        assert_eq!(
            e.to_string(),
            "invalid input: field nickname is not declared in collection schema"
        );
        let e = schema
            .validate(&json!({"note": "hi"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("field ssn is required"), "{e}");
        let e = schema
            .validate(&json!({"ssn": null}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("field ssn is required"), "{e}");
        assert!(schema.validate(&json!(["ssn"])).is_err());
        let out = schema
            .validate(&json!({"ssn": "123-45-6789", "note": null}))
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out["ssn"], "123456789");
    }

    /// A revealed value, copied back into an edit, is accepted and means
    /// the same value (issue 11: a licence printed `MA S12345678` used to be
    /// refused as input).
    #[test]
    fn every_revealed_value_is_accepted_back_as_input() {
        let samples = [
            (FieldType::GivenName, s("Ada")),
            (FieldType::Ssn, s("123456789")),
            (FieldType::CardNumber, s("4111111111111111")),
            (FieldType::CardNumber, s("378282246310005")),
            (FieldType::DriversLicense, s("MA:S12345678")),
            (FieldType::StateId, s("NY:123456789")),
            (FieldType::AccountNumber, s("0012345678")),
            (FieldType::Email, s("ada@example.com")),
            (FieldType::Phone, s("617-555-0100")),
            (FieldType::Date, s("1979-03-14")),
        ];
        for (ty, input) in samples {
            let stored = ty.normalise("f", &input).unwrap();
            let shown = ty.display_value(&stored);
            let again = ty
                .normalise("f", &shown)
                .unwrap_or_else(|e| panic!("{ty:?}: displayed value refused as input: {e}"));
            assert_eq!(again, stored, "{ty:?}");
        }
    }

    fn form_schema() -> Schema {
        Schema::from_json(
            r#"{"purpose": "p", "fields": [
                {"name": "given", "type": "given_name", "required": true},
                {"name": "ssn", "type": "ssn", "required": true},
                {"name": "email", "type": "email"},
                {"name": "born", "type": "date"}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn field_errors_name_every_bad_field_and_the_first_is_validates_own() {
        let schema = form_schema();
        let body = json!({ "ssn": "987-65-432", "email": "not-an-address", "born": "1979-03-14" });
        let errors = schema.field_errors(&body);
        let fields: Vec<Option<&str>> = errors.iter().map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, vec![Some("given"), Some("ssn"), Some("email")]);
        let first = schema.validate(&body).unwrap_err().to_string();
        assert_eq!(first, format!("invalid input: {}", errors[0].message));
        for e in &errors {
            assert!(!e.message.contains("987") && !e.message.contains("not-an-address"));
        }
        // An undeclared key and a never-stored name belong to no field.
        let errors = schema
            .field_errors(&json!({ "given": "Ann", "ssn": "219-09-9999", "cvv": "123", "x": "1" }));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| e.field.is_none()));
        // A good body has none, and validate agrees.
        let good = json!({ "given": "Ann", "ssn": "219-09-9999" });
        assert!(schema.field_errors(&good).is_empty());
        assert!(schema.validate(&good).is_ok());
    }

    #[test]
    fn patch_errors_check_only_the_named_fields() {
        let schema = form_schema();
        assert!(
            schema
                .patch_errors(&json!({ "email": "ann@example.com" }))
                .is_empty()
        );
        let errors = schema.patch_errors(&json!({ "email": "nope", "given": null }));
        let fields: Vec<Option<&str>> = errors.iter().map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, vec![Some("given"), Some("email")]);
        assert_eq!(schema.patch_errors(&json!([1])).len(), 1);
    }
}
