//! A Parquet file's path as a file entry records it, kept in parts rather than as text.
//!
//! A deep history lists millions of files, and as its own string each path was the largest
//! allocation of an entry. Almost every path the server writes is
//! `<table dir>/<YYYY-MM-DD>/<HH-MM>/<digits>.parquet`: [`EntryPath`] keeps such a path as
//! its table directory (one string shared by all of a table's files), the window's minute
//! and the number, and gives back exactly the text it was read from. Any other path is kept
//! as text.

use crate::format::layout::ParquetPath;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A path relative to the data dir, as the metadata records it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryPath(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    /// `<table_dir>/<date>/<time>/<number, zero-padded to width>.parquet`.
    Window {
        /// Behind a thin pointer: 8 bytes less in every entry than an `Arc<str>`.
        table_dir: Arc<String>,
        /// Minutes since 0001-01-01T00:00 (the proleptic Gregorian calendar, as chrono's);
        /// a window after the year 8165 does not fit and is kept as text.
        minute: u32,
        number: u64,
        width: u8,
    },
    Text(Arc<str>),
}

/// Longest path rendered on the stack by [`EntryPath::with_str`]; longer ones allocate.
const STACK_LEN: usize = 160;

impl EntryPath {
    /// Calls `f` with the path as text, without allocating for all but very long paths.
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        if let Repr::Text(s) = &self.0 {
            return f(s);
        }
        let mut stack = [0u8; STACK_LEN];
        match self.render(&mut stack) {
            Some(text) => f(text),
            None => f(self
                .render(&mut vec![0u8; self.rendered_len()])
                .expect("room for it")),
        }
    }

    /// The text of a path kept in parts, in `buf`; `None` when it does not fit.
    fn render<'b>(&self, buf: &'b mut [u8]) -> Option<&'b str> {
        let Repr::Window {
            table_dir,
            minute,
            number,
            width,
        } = &self.0
        else {
            unreachable!("only a path kept in parts is rendered")
        };
        let mut w = Writer {
            buf: &mut *buf,
            len: 0,
        };
        if !w.window(table_dir, *minute, *number, *width) {
            return None;
        }
        let len = w.len;
        let text: &'b [u8] = buf;
        Some(std::str::from_utf8(&text[..len]).expect("rendered from UTF-8 parts"))
    }

    /// An upper bound of the length of the text of a path kept in parts.
    fn rendered_len(&self) -> usize {
        match &self.0 {
            Repr::Window { table_dir, .. } => table_dir.len() + 64,
            Repr::Text(s) => s.len(),
        }
    }

    /// The path under `dir` (the data dir, or an archive).
    pub fn under(&self, dir: &Path) -> PathBuf {
        self.with_str(|s| dir.join(s))
    }

    /// Whether the text contains `pat`.
    pub fn contains(&self, pat: &str) -> bool {
        self.with_str(|s| s.contains(pat))
    }

    /// Reads a path, in parts when it has the server's shape.
    fn parse(text: &str) -> Option<Repr> {
        let table_dir = ParquetPath::parse(text)?.table_dir;
        let rest = &text.as_bytes()[table_dir.len()..];
        // "/YYYY-MM-DD/HH-MM/" then the digits and ".parquet".
        let (head, name) = rest.split_at_checked(18)?;
        let digits = name.strip_suffix(b".parquet")?;
        if head[0] != b'/' || head[11] != b'/' || head[17] != b'/' {
            return None;
        }
        let num = |b: &[u8]| -> Option<u32> {
            b.iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let sep = |i: usize| head[i] == b'-';
        if !(sep(5) && sep(8) && sep(14)) {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(
            i32::try_from(num(&head[1..5])?).ok()?,
            num(&head[6..8])?,
            num(&head[9..11])?,
        )?;
        let (hour, min) = (num(&head[12..14])?, num(&head[15..17])?);
        if hour > 23 || min > 59 || digits.is_empty() || digits.len() > 19 {
            return None;
        }
        let days = u32::try_from(date.num_days_from_ce()).ok()?;
        let minute = days.checked_mul(1440)?.checked_add(hour * 60 + min)?;
        let number = digits.iter().try_fold(0u64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
        })?;
        Some(Repr::Window {
            table_dir: intern(table_dir),
            minute,
            number,
            width: digits.len() as u8,
        })
    }
}

thread_local! {
    /// The table directories this thread has read paths under: a table's files share one.
    static TABLE_DIRS: RefCell<foldhash::HashMap<Box<str>, Arc<String>>> = RefCell::default();
}

fn intern(dir: &str) -> Arc<String> {
    TABLE_DIRS.with_borrow_mut(|dirs| match dirs.get(dir) {
        Some(d) => Arc::clone(d),
        None => {
            let d = Arc::new(dir.to_string());
            dirs.insert(dir.into(), Arc::clone(&d));
            d
        }
    })
}

/// Renders into a fixed buffer; says `false` when the text does not fit.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(self.len..self.len + b.len()) else {
            return false;
        };
        dst.copy_from_slice(b);
        self.len += b.len();
        true
    }

    /// `n` in decimal, zero-padded to `width` digits.
    fn padded(&mut self, n: u64, width: usize) -> bool {
        let mut digits = [b'0'; 20];
        let (mut n, mut i) = (n, digits.len());
        while n > 0 {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let start = (digits.len() - width).min(i);
        self.bytes(&digits[start..])
    }

    fn window(&mut self, table_dir: &str, minute: u32, number: u64, width: u8) -> bool {
        let date = NaiveDate::from_num_days_from_ce_opt((minute / 1440) as i32)
            .expect("read from a valid date");
        let (hour, min) = (minute % 1440 / 60, minute % 60);
        self.bytes(table_dir.as_bytes())
            && self.bytes(b"/")
            && self.padded(date.year() as u64, 4)
            && self.bytes(b"-")
            && self.padded(date.month().into(), 2)
            && self.bytes(b"-")
            && self.padded(date.day().into(), 2)
            && self.bytes(b"/")
            && self.padded(hour.into(), 2)
            && self.bytes(b"-")
            && self.padded(min.into(), 2)
            && self.bytes(b"/")
            && self.padded(number, width.into())
            && self.bytes(b".parquet")
    }
}

impl From<&str> for EntryPath {
    fn from(text: &str) -> EntryPath {
        EntryPath(EntryPath::parse(text).unwrap_or_else(|| Repr::Text(text.into())))
    }
}

impl From<String> for EntryPath {
    fn from(text: String) -> EntryPath {
        EntryPath::from(text.as_str())
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.with_str(|s| f.write_str(s))
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.with_str(|s| fmt::Debug::fmt(s, f))
    }
}

impl Serialize for EntryPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_str(|text| s.serialize_str(text))
    }
}

impl<'de> Deserialize<'de> for EntryPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EntryPath, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EntryPath;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<EntryPath, E> {
                Ok(EntryPath::from(s))
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &str) -> Result<EntryPath, E> {
                // Borrowed from the text being parsed: where the parser is.
                super::mapped::passed(s);
                Ok(EntryPath::from(s))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> EntryPath {
        let p = EntryPath::from(text);
        assert_eq!(p.to_string(), text);
        p.with_str(|s| assert_eq!(s, text));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<EntryPath>(&json).unwrap(), p);
        p
    }

    fn is_parts(p: &EntryPath) -> bool {
        matches!(p.0, Repr::Window { .. })
    }

    #[test]
    fn server_paths_are_kept_in_parts_and_read_back_exactly() {
        for text in [
            "node0/dbs/metrics-1/cpu-0/2026-11-16/00-10/0000000003.parquet",
            "node0/dbs/1/0/2026-11-16/23-59/0000000003.parquet",
            "n/dbs/a-1/b-0/0001-01-01/00-00/0.parquet",
            "n/dbs/a-1/b-0/2024-02-29/12-00/18446744073709551.parquet",
            "n/dbs/a-1/b-0/8000-12-31/23-59/0000000000000000000.parquet",
        ] {
            assert!(is_parts(&round_trip(text)), "{text}");
        }
    }

    #[test]
    fn other_paths_are_kept_as_text() {
        for text in [
            "",
            // Beyond the minutes a u32 counts (the year 8166).
            "n/dbs/a-1/b-0/9999-12-31/12-00/0000000000000000000.parquet",
            "node0/dbs/1/0/2026-11-16/00-10/kompactor-1d-x.parquet",
            "node0/dbs/1/0/2026-11-16/00-10/0000000003-1.parquet",
            "node0/dbs/1/0/2026-02-30/00-10/0000000003.parquet",
            "node0/dbs/1/0/2026-11-16/24-00/0000000003.parquet",
            "node0/dbs/1/0/2026-11-16/00-60/0000000003.parquet",
            "node0/dbs/1/0/2026-11-16/00-10/.parquet",
            "node0/dbs/1/0/2026-11-16/00-10/12345678901234567890.parquet",
            "node0/dbs/1/0/2026-11-16/00-10/+1.parquet",
            "node0/dbs/1/0/2026-11-16/00-10/0000000003.parquet.tmp",
            "node0/dbs/1/0/2026-11-16/00-10/x/0000000003.parquet",
            "node0/dbs/1/0/2026_11-16/00-10/0000000003.parquet",
            "node0/other/1/0/2026-11-16/00-10/0000000003.parquet",
            "node0/dbs/1/0/0000000003.parquet",
        ] {
            assert!(!is_parts(&round_trip(text)), "{text}");
        }
    }

    #[test]
    fn a_long_path_is_rendered_off_the_stack() {
        let text = format!("n/dbs/{}-1/t-0/2026-11-16/00-10/7.parquet", "d".repeat(200));
        assert!(is_parts(&round_trip(&text)));
        assert_eq!(
            EntryPath::from(text.as_str()).under(Path::new("/x")),
            Path::new("/x").join(&text)
        );
    }

    #[test]
    fn a_table_shares_its_directory() {
        let (a, b) = (
            EntryPath::from("n/dbs/1/0/2026-11-16/00-10/1.parquet"),
            EntryPath::from("n/dbs/1/0/2026-11-17/00-10/2.parquet"),
        );
        match (&a.0, &b.0) {
            (Repr::Window { table_dir: x, .. }, Repr::Window { table_dir: y, .. }) => {
                assert!(Arc::ptr_eq(x, y))
            }
            _ => panic!("both are server paths"),
        }
        assert_ne!(a, b);
        assert_eq!(a, EntryPath::from("n/dbs/1/0/2026-11-16/00-10/1.parquet"));
    }
}
