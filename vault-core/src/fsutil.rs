//! File-system helpers: private (0700/0600) creation, permission checks and
//! directory fsync, so every write path names its durability step.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates a directory (and parents) with mode 0700.
pub fn create_private_dir(path: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    b.mode(0o700);
    b.create(path).map_err(|e| Error::io_at(path, e))?;
    Ok(())
}

/// Creates a new file (failing if it exists) with mode 0600.
pub fn create_private_file(path: &Path) -> Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::AlreadyExists("file"),
        _ => Error::io_at(path, e),
    })
}

/// Fsyncs a directory so that a created or renamed entry survives power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io_at(dir, e))
}

/// Refuses a file or directory that group or others can read (DESIGN §3).
pub fn check_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(path)
            .map_err(|e| Error::io_at(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::UnsafePermissions(path.display().to_string()));
        }
    }
    Ok(())
}
