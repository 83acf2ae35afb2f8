//! The search index's partitions on a cluster. Every beacon row of a
//! record carries the record's placement byte `p` (the last byte of its ID,
//! [`PLACEMENT_OF`]), and a partition holds the bytes `b` with
//! `b % modulus == rest`, so a record's rows are all in one partition and a
//! one-record disposal's purge rewrites and scans that one only.
//!
//! A vault starts with 16 (`beacons_0` … `beacons_15`, modulus 16). Their
//! size grows with the vault (at 10^6 records with two searchable fields,
//! about 100 MB each: a one-record disposal's `VACUUM FULL`, WAL and byte
//! scan of it took 2 of its 4 s, benches/README run 15). So a purge that
//! would rewrite a partition larger than [`SPLIT_AT`] splits it instead:
//! in one transaction, children of a larger modulus
//! (`beacons_<modulus>_<rest>`) take its live rows and it is dropped, which
//! removes its file as `VACUUM FULL` would have. Each child is then about
//! half of [`SPLIT_AT`] or smaller, up to modulus 256: one placement byte a
//! partition, 4 GB of index, some 2.5 million records with two searchable
//! fields, past which partitions grow with the vault again. A small vault
//! keeps its 16 partitions and their few files.

use postgres::Client;

use crate::error::Result;
use crate::keystore::postgres::pg;

/// A beacon row's placement byte, in SQL over its key `k` and value `v`:
/// the last byte of the record ID (random; the first bytes of a UUIDv7 are
/// its time), which is in a reverse row's key (`'r'` | record) and in a
/// forward row's value (record | tag), see `beacon.rs`; [`touched`]
/// reads the same from a reverse row's key.
pub(super) const PLACEMENT_OF: &str =
    "(CASE WHEN get_byte(k, 0) = 114 THEN get_byte(k, 16) ELSE get_byte(v, 15) END)::smallint";

/// A vault's first partitions.
const FIRST_MODULUS: u16 = 16;

/// The largest modulus: one placement byte a partition.
const LAST_MODULUS: u16 = 256;

/// A partition larger than this (heap, indexes and TOAST) is split by the
/// purge that would rewrite it: about the size of a partition at 10^5
/// records (10 MB), where a one-record disposal takes about 1.2 s.
pub(crate) const SPLIT_AT: u64 = 16 << 20;

/// One partition: the placement bytes `b` with `b % modulus == rest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Part {
    modulus: u16,
    rest: u16,
}

impl Part {
    /// A new vault's partitions.
    pub(super) fn first() -> impl Iterator<Item = Part> {
        (0..FIRST_MODULUS).map(|rest| Part {
            modulus: FIRST_MODULUS,
            rest,
        })
    }

    /// Its table's name in the vault's schema (the first ones keep the
    /// names they had before partitions could split).
    pub(super) fn name(self) -> String {
        if self.modulus == FIRST_MODULUS {
            format!("beacons_{}", self.rest)
        } else {
            format!("beacons_{}_{}", self.modulus, self.rest)
        }
    }

    /// The partition a table name stands for, if it is one of ours.
    pub(super) fn parse(name: &str) -> Option<Part> {
        let rest = name.strip_prefix("beacons_")?;
        // Digits without a leading zero: one name for each partition.
        let number = |s: &str| -> Option<u16> {
            let canonical = s == "0"
                || (!s.starts_with('0') && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
            canonical.then(|| s.parse().ok()).flatten()
        };
        let part = match rest.split_once('_') {
            None => Part {
                modulus: FIRST_MODULUS,
                rest: number(rest)?,
            },
            Some((m, r)) => Part {
                modulus: number(m)?,
                rest: number(r)?,
            },
        };
        let valid = part.modulus.is_power_of_two()
            && (FIRST_MODULUS..=LAST_MODULUS).contains(&part.modulus)
            && part.rest < part.modulus
            && (part.modulus == FIRST_MODULUS) != rest.contains('_');
        valid.then_some(part)
    }

    /// Whether it holds the rows of placement byte `b`.
    pub(super) fn holds(self, b: u8) -> bool {
        u16::from(b) % self.modulus == self.rest
    }

    /// Which of its children (of [`Part::split`]) `child` is: the one
    /// holding the bytes `b` with `(b / modulus) % children == index`.
    fn child_index(self, child: Part) -> u16 {
        (child.rest - self.rest) / self.modulus
    }

    /// Its partition bound's values.
    fn values(self) -> String {
        (0..LAST_MODULUS)
            .filter(|b| b % self.modulus == self.rest)
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The children that replace it when it holds `size` bytes past
    /// `split_at`: each about half of `split_at` or less (`None`: no split).
    pub(super) fn split(self, size: u64, split_at: u64) -> Option<Vec<Part>> {
        if size <= split_at || self.modulus >= LAST_MODULUS {
            return None;
        }
        let half = (split_at / 2).max(1);
        let mut k: u16 = 2;
        while u64::from(k) * half < size && self.modulus * k < LAST_MODULUS {
            k *= 2;
        }
        Some(
            (0..k)
                .map(|i| Part {
                    modulus: self.modulus * k,
                    rest: self.rest + i * self.modulus,
                })
                .collect(),
        )
    }
}

/// The statements making a partition `part` of `{s}.beacons`, without
/// planner statistics of its keys and values (as the parent: `ANALYZE`
/// would copy sampled rows into `pg_statistic`, which no purge rewrites).
fn create(s: &str, part: Part) -> String {
    let (name, values) = (part.name(), part.values());
    format!(
        "CREATE TABLE {s}.{name} PARTITION OF {s}.beacons FOR VALUES IN ({values});
         ALTER TABLE {s}.{name} ALTER COLUMN k SET STATISTICS 0;
         ALTER TABLE {s}.{name} ALTER COLUMN v SET STATISTICS 0;"
    )
}

/// A new vault's partitions.
pub(super) fn create_first(s: &str) -> String {
    Part::first().map(|p| create(s, p)).collect()
}

/// The names of the partitions of `{s}.beacons` now.
pub(super) fn layout(c: &mut Client, s: &str) -> Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = to_regclass($1) ORDER BY 1",
            &[&format!("{s}.beacons")],
        )
        .map_err(pg)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The partitions (names, of `layout`) that hold the records whose reverse
/// rows are among the deleted `ranges`, or all of them when the batch
/// resumed without its ranges, when a deleted row has no reverse row to
/// place it, or when a record's byte is in no partition this build names
/// (one made by hand: read and rewritten too).
pub(super) fn touched(layout: &[String], ranges: Option<&[Vec<u8>]>) -> Vec<String> {
    let all = || layout.to_vec();
    let Some(ranges) = ranges else {
        return all();
    };
    let bytes: Vec<u8> = ranges
        .iter()
        .filter(|r| r.len() == 17 && r[0] == b'r')
        .map(|r| r[16])
        .collect();
    if bytes.is_empty() {
        return all();
    }
    let parts: Vec<(Option<Part>, &String)> = layout.iter().map(|n| (Part::parse(n), n)).collect();
    let mut out: Vec<String> = Vec::new();
    for b in bytes {
        let Some((_, name)) = parts.iter().find(|(p, _)| p.is_some_and(|p| p.holds(b))) else {
            return all();
        };
        out.push((*name).clone());
    }
    // A partition this build does not name may hold rows too.
    out.extend(
        parts
            .iter()
            .filter(|(p, _)| p.is_none())
            .map(|(_, n)| (*n).clone()),
    );
    out.sort();
    out.dedup();
    out
}

/// One transaction replacing partition `old` by `children`. The vault's
/// whole search index is locked `SHARE` first: writes wait, searches go
/// on, while each child is made as a table of its own (its `CHECK` the
/// bytes it will hold), filled from `old`'s live rows in one pass, and
/// indexed in one sorted build. Then the index is
/// locked `ACCESS EXCLUSIVE` for the swap alone (tens of milliseconds):
/// `old` detached, the children attached (their `CHECK` spares the scan
/// that would prove their rows belong, and their primary keys become the
/// parent's index's partitions), `old` dropped, its file with it. Every
/// statement on the index locks the parent before its partitions, and a
/// search's `ACCESS SHARE` does not wait for `SHARE`, so nothing waits for
/// this transaction while holding what it waits for. A row goes to the
/// child holding its `p`, which `old`'s bound keeps in `old`'s set: every
/// row to exactly one child (`p` is the placement byte in every row the
/// vault writes; a vault's rows from before are rewritten at open, see
/// [`migrate_single_valued`]).
/// (On a 68 MB partition split into 16: 1.3–1.5 s, against 2.1–2.2 s with
/// the index locked `ACCESS EXCLUSIVE` throughout and the rows routed
/// through the parent, which writes and searches all waited for.)
pub(super) fn split_sql(s: &str, old: Part, children: &[Part], lock_timeout_ms: u64) -> String {
    let k = children.len();
    let tables: String = children
        .iter()
        .map(|c| {
            let (name, values) = (c.name(), c.values());
            format!(
                "CREATE TABLE {s}.{name} (p smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL,
                     CHECK (p IN ({values})));
                 ALTER TABLE {s}.{name} ALTER COLUMN k SET STATISTICS 0;
                 ALTER TABLE {s}.{name} ALTER COLUMN v SET STATISTICS 0;"
            )
        })
        .collect();
    let fills: String = children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                ", f{i} AS (INSERT INTO {s}.{} SELECT p, k, v FROM src WHERE (p / {}) % {k} = {})",
                c.name(),
                old.modulus,
                old.child_index(*c)
            )
        })
        .collect();
    let keys: String = children
        .iter()
        .map(|c| format!("ALTER TABLE {s}.{} ADD PRIMARY KEY (k, p);", c.name()))
        .collect();
    let attach: String = children
        .iter()
        .map(|c| {
            format!(
                "ALTER TABLE {s}.beacons ATTACH PARTITION {s}.{} FOR VALUES IN ({});",
                c.name(),
                c.values()
            )
        })
        .collect();
    let old = old.name();
    format!(
        "BEGIN;
         SET LOCAL lock_timeout = '{lock_timeout_ms}ms';
         LOCK TABLE {s}.beacons IN SHARE MODE;
         {tables}
         WITH src AS MATERIALIZED (SELECT p, k, v FROM {s}.{old}){fills}
         SELECT 1;
         {keys}
         LOCK TABLE {s}.beacons IN ACCESS EXCLUSIVE MODE;
         ALTER TABLE {s}.beacons DETACH PARTITION {s}.{old};
         {attach}
         DROP TABLE {s}.{old};
         COMMIT;"
    )
}

/// For a vault made before partitions could split, whose first partitions
/// each held one value (`p` was the placement byte modulo 16): each is
/// detached, its rows' `p` set to the whole byte, and attached again for
/// the 16 bytes it holds, in the caller's transaction. Empty when there is
/// none.
pub(super) fn migrate_single_valued(c: &mut Client, s: &str) -> Result<String> {
    let rows = c
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = to_regclass($1)
                AND pg_get_expr(c.relpartbound, c.oid) NOT LIKE '%,%'
              ORDER BY 1",
            &[&format!("{s}.beacons")],
        )
        .map_err(pg)?;
    let mut sql = String::new();
    for r in &rows {
        let name: String = r.get(0);
        let Some(part) = Part::parse(&name).filter(|p| p.modulus == FIRST_MODULUS) else {
            continue;
        };
        let values = part.values();
        sql.push_str(&format!(
            "ALTER TABLE {s}.beacons DETACH PARTITION {s}.{name};
             UPDATE {s}.{name} SET p = {PLACEMENT_OF} WHERE p <> {PLACEMENT_OF};
             ALTER TABLE {s}.beacons ATTACH PARTITION {s}.{name} FOR VALUES IN ({values});"
        ));
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_not_ours() {
        for p in Part::first() {
            assert_eq!(Part::parse(&p.name()), Some(p));
        }
        let child = Part {
            modulus: 64,
            rest: 35,
        };
        assert_eq!(child.name(), "beacons_64_35");
        assert_eq!(Part::parse("beacons_64_35"), Some(child));
        for bad in [
            "beacons_16",
            "beacons_16_3",
            "beacons_48_3",
            "beacons_64_64",
            "beacons_512_3",
            "beacons_03",
            "beacons_x",
            "beacons_",
            "beacons_32_",
            "rows",
        ] {
            assert_eq!(Part::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_split_covers_exactly_its_parents_bytes() {
        let parent = Part {
            modulus: 16,
            rest: 5,
        };
        for (size, children) in [(17 << 20, 4), (100 << 20, 16), (10 << 30, 16)] {
            let kids = parent.split(size, SPLIT_AT).expect("split");
            assert_eq!(kids.len(), children, "{size}");
            for b in 0..=255u8 {
                let n = kids.iter().filter(|k| k.holds(b)).count();
                assert_eq!(n, usize::from(parent.holds(b)), "byte {b}");
            }
        }
        // The split's SQL routes byte `b` to the child of index
        // `(b / modulus) % children`: the child that holds it.
        let kids = parent.split(100 << 20, SPLIT_AT).expect("split");
        for b in (0..=255u8).filter(|b| parent.holds(*b)) {
            let index = (u16::from(b) / parent.modulus) % kids.len() as u16;
            let child = kids
                .iter()
                .find(|c| parent.child_index(**c) == index)
                .expect("a child of that index");
            assert!(child.holds(b), "byte {b} routed to {child:?}");
        }
        assert_eq!(parent.split(SPLIT_AT, SPLIT_AT), None);
        let last = Part {
            modulus: 256,
            rest: 5,
        };
        assert_eq!(last.split(1 << 40, SPLIT_AT), None);
        assert_eq!(last.values(), "5");
    }

    #[test]
    fn a_disposal_touches_the_partition_holding_its_records_byte() {
        let layout: Vec<String> = ["beacons_0", "beacons_32_1", "beacons_32_17"]
            .into_iter()
            .map(String::from)
            .chain((2..16).map(|r| format!("beacons_{r}")))
            .collect();
        let reverse = |b: u8| {
            let mut k = vec![b'r'];
            k.extend([0u8; 15]);
            k.push(b);
            k
        };
        assert_eq!(
            touched(&layout, Some(&[reverse(17 + 32)])),
            vec!["beacons_32_17".to_owned()]
        );
        assert_eq!(
            touched(&layout, Some(&[reverse(1), reverse(16 * 3 + 2)])),
            vec!["beacons_2".to_owned(), "beacons_32_1".to_owned()]
        );
        assert_eq!(touched(&layout, None).len(), layout.len());
        // A partition this build does not name is read too; a byte that no
        // named partition holds means every partition.
        let mut odd = layout.clone();
        odd.push("beacons_extra".into());
        assert_eq!(
            touched(&odd, Some(&[reverse(0)])),
            vec!["beacons_0".to_owned(), "beacons_extra".to_owned()]
        );
        let gap: Vec<String> = layout
            .iter()
            .filter(|n| *n != "beacons_0")
            .cloned()
            .collect();
        assert_eq!(touched(&gap, Some(&[reverse(16)])).len(), gap.len());
    }
}
