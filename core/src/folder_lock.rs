//! One writer per run or audit folder. A process that writes a folder (a training run, a GAN run,
//! an audit, a merged audit, membership-inference shadow models) first takes an exclusive
//! advisory lock (`flock(2)`) on the file [`LOCK_FILE`] inside it, and holds it until it is done.
//! A second process on the same folder is refused at once with [`Error::FolderBusy`], before it
//! reads or appends to the ledger or `runs.jsonl`: two writers would otherwise interleave their
//! fsynced lines (two `--resume` trainings overwrite each other's ledger; two audits leave
//! duplicate rows).
//!
//! The kernel releases the lock when the holder exits or crashes, so a stale lock file never
//! blocks a later run; the file itself stays (removing it would let two processes lock two
//! different files). It holds the holder's process id, for the message. The lock is advisory and
//! per open file: a second [`FolderLock::acquire`] on the same folder in the same process is
//! refused too.
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside a locked folder.
pub const LOCK_FILE: &str = ".dpaudit.lock";

/// An exclusive lock on a folder, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct FolderLock {
    folder: PathBuf,
    _file: File,
}

impl FolderLock {
    /// Creates `folder` (and its parents) if missing, then locks it without waiting.
    ///
    /// # Errors
    /// [`Error::FolderBusy`] when another process (or another lock in this process) holds it;
    /// [`Error::Io`] when the folder or the lock file cannot be created.
    pub fn acquire(folder: &Path) -> Result<Self> {
        std::fs::create_dir_all(folder).map_err(|e| Error::io(format!("creating {}", folder.display()), e))?;
        let path = folder.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening the lock file {}", path.display()), e))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse::<u32>().ok());
                return Err(Error::FolderBusy { folder: folder.to_path_buf(), pid });
            }
            return Err(Error::io(format!("locking {}", path.display()), err));
        }
        // Best effort: the pid is only for the message another process prints.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(FolderLock { folder: folder.to_path_buf(), _file: file })
    }

    /// The locked folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("run");
        let first = FolderLock::acquire(&folder).unwrap();
        assert_eq!(first.folder(), folder);
        let err = FolderLock::acquire(&folder).unwrap_err();
        match &err {
            Error::FolderBusy { folder: f, pid } => {
                assert_eq!(f, &folder);
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected FolderBusy, got {other}"),
        }
        let message = err.to_string();
        assert!(message.contains("another dpaudit process") && message.contains(&folder.display().to_string()));
        drop(first);
        let again = FolderLock::acquire(&folder).unwrap();
        drop(again);
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 1, "only the lock file");
    }
}
