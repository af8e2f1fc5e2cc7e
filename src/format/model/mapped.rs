//! JSON text parsed where it lies, in a file mapped into memory, and handed back to the kernel
//! behind the parser.
//!
//! A deep history's checkpoint is hundreds of megabytes of text. serde_json parses text in
//! memory at about twice the speed of a stream (its stream reader takes a byte at a time),
//! but held whole, that text would be the largest thing in memory. Mapped, with every
//! stretch the parser has passed dropped from the mapping as it goes, it is neither slow nor
//! large: the file's pages stay in the page cache, and this process holds only the stretch
//! it is parsing.
//!
//! How far the parser has come is learnt from the file entries' paths: each is borrowed
//! from the text, so its address tells where the parser is ([`passed`]).

use std::cell::Cell;

/// How much passed text is let go of at once: few calls into the kernel, a bounded rest.
const RELEASE_STEP: usize = 16 << 20;

thread_local! {
    /// The text this thread is parsing in place: its start, the end of what was let go of,
    /// and its end (addresses); all 0 when there is none.
    static PARSING: Cell<(usize, usize, usize)> = const { Cell::new((0, 0, 0)) };
}

/// Notes that the parser on this thread has read past `text`, a string borrowed from the
/// text it parses; once a step's worth of text lies behind it, that is dropped from the
/// mapping.
pub(super) fn passed(text: &str) {
    let (start, released, end) = PARSING.get();
    let at = text.as_ptr() as usize;
    if at < released || at >= end || at - released < RELEASE_STEP {
        return; // not in the mapped text, or not far enough on
    }
    let upto = at & !(page_size() - 1);
    #[cfg(unix)]
    // SAFETY: [released, upto) lies within the mapping (both page-aligned, released ≥ start,
    // upto ≤ at < end), which is private and read-only: dropping its pages only makes a later
    // read of them fault them in again from the file. The parser has passed that text and
    // holds no reference into it (this string is after `upto`).
    unsafe {
        libc::madvise(
            released as *mut libc::c_void,
            upto - released,
            libc::MADV_DONTNEED,
        );
    }
    PARSING.set((start, upto, end));
}

fn page_size() -> usize {
    #[cfg(unix)]
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    #[cfg(not(unix))]
    let size = 4096;
    usize::try_from(size).unwrap_or(4096)
}

/// A whole file mapped into memory, read-only.
pub struct MappedText {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and lives until the value is dropped.
unsafe impl Send for MappedText {}
unsafe impl Sync for MappedText {}

impl MappedText {
    /// Maps the first `len` bytes of `file` (its size).
    ///
    /// The server never rewrites a metadata file in place (it writes a new one and renames
    /// it over the old), and kompactor neither, so the mapped text does not change under the
    /// parser, even beside a running server.
    #[cfg(unix)]
    pub fn map(file: &std::fs::File, len: u64) -> std::io::Result<MappedText> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        if len == 0 {
            return Ok(MappedText {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: a new private, read-only mapping of an open file; nothing else refers to
        // the range it returns.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(MappedText {
            ptr: ptr as *const u8,
            len,
        })
    }

    /// Files are not mapped here: the caller reads them another way.
    #[cfg(not(unix))]
    pub fn map(_file: &std::fs::File, _len: u64) -> std::io::Result<MappedText> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// Runs `parse` on the text, letting go of what it has passed as it goes ([`passed`]).
    pub fn parse<R>(&self, parse: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: the mapping holds `len` readable bytes until `self` is dropped, and does
        // not change ([`MappedText::map`]).
        let text = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        let start = self.ptr as usize;
        let outer = PARSING.replace((start, start, start + self.len));
        let out = parse(text);
        PARSING.set(outer);
        out
    }
}

impl Drop for MappedText {
    fn drop(&mut self) {
        #[cfg(unix)]
        if self.len > 0 {
            // SAFETY: the mapping made by `map`, unmapped once; no slice of it outlives
            // `parse`.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_mapped_file_reads_as_its_text_and_lets_go_of_what_is_passed() {
        let mut f = tempfile::tempfile().unwrap();
        let text: Vec<u8> = (0..3 * RELEASE_STEP + 123)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        f.write_all(&text).unwrap();
        let mapped = MappedText::map(&f, text.len() as u64).unwrap();
        mapped.parse(|t| {
            assert_eq!(t, &text[..]);
            let s = std::str::from_utf8(&t[2 * RELEASE_STEP + 5..2 * RELEASE_STEP + 9]).unwrap();
            passed(s);
            let (start, released, _) = PARSING.get();
            assert_eq!(released - start, 2 * RELEASE_STEP);
            // What was let go of reads the same, faulted in again from the file.
            assert_eq!(t, &text[..]);
        });
        assert_eq!(PARSING.get(), (0, 0, 0), "nothing is parsed in place after");
        let empty = MappedText::map(&tempfile::tempfile().unwrap(), 0).unwrap();
        assert_eq!(empty.parse(<[u8]>::len), 0);
    }
}
