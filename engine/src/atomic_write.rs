//! Replacing a file so that a reader, a crash or a kill sees the old file or
//! the new one, never half of one. Every file the engine, the CLI and the
//! trainer publish goes through here, so they agree on how:
//!
//! 1. a temporary file in the same folder (a rename across file systems is a
//!    copy, not atomic), with a name no other writer uses: the process id and
//!    a per-process counter, created with `create_new` so a leftover of a
//!    crashed run is never written into;
//! 2. the bytes, then `fsync` of the file, so the rename cannot reach the
//!    disk before the data does;
//! 3. the rename over the target, then `fsync` of the folder, so the rename
//!    itself survives a power cut;
//! 4. on any failure, the temporary file is removed and the target is left
//!    as it was.
//!
//! Errors name the target path: the temporary name is ours, not the user's.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Writes `path` atomically with what `fill` writes into a buffered writer on
/// the temporary file; returns what `fill` returns. When `fill` fails, its
/// error is returned and the target is untouched.
pub fn write_atomic_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    let dir = parent_dir(path);
    let (tmp, file) = create_temp(dir, path)?;
    let result = (|| {
        let mut w = BufWriter::new(file);
        let value = fill(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(path, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(value)
    })();
    if result.is_err() {
        // The error that matters is the one above; a temporary file that
        // cannot be removed either is left for the user to see.
        let _ = std::fs::remove_file(&tmp);
    }
    let value = result?;
    fsync_dir(dir)?;
    Ok(value)
}

/// Writes `path` atomically for a writer that creates its file itself, by
/// name (the `safetensors` crate's `serialize_to_file`): `fill` gets a fresh
/// temporary path beside `path` and may create or replace the file there;
/// that file is then synced and renamed as in [`write_atomic_with`].
pub fn write_atomic_by_path(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = parent_dir(path);
    // Created (empty) only to reserve a name no other writer uses.
    let (tmp, file) = create_temp(dir, path)?;
    drop(file);
    let result = (|| {
        fill(&tmp)?;
        // `fill` may have replaced the reserved file: sync the one there now.
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    fsync_dir(dir)
}

/// Flushes a folder's entries (a rename or a new file in it) to the disk.
/// On non-Unix systems a folder cannot be opened as a file; there the rename
/// is as durable as the OS makes it.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The folder `path` is in. A bare file name has the empty path as parent:
/// that is the current folder.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The `N` of the next temporary name.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new temporary file beside `path`, `.NAME.tmp-PID-N`: hidden, named after
/// its target for whoever finds one after a crash, and unique across
/// processes (the pid) and threads (N).
fn create_temp(dir: &Path, path: &Path) -> Result<(PathBuf, File)> {
    let name = path
        .file_name()
        .ok_or_else(|| {
            Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
            )
        })?
        .to_string_lossy();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        match File::options().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // A leftover of an earlier process with the same pid: skip it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "main-atomic-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = TempDir::new("replace");
        let p = dir.0.join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(&dir.0), ["a.txt"]);
    }

    #[test]
    fn a_failing_fill_keeps_the_old_file_and_removes_the_temporary() {
        let dir = TempDir::new("fail");
        let p = dir.0.join("a.txt");
        write_atomic(&p, b"old").unwrap();
        let r: Result<()> = write_atomic_with(&p, |w| {
            w.write_all(b"half").unwrap();
            Err(Error::Input("stop".into()))
        });
        assert!(matches!(r, Err(Error::Input(_))));
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(&dir.0), ["a.txt"]);
    }

    #[test]
    fn a_leftover_temporary_is_skipped_not_overwritten() {
        let dir = TempDir::new("leftover");
        let p = dir.0.join("a.txt");
        // The next names the counter will give are taken (other tests may
        // take some of them first): the writer must step past them.
        let start = COUNTER.load(Ordering::Relaxed);
        let taken: Vec<PathBuf> = (start..start + 8)
            .map(|k| {
                let t = dir.0.join(format!(".a.txt.tmp-{}-{k}", std::process::id()));
                std::fs::write(&t, b"leftover").unwrap();
                t
            })
            .collect();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        for t in &taken {
            assert_eq!(std::fs::read(t).unwrap(), b"leftover");
        }
    }

    #[test]
    fn returns_what_fill_returns() {
        let dir = TempDir::new("value");
        let p = dir.0.join("n.txt");
        let n = write_atomic_with(&p, |w| {
            w.write_all(b"12345").map_err(|e| Error::io(&p, e))?;
            Ok(5usize)
        })
        .unwrap();
        assert_eq!(n, 5);
        assert_eq!(std::fs::read(&p).unwrap(), b"12345");
    }

    #[test]
    fn by_path_publishes_what_fill_wrote_or_nothing() {
        let dir = TempDir::new("by-path");
        let p = dir.0.join("a.bin");
        // A writer that replaces the reserved file, as a rename would.
        write_atomic_by_path(&p, |tmp| {
            let other = tmp.with_extension("other");
            std::fs::write(&other, b"whole").map_err(|e| Error::io(&other, e))?;
            std::fs::rename(&other, tmp).map_err(|e| Error::io(tmp, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        let r = write_atomic_by_path(&p, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::Input("stop".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        assert_eq!(entries(&dir.0), ["a.bin"]);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_target() {
        let dir = TempDir::new("missing");
        let p = dir.0.join("no-such-folder").join("a.txt");
        let e = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(e.contains("no-such-folder/a.txt"), "{e}");
    }
}
