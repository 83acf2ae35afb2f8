//! Blind indexes ("beacons") for `record find` (issue 12).
//!
//! A field marked `searchable` in its collection's schema gets, for each
//! record, a **beacon**: the first 20 bits ([`IDENTIFIER_BEACON_BITS`]; 16 for
//! names, [`NAME_BEACON_BITS`]) of HMAC-SHA-256 of
//! the field's search term (its value normalised further: digits only,
//! case and accents folded), under a key derived for that collection and
//! field from the vault's beacon secret. The secret lives in the keystore,
//! wrapped under the epoch root key and re-wrapped by every ratchet; it is
//! never in the records database. A lookup computes the query's beacon and
//! reads the index rows under it: an index seek, not a scan of the records.
//!
//! Beacons are truncated so that distinct values collide on purpose: with
//! 20 bits every beacon stands for about 2^10 possible SSNs even for
//! someone holding the key, and two records sharing a beacon do not share a
//! value with any certainty. The price is false positives, which `find`
//! removes by decrypting each candidate and comparing its normalised value,
//! so hit counts are exact. See ARCHITECTURE.md "Search (blind indexes)".
//!
//! Rows (records database, column family `beacons`):
//!
//! ```text
//! forward  'f' | collection | 0 | field | 0 | kind | beacon(3) | row(16)  ->  record(16) | tag(16)
//! reverse  'r' | record(16)                                              ->  tag(16) | (u16 len | forward key)*
//! ```
//!
//! `row` and `tag` are random per row. Keys never hold a record ID next to a
//! beacon (a deleted key may linger in the MANIFEST as a file boundary); the
//! tags are in values only, and a disposal's byte scan looks for them: a copy
//! of a row anywhere (WAL, obsolete table file) carries its tag.

use serde_json::Value;

use crate::crypto;
use crate::ids::RecordId;
use crate::schema::{self, FieldType};
use crate::secret::SecretKey;

/// Bits kept of an identifier's beacon (SSN, licence, state ID, email,
/// phone): about one colliding row per lookup at 10^6 records, and still
/// 2^10 SSNs per beacon for someone holding the key.
pub const IDENTIFIER_BEACON_BITS: u32 = 20;
/// Bits kept of a name word's or name prefix's beacon: names are few and
/// their true hits many, so more collisions cost little and hide more.
pub const NAME_BEACON_BITS: u32 = 16;
/// Bytes of a stored beacon (the bits past the kind's length are zero).
pub(crate) const BEACON_LEN: usize = 3;
/// Shortest name prefix a search accepts (letters after folding).
pub const MIN_PREFIX_CHARS: usize = 3;
/// Longest prefix indexed: a longer prefix query uses this many letters
/// and the rest is checked after decryption.
pub const MAX_PREFIX_CHARS: usize = 6;
/// Most records one search returns; a search matching more is refused
/// (narrow it), so that `find` cannot page through a collection.
pub const MAX_HITS: usize = 20;
/// Most index candidates one search decrypts before it is refused as too
/// broad (a common name prefix at 10^6 records).
pub const MAX_CANDIDATES: usize = 2_000;

/// Exact value or name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The whole value (or a whole name word).
    Exact,
    /// The beginning of a name word ([`MIN_PREFIX_CHARS`] letters or more).
    Prefix,
}

impl Match {
    /// `exact` or `prefix`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Match::Exact => "exact",
            Match::Prefix => "prefix",
        }
    }
}

/// What a beacon stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A whole identifier (SSN, licence, email, phone).
    Value,
    /// A whole name word.
    Name,
    /// The first 3..=6 letters of a name word.
    Prefix,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Value => b'v',
            Kind::Name => b'n',
            Kind::Prefix => b'p',
        }
    }
}

/// Whether the type is a name (searched by words and prefixes).
pub(crate) fn is_name(ty: FieldType) -> bool {
    matches!(
        ty,
        FieldType::GivenName | FieldType::FamilyName | FieldType::FullName
    )
}

/// The search term of a stored (normalised) identifier value: SSN digits,
/// `ST:NUMBER` for a licence or state ID (letters and digits, upper case),
/// an email lower-cased, a phone's digits (a North American number without
/// its leading country code 1). `None` for names and other types.
pub(crate) fn value_term(ty: FieldType, v: &Value) -> Option<String> {
    match ty {
        FieldType::Ssn => {
            let d: String = v.as_str()?.chars().filter(char::is_ascii_digit).collect();
            (d.len() == 9).then_some(d)
        }
        FieldType::DriversLicense | FieldType::StateId => {
            let (state, number) = schema::licence_parts(v);
            Some(format!("{}:{number}", state?))
        }
        FieldType::Email => Some(v.as_str()?.trim().to_lowercase()),
        FieldType::Phone => {
            let mut d: String = v.as_str()?.chars().filter(char::is_ascii_digit).collect();
            if d.len() == 11 && d.starts_with('1') {
                d.remove(0);
            }
            (!d.is_empty()).then_some(d)
        }
        _ => None,
    }
}

/// The words of a name, folded: lower case, Latin accents removed (`José`
/// → `jose`, `Łukasz` → `lukasz`), apostrophes and periods dropped
/// (`O'Brien` → `obrien`), hyphens and spaces separating words.
pub(crate) fn name_words(s: &str) -> Vec<String> {
    let mut folded = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\'' | '\u{2019}' | '.' => {}
            '-' | '\u{2010}' | '\u{2011}' => folded.push(' '),
            // Combining marks (a decomposed accent) go.
            '\u{0300}'..='\u{036f}' => {}
            c => match fold_latin(c) {
                Some(f) => folded.push_str(f),
                None => folded.extend(c.to_lowercase()),
            },
        }
    }
    folded
        .split_whitespace()
        .map(str::to_owned)
        .filter(|w| !w.is_empty())
        .collect()
}

/// The base letters of an accented Latin-1 or Latin Extended-A letter.
fn fold_latin(c: char) -> Option<&'static str> {
    Some(match c {
        'À'..='Å' | 'à'..='å' | '\u{100}'..='\u{105}' => "a",
        'Æ' | 'æ' => "ae",
        'Ç' | 'ç' | '\u{106}'..='\u{10d}' => "c",
        'Ð' | 'ð' | '\u{10e}'..='\u{111}' => "d",
        'È'..='Ë' | 'è'..='ë' | '\u{112}'..='\u{11b}' => "e",
        '\u{11c}'..='\u{123}' => "g",
        '\u{124}'..='\u{127}' => "h",
        'Ì'..='Ï' | 'ì'..='ï' | '\u{128}'..='\u{131}' => "i",
        '\u{132}' | '\u{133}' => "ij",
        '\u{134}' | '\u{135}' => "j",
        '\u{136}'..='\u{138}' => "k",
        '\u{139}'..='\u{142}' => "l",
        'Ñ' | 'ñ' | '\u{143}'..='\u{14b}' => "n",
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | '\u{14c}'..='\u{151}' => "o",
        '\u{152}' | '\u{153}' => "oe",
        '\u{154}'..='\u{159}' => "r",
        '\u{15a}'..='\u{161}' | '\u{17f}' => "s",
        'ß' => "ss",
        '\u{162}'..='\u{167}' => "t",
        'Þ' | 'þ' => "th",
        'Ù'..='Ü' | 'ù'..='ü' | '\u{168}'..='\u{173}' => "u",
        '\u{174}' | '\u{175}' => "w",
        'Ý' | 'ý' | 'ÿ' | '\u{176}'..='\u{178}' => "y",
        '\u{179}'..='\u{17e}' => "z",
        _ => return None,
    })
}

/// The first `n` characters of a word.
pub(crate) fn prefix_of(word: &str, n: usize) -> String {
    word.chars().take(n).collect()
}

/// Every index term of one stored value of a searchable field: one
/// [`Kind::Value`] for an identifier; for a name, each word as
/// [`Kind::Name`] and its prefixes of 3..=6 letters as [`Kind::Prefix`].
pub(crate) fn terms(ty: FieldType, v: &Value) -> Vec<(Kind, String)> {
    if !is_name(ty) {
        return value_term(ty, v)
            .map(|t| vec![(Kind::Value, t)])
            .unwrap_or_default();
    }
    let mut out = Vec::new();
    for w in name_words(v.as_str().unwrap_or("")) {
        let len = w.chars().count();
        for n in MIN_PREFIX_CHARS..=len.min(MAX_PREFIX_CHARS) {
            out.push((Kind::Prefix, prefix_of(&w, n)));
        }
        out.push((Kind::Name, w));
    }
    out.sort_by(|a, b| (a.0.byte(), &a.1).cmp(&(b.0.byte(), &b.1)));
    out.dedup();
    out
}

/// The vault's beacon secret (RAM only; wrapped in the keystore).
pub(crate) struct BeaconSecret(SecretKey);

impl std::fmt::Debug for BeaconSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeaconSecret(***)")
    }
}

impl BeaconSecret {
    pub(crate) fn new(k: SecretKey) -> Self {
        BeaconSecret(k)
    }

    /// The key of one collection's field: HMAC of their length-prefixed
    /// names under the secret, so beacons of equal values in two fields or
    /// collections differ.
    pub(crate) fn field_key(&self, collection: &str, field: &str) -> FieldKey {
        let mut data = Vec::with_capacity(8 + collection.len() + field.len());
        for part in [collection, field] {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        FieldKey(SecretKey::from_bytes(crypto::mac(
            &self.0,
            "pivault-beacon-field-v1",
            &data,
        )))
    }
}

/// One field's beacon key.
pub(crate) struct FieldKey(SecretKey);

impl FieldKey {
    /// The truncated beacon of one term.
    pub(crate) fn beacon(&self, kind: Kind, term: &str) -> [u8; BEACON_LEN] {
        let mut data = Vec::with_capacity(1 + term.len());
        data.push(kind.byte());
        data.extend_from_slice(term.as_bytes());
        let m = crypto::mac(&self.0, "pivault-beacon-v1", &data);
        match kind {
            // 20 bits: the third byte's high nibble.
            Kind::Value => [m[0], m[1], m[2] & 0xf0],
            Kind::Name | Kind::Prefix => [m[0], m[1], 0],
        }
    }
}

/// The key prefix of every forward row of one beacon.
pub(crate) fn forward_prefix(
    collection: &str,
    field: &str,
    kind: Kind,
    beacon: [u8; BEACON_LEN],
) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + collection.len() + field.len());
    k.push(b'f');
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k.extend_from_slice(field.as_bytes());
    k.push(0);
    k.push(kind.byte());
    k.extend_from_slice(&beacon);
    k
}

/// The reverse row of a record: its forward keys, so that an update or a
/// disposal deletes them without decrypting anything.
pub(crate) fn reverse_key(id: RecordId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'r');
    k.extend_from_slice(id.as_bytes());
    k
}

/// Length of a row ID and of a tag.
pub(crate) const TAG_LEN: usize = 16;

/// A reverse row: its tag and the forward keys it lists.
pub(crate) fn decode_reverse(v: &[u8]) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let tag = v.get(..TAG_LEN)?.to_vec();
    let mut rest = &v[TAG_LEN..];
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let n = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        keys.push(rest.get(2..2 + n)?.to_vec());
        rest = &rest[2 + n..];
    }
    Some((tag, keys))
}

/// Encodes a reverse row.
pub(crate) fn encode_reverse(tag: &[u8], keys: &[Vec<u8>]) -> Vec<u8> {
    let mut v = tag.to_vec();
    for k in keys {
        v.extend_from_slice(&(k.len() as u16).to_be_bytes());
        v.extend_from_slice(k);
    }
    v
}

/// The forward key prefix a forward key belongs to (its beacon), for the
/// purge's compaction ranges: the key without its random row ID.
pub(crate) fn range_of(forward_key: &[u8]) -> Vec<u8> {
    forward_key[..forward_key.len().saturating_sub(TAG_LEN)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_fold_case_accents_and_punctuation() {
        assert_eq!(
            name_words("  José  García-Márquez "),
            ["jose", "garcia", "marquez"]
        );
        assert_eq!(name_words("O'Brien"), ["obrien"]);
        assert_eq!(name_words("ŁUKASZ"), ["lukasz"]);
        // Decomposed accents (e + combining acute) fold like composed ones.
        assert_eq!(name_words("Rene\u{301}e"), name_words("Renée"));
        assert_eq!(name_words("Müller"), ["muller"]);
    }

    #[test]
    fn identifiers_have_one_term_whatever_their_formatting() {
        let t = |ty, v: Value| value_term(ty, &v);
        assert_eq!(t(FieldType::Ssn, json!("123456789")).unwrap(), "123456789");
        assert_eq!(
            t(FieldType::Phone, json!("+16175550100")),
            t(FieldType::Phone, json!("6175550100"))
        );
        assert_eq!(
            t(FieldType::Email, json!("Ann@example.com")),
            t(FieldType::Email, json!("ann@example.com"))
        );
        assert_eq!(
            t(
                FieldType::DriversLicense,
                json!({"state": "MA", "number": "S12345678"})
            )
            .unwrap(),
            "MA:S12345678"
        );
        assert_eq!(t(FieldType::Text, json!("x")), None);
    }

    #[test]
    fn name_terms_are_words_and_their_short_prefixes() {
        let t = terms(FieldType::FamilyName, &json!("Garcia"));
        assert!(t.contains(&(Kind::Name, "garcia".into())));
        for p in ["gar", "garc", "garci", "garcia"] {
            assert!(t.contains(&(Kind::Prefix, p.into())), "{p}");
        }
        assert!(
            !t.iter()
                .any(|(k, w)| *k == Kind::Prefix && w.chars().count() < MIN_PREFIX_CHARS)
        );
        // A word shorter than the minimum prefix has only its whole-word term.
        assert_eq!(
            terms(FieldType::GivenName, &json!("Al")),
            vec![(Kind::Name, "al".into())]
        );
    }

    #[test]
    fn beacons_depend_on_collection_field_kind_and_term() {
        let s = BeaconSecret::new(SecretKey::generate());
        let (a, b) = (s.field_key("c", "ssn"), s.field_key("c", "ssn2"));
        let v = a.beacon(Kind::Value, "123456789");
        assert_eq!(v, s.field_key("c", "ssn").beacon(Kind::Value, "123456789"));
        // Short beacons collide by design; over 64 terms at least one differs.
        assert!((0..64).any(
            |i| a.beacon(Kind::Value, &i.to_string()) != b.beacon(Kind::Value, &i.to_string())
        ));
        assert!(
            (0..64)
                .any(|i| a.beacon(Kind::Value, &i.to_string())
                    != a.beacon(Kind::Name, &i.to_string()))
        );
    }

    #[test]
    fn reverse_rows_round_trip() {
        let keys = vec![vec![1u8, 2, 3], vec![], vec![9u8; 300]];
        let v = encode_reverse(&[7u8; TAG_LEN], &keys);
        assert_eq!(decode_reverse(&v), Some((vec![7u8; TAG_LEN], keys)));
        assert_eq!(decode_reverse(&v[..v.len() - 1]), None);
    }
}
