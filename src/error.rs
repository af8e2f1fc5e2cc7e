//! The error type: what went wrong, where, and what the user can do about it.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error an operator can act on.
#[derive(Debug)]
pub struct Error {
    /// What went wrong, in one sentence.
    pub what: String,
    /// The file or directory it concerns, if any.
    pub path: Option<PathBuf>,
    /// What the operator can do about it, if there is something.
    pub hint: Option<String>,
    /// The filesystem was full (the run's report says how much more it needed).
    pub out_of_space: bool,
    /// The request itself is wrong (an unknown name, a predicate that does not parse): the
    /// command line's fault, exit status 2, nothing changed.
    pub usage: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(what: impl Into<String>) -> Error {
        let what = what.into();
        Error {
            // DuckDB and the OS say it in words; a full disk is worth recognising however said.
            out_of_space: what.contains("No space left on device"),
            what,
            path: None,
            hint: None,
            usage: false,
        }
    }

    /// A request that cannot be carried out as given (exit status 2).
    pub fn usage(what: impl Into<String>) -> Error {
        Error {
            usage: true,
            ..Error::new(what)
        }
    }

    pub fn at(path: impl AsRef<Path>, what: impl Into<String>) -> Error {
        Error {
            path: Some(path.as_ref().to_path_buf()),
            ..Error::new(what)
        }
    }

    /// An I/O error on `path`, phrased as "could not <doing>".
    pub fn io(path: impl AsRef<Path>, doing: &str, e: std::io::Error) -> Error {
        let full = e.kind() == std::io::ErrorKind::StorageFull;
        let mut err = Error::at(path, format!("could not {doing}: {e}"));
        err.out_of_space |= full;
        err
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        write!(f, "{}", self.what)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<duckdb::Error> for Error {
    fn from(e: duckdb::Error) -> Error {
        Error::new(format!("DuckDB: {e}"))
    }
}
