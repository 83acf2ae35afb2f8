//! `record find` and the upkeep of the blind indexes (issue 12): beacon rows
//! written in the same batch as the record row they describe, replaced by
//! an update, deleted by a disposal (`disposal.rs` purges and scans for
//! them), rebuilt by an officer's `collection reindex`.
//!
//! A find reads the index rows under the query's beacon, then decrypts each
//! candidate under its bucket lock (as `record get` does) and keeps only
//! those whose normalised value really matches: beacons collide on purpose
//! (`beacon.rs`), so the index alone would over-count. The answer is masked
//! for every role; a find never reveals. It is refused past [`MAX_HITS`]
//! matches, so a short prefix cannot page through a collection.
//!
//! This is a child module of `vault`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{RecordView, Session, Vault};
use crate::access::Permission;
use crate::beacon::{
    self, Kind, MAX_CANDIDATES, MAX_HITS, MAX_PREFIX_CHARS, MIN_PREFIX_CHARS, Match,
};
use crate::crypto;
use crate::error::{Error, Result};
use crate::ids::{CollectionName, RecordId};
use crate::schema::{FieldSpec, FieldType, Schema};
use crate::secret::SecretString;
use crate::store::{CF_BEACONS, WriteOp};

/// What to look for. The value is a secret type: it is personal
/// information and never reaches a log, an error or the audit trail.
#[derive(Debug)]
pub struct FindQuery {
    /// The collection searched.
    pub collection: String,
    /// Which fields.
    pub target: FindTarget,
    /// The value as typed (any formatting the field's type accepts).
    pub value: SecretString,
    /// Exact, or a name prefix.
    pub mode: Match,
}

/// Which searchable fields a find looks in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindTarget {
    /// Every searchable field of this type; a name type means every
    /// searchable name field (given, family and full names alike).
    Type(FieldType),
    /// One searchable field by name.
    Field(String),
}

/// The answer of a find.
#[derive(Debug)]
pub struct FindResult {
    /// The fields searched.
    pub fields: Vec<String>,
    /// Exact or prefix.
    pub mode: Match,
    /// The matching records, masked.
    pub records: Vec<RecordView>,
}

/// A record's beacon rows as a write changes them: the ops go in the same
/// batch as the record row; the deleted rows' tags and key ranges are what
/// a disposal's purge compacts and byte-scans for.
#[derive(Default)]
pub(crate) struct IndexChange {
    pub ops: Vec<WriteOp<'static>>,
    pub deleted_tags: Vec<Vec<u8>>,
    pub deleted_ranges: Vec<Vec<u8>>,
    /// Forward rows deleted.
    pub deleted: u64,
}

/// A query's normalised form.
enum Term {
    Value(String),
    Words(Vec<String>),
}

impl Vault {
    /// The beacon-row writes that make record `id`'s index match `body`
    /// (`None`: remove it). Deletes come first, so a batch that deletes and
    /// re-puts the reverse row keeps the new one. The caller holds what
    /// serialises writes of this record (its bucket lock and record lock, or
    /// the pending set of a disposal).
    pub(crate) fn index_change(
        &self,
        id: RecordId,
        collection: &CollectionName,
        schema: Option<&Schema>,
        body: Option<&Map<String, Value>>,
    ) -> Result<IndexChange> {
        self.index_rows(id, collection, schema, body, true)
    }

    /// [`Vault::index_change`] of a record just created: it has no rows
    /// yet, so none are looked up.
    pub(crate) fn index_new(
        &self,
        id: RecordId,
        collection: &CollectionName,
        schema: &Schema,
        body: &Map<String, Value>,
    ) -> Result<IndexChange> {
        self.index_rows(id, collection, Some(schema), Some(body), false)
    }

    fn index_rows(
        &self,
        id: RecordId,
        collection: &CollectionName,
        schema: Option<&Schema>,
        body: Option<&Map<String, Value>>,
        existing: bool,
    ) -> Result<IndexChange> {
        let mut ch = IndexChange::default();
        let rk = beacon::reverse_key(id);
        let old = if existing {
            self.store.get(CF_BEACONS, &rk)?
        } else {
            None
        };
        if let Some(old) = old {
            let (tag, keys) =
                beacon::decode_reverse(&old).ok_or(Error::Integrity("beacon index row"))?;
            ch.deleted_tags.push(tag);
            for k in keys {
                if let Some(v) = self.store.get(CF_BEACONS, &k)?
                    && v.len() == 2 * beacon::TAG_LEN
                {
                    ch.deleted_tags.push(v[beacon::TAG_LEN..].to_vec());
                }
                ch.deleted_ranges.push(beacon::range_of(&k));
                ch.ops.push((CF_BEACONS, k, None));
                ch.deleted += 1;
            }
            ch.deleted_ranges.push(rk.clone());
            ch.ops.push((CF_BEACONS, rk.clone(), None));
        }
        let (Some(schema), Some(body)) = (schema, body) else {
            return Ok(ch);
        };
        let mut prefixes = Vec::new();
        for spec in &schema.fields {
            if !schema.is_searchable(&spec.name) {
                continue;
            }
            let Some(v) = body.get(&spec.name) else {
                continue;
            };
            let fk = self.beacons.field_key(collection.as_str(), &spec.name);
            for (kind, term) in beacon::terms(spec.ty, v) {
                prefixes.push(beacon::forward_prefix(
                    collection.as_str(),
                    &spec.name,
                    kind,
                    fk.beacon(kind, &term),
                ));
            }
        }
        if prefixes.is_empty() {
            return Ok(ch);
        }
        // Per row a random row ID (keys must be unique and carry no record
        // ID) and a random tag (the value's residue marker), and the reverse
        // row's tag: one draw from the OS CSPRNG.
        const T: usize = beacon::TAG_LEN;
        let mut rnd = vec![0u8; (2 * prefixes.len() + 1) * T];
        crypto::fill_random(&mut rnd);
        let mut keys = Vec::with_capacity(prefixes.len());
        for (i, mut k) in prefixes.into_iter().enumerate() {
            let r = &rnd[2 * i * T..2 * (i + 1) * T];
            k.extend_from_slice(&r[..T]);
            let mut val = id.as_bytes().to_vec();
            val.extend_from_slice(&r[T..]);
            ch.ops.push((CF_BEACONS, k.clone(), Some(val)));
            keys.push(k);
        }
        let tag = &rnd[rnd.len() - T..];
        ch.ops
            .push((CF_BEACONS, rk, Some(beacon::encode_reverse(tag, &keys))));
        Ok(ch)
    }

    /// The beacon writes that put back the index of `old`, a version being
    /// restored (an update undone or rolled back: its key still exists).
    /// Should it not decrypt, the record is left unindexed rather than the
    /// restore failing: `collection reindex` finds it again.
    pub(crate) fn restored_index(
        &self,
        id: RecordId,
        old: &crate::store::RecordRow,
    ) -> Result<Vec<WriteOp<'static>>> {
        let schema = self.schema(&old.collection)?;
        let body = self.decrypt(id, old).ok();
        Ok(self
            .index_change(id, &old.collection, Some(&schema), body.as_ref())?
            .ops)
    }

    /// Finds records by a searchable field's value (clerks and officers).
    /// Audited as `record.find` with the collection, the fields searched,
    /// the match mode and the number of hits — never the value.
    pub fn find_records(&self, s: &Session, q: &FindQuery) -> Result<FindResult> {
        self.authorize(s, Some(Permission::FindRecords))?;
        let mut searched: Vec<String> = Vec::new();
        let mut hits_seen: Option<usize> = None;
        let r = self.find_inner(q, &mut searched, &mut hits_seen);
        let mut targets = vec![format!("collection:{}", q.collection_label())];
        targets.extend(searched.iter().map(|f| format!("field:{f}")));
        targets.push(format!("match:{}", q.mode.as_str()));
        if let Some(n) = hits_seen {
            targets.push(format!("hits:{n}"));
        }
        self.audit(
            Some(s.user),
            &s.ctx,
            "record.find",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        let records = r?;
        Ok(FindResult {
            fields: searched,
            mode: q.mode,
            records,
        })
    }

    fn find_inner(
        &self,
        q: &FindQuery,
        searched: &mut Vec<String>,
        hits_seen: &mut Option<usize>,
    ) -> Result<Vec<RecordView>> {
        let collection = CollectionName::parse(&q.collection)?;
        let schema = self.schema(&collection)?;
        let fields: Vec<&FieldSpec> = match &q.target {
            FindTarget::Field(f) => {
                let spec = schema
                    .field(f)
                    .filter(|_| schema.is_searchable(f))
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "no searchable field {} in collection {collection}",
                            crate::schema::shown_name(f).unwrap_or_else(|| "(not shown)".into())
                        ))
                    })?;
                vec![spec]
            }
            FindTarget::Type(t) => schema
                .fields
                .iter()
                .filter(|f| {
                    schema.is_searchable(&f.name)
                        && (f.ty == *t || (beacon::is_name(*t) && beacon::is_name(f.ty)))
                })
                .collect(),
        };
        let Some(first) = fields.first() else {
            let what = match &q.target {
                FindTarget::Type(t) if beacon::is_name(*t) => "name",
                FindTarget::Type(t) => t.as_str(),
                FindTarget::Field(_) => "that name",
            };
            return Err(Error::invalid(format!(
                "collection {collection} has no searchable {what} field"
            )));
        };
        *searched = fields.iter().map(|f| f.name.clone()).collect();
        let names = beacon::is_name(first.ty);
        if q.mode == Match::Prefix && !names {
            return Err(Error::invalid("a prefix search is for names only"));
        }
        let term = if names {
            let words = beacon::name_words(q.value.expose());
            if words.is_empty() || words.len() > 4 || q.value.expose().chars().count() > 100 {
                return Err(Error::invalid(format!(
                    "field {}: not a valid name to search (1-4 words)",
                    first.name
                )));
            }
            if q.mode == Match::Prefix && words.iter().any(|w| w.chars().count() < MIN_PREFIX_CHARS)
            {
                return Err(Error::invalid(format!(
                    "a name prefix needs at least {MIN_PREFIX_CHARS} letters in each word"
                )));
            }
            Term::Words(words)
        } else {
            let v = first
                .ty
                .normalise(&first.name, &Value::String(q.value.expose().to_owned()))?;
            Term::Value(
                beacon::value_term(first.ty, &v).ok_or_else(|| {
                    Error::invalid(format!("field {}: not searchable", first.name))
                })?,
            )
        };
        // Index lookups: one beacon per field.
        let (kind, lookup) = match &term {
            Term::Value(t) => (Kind::Value, t.clone()),
            Term::Words(ws) => {
                let longest = ws
                    .iter()
                    .max_by_key(|w| w.chars().count())
                    .expect("at least one word");
                match q.mode {
                    Match::Exact => (Kind::Name, longest.clone()),
                    Match::Prefix => (Kind::Prefix, beacon::prefix_of(longest, MAX_PREFIX_CHARS)),
                }
            }
        };
        let too_broad = || {
            Error::invalid(format!(
                "the search matches too many records (more than {MAX_HITS}): narrow it"
            ))
        };
        let mut candidates = BTreeSet::new();
        for spec in &fields {
            let fk = self.beacons.field_key(collection.as_str(), &spec.name);
            let prefix = beacon::forward_prefix(
                collection.as_str(),
                &spec.name,
                kind,
                fk.beacon(kind, &lookup),
            );
            let left = MAX_CANDIDATES.saturating_sub(candidates.len());
            let values = self
                .store
                .values_under(CF_BEACONS, &prefix, left)?
                .ok_or_else(too_broad)?;
            for v in values {
                candidates.insert(RecordId::from_slice(
                    v.get(..beacon::TAG_LEN)
                        .ok_or(Error::Integrity("beacon index row"))?,
                )?);
            }
        }
        // False positives go here: each candidate is decrypted and its
        // value compared in normalised form.
        let mut hits = Vec::new();
        for id in candidates {
            let (row, body) = match self.read_live(id) {
                Ok(x) => x,
                // Disposed or being disposed since the index was read: not a hit.
                Err(Error::NotFound(_) | Error::Disposed { .. } | Error::DisposalInProgress) => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            if row.collection != collection {
                continue;
            }
            let matched = match &term {
                Term::Value(t) => fields.iter().any(|spec| {
                    body.get(&spec.name)
                        .and_then(|v| beacon::value_term(spec.ty, v))
                        .is_some_and(|x| x == *t)
                }),
                // Words may be spread over the given and family names.
                Term::Words(ws) => {
                    let have: Vec<String> = fields
                        .iter()
                        .filter_map(|spec| body.get(&spec.name).and_then(Value::as_str))
                        .flat_map(beacon::name_words)
                        .collect();
                    words_match(ws, &have, q.mode)
                }
            };
            if matched {
                hits.push((id, row, body));
            }
        }
        *hits_seen = Some(hits.len());
        if hits.len() > MAX_HITS {
            return Err(too_broad());
        }
        Ok(hits
            .into_iter()
            .map(|(id, row, body)| RecordView {
                meta: Self::meta(id, &row),
                classification: schema.classify(&body),
                fields: schema.mask_owned(body, &[]),
                revealed: Vec::new(),
            })
            .collect())
    }

    /// Rebuilds the blind indexes of a collection (officers): every live
    /// record is read under its bucket and record locks and its beacon rows
    /// rewritten from its current body. For records stored before this
    /// build, before a field became searchable, or restored from a backup
    /// (backups carry no beacons). Returns how many records were indexed.
    /// Audited as `collection.reindex` with the count.
    pub fn reindex_collection(&self, s: &Session, collection: &str) -> Result<u64> {
        self.authorize(s, Some(Permission::ReindexSearch))?;
        let r = (|| {
            self.isolation.check_fence()?;
            let collection = CollectionName::parse(collection)?;
            let schema = self.schema(&collection)?;
            let mut n = 0u64;
            for id in self.store.records_of_collection(&collection)? {
                let Ok(row) = self.live_row(id) else { continue };
                let _b = self.isolation.shared(self.keystore.bucket_of(row.subject));
                let _r = self.isolation.record(id);
                if self.isolation.check_not_pending(id).is_err() {
                    continue;
                }
                let Ok(row) = self.live_row(id) else { continue };
                let body = self.decrypt(id, &row)?;
                let ch = self.index_change(id, &collection, Some(&*schema), Some(&body))?;
                self.store.write_ops(&ch.ops)?;
                n += 1;
            }
            Ok(n)
        })();
        let mut targets = vec![format!("collection:{collection}")];
        if let Ok(n) = &r {
            targets.push(format!("count:{n}"));
        }
        self.audit(
            Some(s.user),
            &s.ctx,
            "collection.reindex",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }
}

impl FindQuery {
    /// The collection as it may appear in the audit trail (a name, or a
    /// placeholder when it is not a valid collection name).
    fn collection_label(&self) -> String {
        CollectionName::parse(&self.collection)
            .map(|c| c.to_string())
            .unwrap_or_else(|_| "(invalid)".into())
    }
}

/// Whether every query word is one of the record's name words (or, for a
/// prefix search, begins one): the check that removes the beacons' false
/// positives.
fn words_match(query: &[String], have: &[String], mode: Match) -> bool {
    query.iter().all(|w| {
        have.iter().any(|h| match mode {
            Match::Exact => h == w,
            Match::Prefix => h.starts_with(w.as_str()),
        })
    })
}
