//! Directories as the walk lists them: through file descriptors on Unix, by path elsewhere.

/// What a directory entry is: only directories and regular files are followed or kept.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Dir,
    File,
    Other,
}

/// One entry of a directory.
pub(super) struct Entry {
    pub name: String,
    pub kind: Kind,
    /// The file's size, when it was asked for.
    pub size: Option<std::io::Result<u64>>,
}

#[cfg(unix)]
pub(super) use fd_dir::{size_of_open, OpenDir};
#[cfg(not(unix))]
pub(super) use path_dir::{size_of_open, OpenDir};

/// Directories listed through file descriptors: a subdirectory is opened, and a file's size
/// read, relative to its directory.
#[cfg(unix)]
mod fd_dir {
    use super::{Entry, Kind};
    use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    const FLAGS: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::CLOEXEC);

    pub struct OpenDir(Dir);

    /// The size of an open file: `fstat`, not std's `statx` of an empty path, a simpler call.
    pub fn size_of_open(file: &std::fs::File) -> io::Result<u64> {
        Ok(u64::try_from(rustix::fs::fstat(file)?.st_size).unwrap_or(0))
    }

    impl OpenDir {
        pub fn open(path: &Path) -> io::Result<OpenDir> {
            let fd = rustix::fs::open(path, FLAGS, Mode::empty())?;
            Ok(OpenDir(Dir::new(fd)?))
        }

        pub fn child(&self, name: &str) -> io::Result<OpenDir> {
            let fd = rustix::fs::openat(self.0.fd()?, name, FLAGS, Mode::empty())?;
            Ok(OpenDir(Dir::new(fd)?))
        }

        /// Opens the file `name` in this directory, to read.
        ///
        /// Without touching its access time where the file system allows (`O_NOATIME`, for
        /// the files' owner or root): a check that reads two million footers must not write
        /// two million inodes.
        pub fn open_file(&self, name: &str) -> io::Result<std::fs::File> {
            static NOATIME_REFUSED: AtomicBool = AtomicBool::new(false);
            let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
            let dir = self.0.fd()?;
            let fd = if NOATIME_REFUSED.load(Ordering::Relaxed) {
                rustix::fs::openat(dir, name, flags, Mode::empty())?
            } else {
                match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
                    Err(rustix::io::Errno::PERM) => {
                        NOATIME_REFUSED.store(true, Ordering::Relaxed);
                        rustix::fs::openat(dir, name, flags, Mode::empty())?
                    }
                    fd => fd?,
                }
            };
            Ok(std::fs::File::from(fd))
        }

        /// The size of the file `name` in this directory.
        pub fn size_of(&self, name: &str) -> io::Result<u64> {
            let st = rustix::fs::statat(self.0.fd()?, name, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(u64::try_from(st.st_size).unwrap_or(0))
        }

        /// Every entry but `.` and `..`, with the size of each file `sized` names.
        pub fn entries(&mut self, sized: &dyn Fn(&str) -> bool) -> io::Result<Vec<Entry>> {
            let mut out = Vec::new();
            while let Some(e) = self.0.read() {
                let e = e?;
                let raw = e.file_name();
                if matches!(raw.to_bytes(), b"." | b"..") {
                    continue;
                }
                let name = String::from_utf8_lossy(raw.to_bytes()).into_owned();
                let wants_size = sized(&name);
                let mut ty = e.file_type();
                let mut size = None;
                // A file system that does not give types in listings is asked per entry.
                if ty == FileType::Unknown || (ty == FileType::RegularFile && wants_size) {
                    match rustix::fs::statat(self.0.fd()?, raw, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            ty = FileType::from_raw_mode(st.st_mode);
                            size = Some(Ok(u64::try_from(st.st_size).unwrap_or(0)));
                        }
                        Err(err) => size = Some(Err(err.into())),
                    }
                }
                let kind = match ty {
                    FileType::Directory => Kind::Dir,
                    FileType::RegularFile => Kind::File,
                    _ => Kind::Other,
                };
                let size = size.filter(|_| kind == Kind::File && wants_size);
                out.push(Entry { name, kind, size });
            }
            Ok(out)
        }
    }
}

/// Directories listed by path, where file descriptors are not at hand.
#[cfg(not(unix))]
mod path_dir {
    use super::{Entry, Kind};
    use std::io;
    use std::path::{Path, PathBuf};

    pub struct OpenDir(PathBuf);

    /// The size of an open file.
    pub fn size_of_open(file: &std::fs::File) -> io::Result<u64> {
        Ok(file.metadata()?.len())
    }

    impl OpenDir {
        pub fn open(path: &Path) -> io::Result<OpenDir> {
            Ok(OpenDir(path.to_path_buf()))
        }

        pub fn child(&self, name: &str) -> io::Result<OpenDir> {
            Ok(OpenDir(self.0.join(name)))
        }

        /// Opens the file `name` in this directory, to read.
        pub fn open_file(&self, name: &str) -> io::Result<std::fs::File> {
            std::fs::File::open(self.0.join(name))
        }

        /// The size of the file `name` in this directory.
        pub fn size_of(&self, name: &str) -> io::Result<u64> {
            Ok(std::fs::symlink_metadata(self.0.join(name))?.len())
        }

        /// Every entry, with the size of each file `sized` names.
        pub fn entries(&mut self, sized: &dyn Fn(&str) -> bool) -> io::Result<Vec<Entry>> {
            let mut out = Vec::new();
            for e in std::fs::read_dir(&self.0)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let ty = e.file_type()?;
                let kind = if ty.is_dir() {
                    Kind::Dir
                } else if ty.is_file() {
                    Kind::File
                } else {
                    Kind::Other
                };
                let size =
                    (kind == Kind::File && sized(&name)).then(|| e.metadata().map(|m| m.len()));
                out.push(Entry { name, kind, size });
            }
            Ok(out)
        }
    }
}
