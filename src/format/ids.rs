//! Distinct types for the integers the on-disk format is made of.
//!
//! Every id, sequence number and time in a snapshot is a 64-bit integer. Giving each its own
//! type keeps a file id from being passed where a snapshot sequence is expected, and keeps
//! them all away from floating point (nanosecond times near 1.8e18 do not fit in an f64).

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! int_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

int_newtype!(
    /// A Parquet file id, unique per node; the key of a file, never its path.
    FileId(u64)
);
int_newtype!(
    /// A snapshot sequence number; the snapshot file name holds `u64::MAX - seq`.
    SnapshotSeq(u64)
);
int_newtype!(
    /// A WAL file sequence number.
    WalSeq(u64)
);
int_newtype!(
    /// A database id as the snapshot records it.
    DbId(u64)
);
int_newtype!(
    /// A table id, unique within its database.
    TableId(u64)
);
int_newtype!(
    /// A point in time or a duration in nanoseconds since the Unix epoch (UTC).
    Nanos(i64)
);
int_newtype!(
    /// Where a file stands in the server's list of its table after startup: of two files of
    /// one `chunk_time` with equal `min_time`, the one further along holds the later version
    /// of a point.
    LoadPos(u32)
);

impl SnapshotSeq {
    /// The 20-digit name the server gives this sequence's snapshot or checkpoint file.
    pub fn inverted_name(self) -> String {
        format!("{:020}", u64::MAX - self.0)
    }

    /// Parses a 20-digit inverted file stem back into a sequence number.
    pub fn from_inverted_name(stem: &str) -> Option<SnapshotSeq> {
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        stem.parse::<u64>().ok().map(|n| SnapshotSeq(u64::MAX - n))
    }
}

impl Nanos {
    pub const MIN: Nanos = Nanos(i64::MIN);
    pub const MAX: Nanos = Nanos(i64::MAX);

    /// The time as a UTC date-time, or `None` beyond chrono's range.
    pub fn to_utc(self) -> Option<chrono::DateTime<chrono::Utc>> {
        let secs = self.0.div_euclid(1_000_000_000);
        let nsec = self.0.rem_euclid(1_000_000_000) as u32;
        chrono::DateTime::from_timestamp(secs, nsec)
    }

    /// Renders the time with a chrono format string (UTC), or the raw number if out of range.
    pub fn format(self, fmt: &str) -> String {
        match self.to_utc() {
            Some(t) => t.format(fmt).to_string(),
            None => self.0.to_string(),
        }
    }

    /// Renders the time as RFC 3339 UTC with nanoseconds, or the raw number if out of range.
    pub fn to_rfc3339(self) -> String {
        self.format("%Y-%m-%dT%H:%M:%S%.9fZ")
    }

    /// The start of the `window`-long interval (aligned to the epoch) that holds this time.
    pub fn floor_to(self, window: Nanos) -> Nanos {
        Nanos(self.0 - self.0.rem_euclid(window.0))
    }
}

/// A (database, table) pair: the unit that is never merged with another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableKey {
    pub db: DbId,
    pub table: TableId,
}

impl fmt::Display for TableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.db, self.table)
    }
}

/// A set of file ids, built once: a bit per id up to the largest when the ids are dense, as
/// the server gives them out, else a hash set.
///
/// Discovery and planning test millions of entries against sets of millions of ids: as a
/// bitmap such a set takes a quarter of a megabyte, where a hash set took tens.
pub struct FileIdSet(IdSetRepr);

enum IdSetRepr {
    Bits(Vec<u64>),
    Hashed(foldhash::HashSet<FileId>),
}

impl FileIdSet {
    /// The set of `ids` (read twice: once to size it, once to fill it).
    pub fn new(ids: impl Iterator<Item = FileId> + Clone) -> FileIdSet {
        let mut set = FileIdSet::empty_for(ids.clone());
        for id in ids {
            set.insert(id);
        }
        set
    }

    /// An empty set with the form that suits `ids`, for them to be inserted one at a time.
    pub fn empty_for(ids: impl Iterator<Item = FileId>) -> FileIdSet {
        let span = IdSpan::of(ids);
        if span.count == 0 {
            return FileIdSet(IdSetRepr::Bits(Vec::new()));
        }
        // A bit per id from 0 to the highest.
        if span.direct_fits(span.highest / 8) {
            FileIdSet(IdSetRepr::Bits(vec![
                0u64;
                (span.highest / 64 + 1) as usize
            ]))
        } else {
            let room = usize::try_from(span.count).unwrap_or(usize::MAX);
            FileIdSet(IdSetRepr::Hashed(
                foldhash::HashSet::with_capacity_and_hasher(room, Default::default()),
            ))
        }
    }

    /// Adds `id`; whether it was not there yet.
    pub fn insert(&mut self, id: FileId) -> bool {
        match &mut self.0 {
            IdSetRepr::Bits(bits) => {
                let w = usize::try_from(id.0 / 64).expect("a bitmap's ids fit in memory");
                if w >= bits.len() {
                    bits.resize(w + 1, 0);
                }
                let bit = 1 << (id.0 % 64);
                let new = bits[w] & bit == 0;
                bits[w] |= bit;
                new
            }
            IdSetRepr::Hashed(set) => set.insert(id),
        }
    }

    /// Removes every id, keeping the form and the room.
    pub fn clear(&mut self) {
        match &mut self.0 {
            IdSetRepr::Bits(bits) => bits.fill(0),
            IdSetRepr::Hashed(set) => set.clear(),
        }
    }

    pub fn contains(&self, id: FileId) -> bool {
        match &self.0 {
            IdSetRepr::Bits(bits) => usize::try_from(id.0 / 64)
                .ok()
                .and_then(|w| bits.get(w))
                .is_some_and(|w| w & (1 << (id.0 % 64)) != 0),
            IdSetRepr::Hashed(set) => set.contains(&id),
        }
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        match &self.0 {
            IdSetRepr::Bits(bits) => bits.iter().map(|w| w.count_ones() as usize).sum(),
            IdSetRepr::Hashed(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.0 {
            IdSetRepr::Bits(bits) => bits.iter().all(|w| *w == 0),
            IdSetRepr::Hashed(set) => set.is_empty(),
        }
    }
}

/// How many ids a set or map is built for, and their range.
struct IdSpan {
    count: u64,
    lowest: u64,
    highest: u64,
}

impl IdSpan {
    fn of(ids: impl Iterator<Item = FileId>) -> IdSpan {
        ids.fold(
            IdSpan {
                count: 0,
                lowest: u64::MAX,
                highest: 0,
            },
            |s, id| IdSpan {
                count: s.count + 1,
                lowest: s.lowest.min(id.0),
                highest: s.highest.max(id.0),
            },
        )
    }

    /// Whether a table indexed by id, of `bytes`, is no larger than a hash table of the same
    /// ids would be (about 16 bytes each), give or take a few kilobytes.
    fn direct_fits(&self, bytes: u64) -> bool {
        bytes <= self.count.saturating_mul(16).saturating_add(4096)
    }
}

/// Values by file id, for a set of ids known up front: a slot per id from the lowest to the
/// highest when the ids are dense, as the server gives them out, else a hash map.
pub struct FileIdMap<V>(IdMapRepr<V>);

enum IdMapRepr<V> {
    Direct { lowest: u64, slots: Vec<Option<V>> },
    Hashed(foldhash::HashMap<FileId, V>),
}

impl<V> fmt::Debug for FileIdMap<V> {
    /// The form and size only: a deep history's map holds millions of slots.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            IdMapRepr::Direct { lowest, slots } => {
                write!(f, "FileIdMap(direct from {lowest}, {} slots)", slots.len())
            }
            IdMapRepr::Hashed(map) => write!(f, "FileIdMap(hashed, {} ids)", map.len()),
        }
    }
}

impl<V> FileIdMap<V> {
    /// An empty map with the form that suits `ids`; only those may be inserted.
    pub fn for_ids(ids: impl Iterator<Item = FileId>) -> FileIdMap<V> {
        let span = IdSpan::of(ids);
        let slots = span.highest.saturating_sub(span.lowest).saturating_add(1);
        let bytes = slots.saturating_mul(std::mem::size_of::<Option<V>>() as u64);
        match usize::try_from(slots) {
            Ok(slots) if span.count > 0 && span.direct_fits(bytes) => {
                FileIdMap(IdMapRepr::Direct {
                    lowest: span.lowest,
                    slots: std::iter::repeat_with(|| None).take(slots).collect(),
                })
            }
            // Sized once: growing a map of millions holds the old one beside the new.
            _ => FileIdMap(IdMapRepr::Hashed(
                foldhash::HashMap::with_capacity_and_hasher(
                    usize::try_from(span.count).unwrap_or(0),
                    Default::default(),
                ),
            )),
        }
    }

    /// The slot of `id`, which must be one of the ids the map was built for.
    fn slot(lowest: u64, slots: &mut [Option<V>], id: FileId) -> &mut Option<V> {
        id.0.checked_sub(lowest)
            .and_then(|i| slots.get_mut(usize::try_from(i).ok()?))
            .expect("an id the map was built for")
    }

    /// Stores `value` for `id`, in place of any it had.
    pub fn insert(&mut self, id: FileId, value: V) {
        match &mut self.0 {
            IdMapRepr::Direct { lowest, slots } => *Self::slot(*lowest, slots, id) = Some(value),
            IdMapRepr::Hashed(map) => {
                map.insert(id, value);
            }
        }
    }

    /// The value of `id`, if it has one.
    pub fn get(&self, id: FileId) -> Option<&V> {
        match &self.0 {
            IdMapRepr::Direct { lowest, slots } => {
                let i = usize::try_from(id.0.checked_sub(*lowest)?).ok()?;
                slots.get(i)?.as_ref()
            }
            IdMapRepr::Hashed(map) => map.get(&id),
        }
    }

    /// The value of `id`, once `value` is stored for it if it had none.
    pub fn get_or_insert(&mut self, id: FileId, value: V) -> &V {
        match &mut self.0 {
            IdMapRepr::Direct { lowest, slots } => {
                Self::slot(*lowest, slots, id).get_or_insert(value)
            }
            IdMapRepr::Hashed(map) => map.entry(id).or_insert(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_sets_hold_exactly_their_ids_dense_or_sparse() {
        let dense = [3, 0, 64, 200, 3].map(FileId);
        let sparse = [5, u64::MAX, 1 << 40].map(FileId);
        for ids in [&dense[..], &sparse[..], &[]] {
            let set = FileIdSet::new(ids.iter().copied());
            assert_eq!(set.is_empty(), ids.is_empty());
            let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
            assert_eq!(set.len(), distinct.len());
            for probe in [0, 1, 3, 5, 63, 64, 65, 199, 200, 201, 1 << 40, u64::MAX] {
                let probe = FileId(probe);
                assert_eq!(
                    set.contains(probe),
                    ids.contains(&probe),
                    "{probe} in {ids:?}"
                );
            }
        }
        let mut set = FileIdSet::empty_for(dense.into_iter());
        assert!(set.insert(FileId(3)) && !set.insert(FileId(3)) && set.insert(FileId(500)));
        assert_eq!(set.len(), 2);
        set.clear();
        assert!(set.is_empty() && set.insert(FileId(3)));
        assert!(matches!(
            FileIdSet::new(dense.into_iter()).0,
            IdSetRepr::Bits(_)
        ));
        assert!(matches!(
            FileIdSet::new(sparse.into_iter()).0,
            IdSetRepr::Hashed(_)
        ));
    }

    #[test]
    fn id_maps_keep_the_first_value_or_the_one_inserted_dense_or_sparse() {
        let dense = [3, 1, 2].map(FileId);
        let sparse = [5, 1 << 40, u64::MAX].map(FileId);
        for ids in [dense, sparse] {
            let mut map = FileIdMap::for_ids(ids.into_iter());
            for id in ids {
                assert_eq!(map.get(id), None, "{id}");
                assert_eq!(*map.get_or_insert(id, "a"), "a", "{id}");
                assert_eq!(*map.get_or_insert(id, "b"), "a", "{id}");
                map.insert(id, "c");
                assert_eq!(map.get(id), Some(&"c"), "{id}");
            }
            assert_eq!(map.get(FileId(4)), None);
        }
        let direct = |ids: [FileId; 3]| {
            matches!(
                FileIdMap::<&str>::for_ids(ids.into_iter()).0,
                IdMapRepr::Direct { .. }
            )
        };
        assert!(direct(dense));
        assert!(!direct(sparse));
    }

    #[test]
    fn inverted_names_round_trip() {
        let seq = SnapshotSeq(147);
        assert_eq!(seq.inverted_name(), "18446744073709551468");
        assert_eq!(
            SnapshotSeq::from_inverted_name("18446744073709551468"),
            Some(seq)
        );
        assert_eq!(SnapshotSeq::from_inverted_name("1844674407370955146"), None);
        assert_eq!(
            SnapshotSeq::from_inverted_name("1844674407370955146x"),
            None
        );
    }

    #[test]
    fn floor_handles_negative_times() {
        let ten_min = Nanos(600_000_000_000);
        assert_eq!(Nanos(600_000_000_001).floor_to(ten_min), ten_min);
        assert_eq!(Nanos(-1).floor_to(ten_min), Nanos(-600_000_000_000));
    }

    #[test]
    fn rfc3339_keeps_nanoseconds() {
        assert_eq!(
            Nanos(1_794_981_000_500_000_030).to_rfc3339(),
            "2026-11-18T05:50:00.500000030Z"
        );
    }
}
