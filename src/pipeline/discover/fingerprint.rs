//! Paths kept by a 128-bit fingerprint, and a compact table of values by fingerprint.
//!
//! A deep history has millions of files and hundreds of thousands of directories. Keeping
//! each by a fingerprint of its path (XXH3-128) rather than by the path itself takes a sixth
//! of the memory, no allocation per path, and a lookup compares two integers instead of two
//! strings. The chance that two of two million paths share a fingerprint is about 10^-26.

/// A path's fingerprint, as two halves: a `u128` would align the table's entries to 16
/// bytes and make each of them a third larger. Aligned to 4 bytes, so that a table entry
/// with a value of 12 bytes takes 28 bytes, not 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C, packed(4))]
pub(super) struct PathKey(u64, u64);

impl PathKey {
    pub fn of(path: &str) -> PathKey {
        let h = xxhash_rust::xxh3::xxh3_128(path.as_bytes());
        PathKey((h >> 64) as u64, h as u64)
    }
}

use smallvec::SmallVec;

/// Values by path fingerprint, built once and then only read or updated in place.
///
/// The entries sit in one array sorted by fingerprint, with an index of where each run of
/// leading bits starts. That is exactly the room of the entries: a hash map of two million
/// entries held four million slots (its load limit is seven eighths, and 2^21 slots hold
/// only 1.8 million), 100 MB where this takes 50. Fingerprints are uniform, so a lookup
/// scans a run of about four neighbours, as a hash map's probe does.
pub(super) struct KeyTable<V> {
    /// Sorted by key.
    entries: Vec<(PathKey, V)>,
    /// `starts[b]` is the first entry whose key's leading bits are `b` or more.
    starts: Vec<u32>,
    /// How far a key's first half is shifted to give its leading bits.
    shift: u32,
}

impl<V> Default for KeyTable<V> {
    fn default() -> KeyTable<V> {
        KeyTable::new(Vec::new())
    }
}

impl<V> KeyTable<V> {
    /// A table of `entries`; of two with one key, either may be found.
    pub fn new(mut entries: Vec<(PathKey, V)>) -> KeyTable<V> {
        assert!(
            u32::try_from(entries.len()).is_ok(),
            "fewer than 4 billion paths"
        );
        entries.sort_unstable_by_key(|e| e.0);
        // About four entries per run: the index is then a sixth of the entries' size.
        let bits = (usize::BITS - entries.len().leading_zeros()).saturating_sub(2);
        let bits = bits.clamp(1, 32);
        let shift = 64 - bits;
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for b in 0..=(1u64 << bits) {
            while at < entries.len() && entries[at].0 .0 >> shift < b {
                at += 1;
            }
            starts.push(at as u32);
        }
        KeyTable {
            entries,
            starts,
            shift,
        }
    }

    fn position(&self, key: PathKey) -> Option<usize> {
        let b = (key.0 >> self.shift) as usize;
        let (from, to) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        let run = &self.entries[from..to];
        run.iter().position(|e| e.0 == key).map(|i| from + i)
    }

    /// The index of each of `keys` (none when absent), into `out`, for [`KeyTable::value_mut`].
    ///
    /// Every key's run is found first, then every run is scanned: the loads of one pass do
    /// not wait on each other, so the processor has the cache misses of the whole batch
    /// under way at once. Looked up one at a time, two million keys took a second.
    pub fn positions(&self, keys: &[PathKey], out: &mut Vec<Option<usize>>) {
        let runs: SmallVec<[(u32, u32); 64]> = keys
            .iter()
            .map(|k| {
                let b = (k.0 >> self.shift) as usize;
                (self.starts[b], self.starts[b + 1])
            })
            .collect();
        out.clear();
        out.extend(keys.iter().zip(&runs).map(|(key, &(from, to))| {
            let run = &self.entries[from as usize..to as usize];
            run.iter()
                .position(|e| e.0 == *key)
                .map(|i| from as usize + i)
        }));
    }

    /// The value at an index [`KeyTable::positions`] gave.
    pub fn value_mut(&mut self, index: usize) -> &mut V {
        &mut self.entries[index].1
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, key: PathKey) -> Option<&V> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|e| &e.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_and_no_other() {
        for n in [0usize, 1, 2, 3, 7, 100, 5000] {
            let paths: Vec<String> = (0..n).map(|i| format!("dbs/1/2/{i}.parquet")).collect();
            let mut table = KeyTable::new(
                paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (PathKey::of(p), i))
                    .collect(),
            );
            assert_eq!(table.len(), n);
            for (i, p) in paths.iter().enumerate() {
                assert_eq!(table.get(PathKey::of(p)), Some(&i), "{p} of {n}");
            }
            for i in 0..n.max(50) {
                let absent = format!("dbs/1/2/{i}.parquet.tmp");
                assert_eq!(table.get(PathKey::of(&absent)), None);
            }
            let mut keys: Vec<PathKey> = paths.iter().map(|p| PathKey::of(p)).collect();
            keys.push(PathKey::of("dbs/absent.parquet"));
            let mut at = Vec::new();
            table.positions(&keys, &mut at);
            assert_eq!(at.len(), n + 1);
            for (i, pos) in at[..n].iter().enumerate() {
                assert_eq!(*table.value_mut(pos.unwrap()), i);
            }
            assert_eq!(at[n], None);
            if let Some(p) = paths.first() {
                *table.value_mut(at[0].unwrap()) = usize::MAX;
                assert_eq!(table.get(PathKey::of(p)), Some(&usize::MAX));
                assert_eq!(table.values().filter(|&&v| v == usize::MAX).count(), 1);
            }
        }
    }

    #[test]
    fn keys_at_the_ends_of_the_range_are_found() {
        let keys = [
            PathKey(0, 0),
            PathKey(0, 1),
            PathKey(u64::MAX, 0),
            PathKey(u64::MAX, u64::MAX),
            PathKey(1 << 63, 5),
        ];
        let table = KeyTable::new(keys.iter().map(|&k| (k, k.1)).collect());
        for k in keys {
            let value = k.1;
            assert_eq!(table.get(k), Some(&value));
        }
        assert_eq!(table.get(PathKey(u64::MAX, 1)), None);
        assert_eq!(table.get(PathKey(1, 0)), None);
    }
}
