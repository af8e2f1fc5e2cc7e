//! Free space on a data dir's filesystem.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The free space of the filesystem holding a path.
#[derive(Clone, Debug)]
pub struct FreeSpace {
    /// Bytes an unprivileged process may still write.
    pub available: u64,
    /// The filesystem's mount point (the topmost directory on the same device).
    pub mount: PathBuf,
}

/// Measures the filesystem holding `path`.
pub fn free_space(path: &Path) -> Result<FreeSpace> {
    Ok(FreeSpace {
        available: available(path)?,
        mount: mount_point(path),
    })
}

#[cfg(unix)]
fn available(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::at(path, "the path holds a NUL byte"))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(
            path,
            "measure the free space of",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
fn available(_path: &Path) -> Result<u64> {
    Ok(u64::MAX)
}

/// The topmost ancestor of `path` on the same device: its mount point.
fn mount_point(path: &Path) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        let mine = dev(&path);
        let mut top = path.clone();
        for a in path.ancestors().skip(1) {
            if dev(a) != mine {
                break;
            }
            top = a.to_path_buf();
        }
        top
    }
    #[cfg(not(unix))]
    path.to_path_buf()
}
