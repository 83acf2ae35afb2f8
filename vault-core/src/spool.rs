//! An import body spooled to the vault's disk, encrypted under a key that
//! exists only in memory, so that the server streams an upload instead of
//! holding it whole (issue 13) and still checks every row before storing
//! any (the import's two passes read the spool twice).
//!
//! Nothing readable reaches the disk: each 1 MiB segment is sealed with
//! AES-256-GCM under a fresh random key bound to the spool's ID, the
//! segment's index and whether it is the last one, so a segment moved,
//! dropped, repeated or cut off fails to open. The key is zeroized when the
//! spool is dropped, and the file removed; a file left by a killed process
//! is ciphertext under a key that no longer exists anywhere, and the next
//! open of the vault deletes it ([`remove_leftovers`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::{self, Aad};
use crate::error::{Error, Result};
use crate::secret::SecretKey;

/// Plaintext bytes per sealed segment.
const SEGMENT: usize = 1 << 20;
/// The directory of spools, inside the vault.
const DIR: &str = "spool";

/// A spool being written.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    id: [u8; 16],
    /// Taken by [`Spool::finish`] (secrets are never cloned).
    key: Option<SecretKey>,
    buf: Zeroizing<Vec<u8>>,
    segments: u64,
    len: u64,
    finished: bool,
}

/// A complete spool, to be read (any number of times) and then dropped.
#[derive(Debug)]
pub struct SpooledBody {
    path: PathBuf,
    id: [u8; 16],
    key: SecretKey,
    len: u64,
}

fn segment_aad(id: &[u8; 16], index: u64, last: bool) -> Aad {
    Aad::new("import-spool")
        .part(id)
        .part(&index.to_be_bytes())
        .part(&[u8::from(last)])
}

impl Spool {
    /// A new, empty spool file (0600) under `vault_dir/spool/`.
    pub fn create(vault_dir: &Path) -> Result<Spool> {
        let dir = vault_dir.join(DIR);
        crate::fsutil::create_private_dir(&dir)?;
        let mut id = [0u8; 16];
        crypto::fill_random(&mut id);
        let path = dir.join(format!("import-{}.spool", hex::encode(id)));
        let file = crate::fsutil::create_private_file(&path)?;
        Ok(Spool {
            path,
            file,
            id,
            key: Some(SecretKey::generate()),
            buf: Zeroizing::new(Vec::with_capacity(SEGMENT)),
            segments: 0,
            len: 0,
            finished: false,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`; a full segment is sealed and written.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = (SEGMENT - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.len += n as u64;
            if self.buf.len() == SEGMENT {
                self.seal_segment(false)?;
            }
        }
        Ok(())
    }

    fn seal_segment(&mut self, last: bool) -> Result<()> {
        let aad = segment_aad(&self.id, self.segments, last);
        let key = self.key.as_ref().expect("an unfinished spool has its key");
        let env = crypto::seal(key, &aad, &self.buf);
        self.buf.clear();
        let mut head = [0u8; 5];
        head[0] = u8::from(last);
        head[1..].copy_from_slice(&(env.len() as u32).to_be_bytes());
        self.file
            .write_all(&head)
            .and_then(|()| self.file.write_all(&env))
            .map_err(|e| Error::io_at(&self.path, e))?;
        self.segments += 1;
        Ok(())
    }

    /// Seals the last segment; the spool can then be read.
    pub fn finish(mut self) -> Result<SpooledBody> {
        self.seal_segment(true)?;
        self.finished = true;
        Ok(SpooledBody {
            path: std::mem::take(&mut self.path),
            id: self.id,
            key: self.key.take().expect("an unfinished spool has its key"),
            len: self.len,
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl SpooledBody {
    /// The plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader of the plaintext, from the start.
    pub fn reader(&self) -> Result<SpoolReader<'_>> {
        let file = File::open(&self.path).map_err(|e| Error::io_at(&self.path, e))?;
        Ok(SpoolReader {
            body: self,
            file: BufReader::new(file),
            index: 0,
            segment: Zeroizing::new(Vec::new()),
            pos: 0,
            done: false,
        })
    }
}

impl Drop for SpooledBody {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a [`SpooledBody`] back, segment by segment; a segment that fails
/// to open, or a spool cut off before its last segment, is an error.
#[derive(Debug)]
pub struct SpoolReader<'a> {
    body: &'a SpooledBody,
    file: BufReader<File>,
    index: u64,
    segment: Zeroizing<Vec<u8>>,
    pos: usize,
    done: bool,
}

impl SpoolReader<'_> {
    fn next_segment(&mut self) -> std::io::Result<()> {
        let bad = || std::io::Error::other("the import spool is damaged");
        let mut head = [0u8; 5];
        self.file.read_exact(&mut head).map_err(|_| bad())?;
        let last = match head[0] {
            0 => false,
            1 => true,
            _ => return Err(bad()),
        };
        let n = u32::from_be_bytes(head[1..].try_into().expect("4 bytes")) as usize;
        if n > SEGMENT + 64 {
            return Err(bad());
        }
        let mut env = vec![0u8; n];
        self.file.read_exact(&mut env).map_err(|_| bad())?;
        let aad = segment_aad(&self.body.id, self.index, last);
        self.segment =
            crypto::open(&self.body.key, &aad, &env, "import spool").map_err(|_| bad())?;
        self.pos = 0;
        self.index += 1;
        if last {
            self.done = true;
            let mut extra = [0u8; 1];
            if self.file.read(&mut extra)? != 0 {
                return Err(bad());
            }
        }
        Ok(())
    }
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for SpoolReader<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.segment.len() && !self.done {
            self.next_segment()?;
        }
        Ok(&self.segment[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.segment.len());
    }
}

/// Deletes spools a killed process left behind (their keys died with it).
/// Returns how many.
pub fn remove_leftovers(vault_dir: &Path) -> Result<usize> {
    let dir = vault_dir.join(DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "spool") {
            std::fs::remove_file(&p).map_err(|err| Error::io_at(&p, err))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool gives back exactly what was written, over several segments
    /// and twice; its file holds none of the plaintext; it is removed when
    /// dropped; and a damaged or truncated spool fails to read.
    #[test]
    fn a_spool_round_trips_and_keeps_nothing_readable() {
        let dir = tempfile::tempdir().unwrap();
        let line = b"{\"subject\":\"c-1\",\"ssn\":\"123-45-6789\"}\n";
        let mut want = Vec::new();
        let mut s = Spool::create(dir.path()).unwrap();
        while want.len() < 2 * SEGMENT + 1000 {
            s.write(line).unwrap();
            want.extend_from_slice(line);
        }
        let body = s.finish().unwrap();
        assert_eq!(body.len(), want.len() as u64);
        for _ in 0..2 {
            let mut got = Vec::new();
            body.reader().unwrap().read_to_end(&mut got).unwrap();
            assert!(got == want, "round trip");
        }
        let file = std::fs::read(&body.path).unwrap();
        assert!(
            !file.windows(11).any(|w| w == b"123-45-6789"),
            "no plaintext in the spool file"
        );
        // Damaged: a flipped byte in the second segment.
        let mut bad = file.clone();
        let at = 5 + SEGMENT + 64;
        bad[at] ^= 1;
        std::fs::write(&body.path, &bad).unwrap();
        assert!(body.reader().unwrap().read_to_end(&mut Vec::new()).is_err());
        // Truncated: the last segment cut off.
        std::fs::write(&body.path, &file[..file.len() - 100]).unwrap();
        assert!(body.reader().unwrap().read_to_end(&mut Vec::new()).is_err());
        let path = body.path.clone();
        drop(body);
        assert!(!path.exists(), "removed on drop");
        // A spool never finished is removed too; a leftover file is swept.
        let s = Spool::create(dir.path()).unwrap();
        let p = s.path.clone();
        drop(s);
        assert!(!p.exists());
        let left = dir.path().join(DIR).join("import-00.spool");
        std::fs::write(&left, b"x").unwrap();
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 1);
        assert!(!left.exists());
    }
}
