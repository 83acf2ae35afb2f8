//! The breached-password list: about 184,000 of the passwords seen most
//! often in public breaches (source, licence and how it was made in
//! `data/README.md`), shipped in the binary as a sorted text file and
//! searched by bisection over its bytes, so a check allocates nothing but
//! the normalised candidate and costs about 18 comparisons.
//!
//! Entries are normalised the way candidates are ([`normalise`]): trimmed
//! of surrounding white space and lower-cased. A unit test checks that the
//! shipped file is normalised, sorted and large enough.

/// One entry a line, normalised, sorted by bytes, unique.
static LIST: &str = include_str!("../data/breached-passwords.txt");

/// The fewest entries the list may have (REQ: at least 100,000).
pub const MIN_ENTRIES: usize = 100_000;

/// The normal form in which passwords are compared with the list.
pub fn normalise(p: &str) -> String {
    p.trim().to_lowercase()
}

/// Whether `normalised` (already in [`normalise`]d form) is on the list.
pub fn contains(normalised: &str) -> bool {
    let b = LIST.as_bytes();
    let needle = normalised.as_bytes();
    // Search the lines that start in [lo, hi); both are line starts (or the end).
    let (mut lo, mut hi) = (0usize, b.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // `lo` is a line start, so the start found is at least `lo`.
        let start = b[..mid]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1)
            .max(lo);
        let end = b[start..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |i| start + i);
        match b[start..end].cmp(needle) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => lo = end + 1,
            std::cmp::Ordering::Greater => hi = start,
        }
    }
    false
}

/// How many entries the list has.
pub fn len() -> usize {
    LIST.lines().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_large_normalised_sorted_and_unique() {
        assert!(len() >= MIN_ENTRIES, "only {} entries", len());
        let mut prev: Option<&str> = None;
        for line in LIST.lines() {
            assert!(!line.is_empty());
            assert_eq!(normalise(line), line, "an entry is not normalised");
            if let Some(p) = prev {
                assert!(p.as_bytes() < line.as_bytes(), "not sorted or not unique");
            }
            prev = Some(line);
        }
    }

    #[test]
    fn every_entry_is_found_and_near_misses_are_not() {
        for line in LIST.lines() {
            assert!(contains(line));
        }
        for absent in [
            "",
            "zzzzzzzzzzzzzzzzzzzzzzzz-not-a-password",
            "\u{10ffff}",
            "!",
        ] {
            // "!" sorts before every letter and digit; it may or may not be
            // listed, but must never panic.
            let _ = contains(absent);
        }
        assert!(!contains("zzzzzzzzzzzzzzzzzzzzzzzz-not-a-password"));
        assert!(!contains("a9$kq!Lm2#Vx7p-pivault-test"));
    }

    #[test]
    fn well_known_breached_passwords_are_listed() {
        for p in [
            "123456",
            "password",
            "iloveyou",
            "trustno1",
            "1qaz2wsx3edc",
            "qwerty",
        ] {
            assert!(contains(p), "{p} missing");
        }
        assert!(contains(&normalise("  PassWord ")));
    }
}
