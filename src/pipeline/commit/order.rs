//! The check that a commit leaves the server's view as intended: the files it will load, and
//! its order among files that can hold versions of one point.

use crate::error::{Error, Result};
use crate::format::ids::{FileId, Nanos, TableKey};
use crate::format::model::EntryRc;
use crate::pipeline::discover::load::{load, Inputs};
use crate::pipeline::discover::Node;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Each table's live files in the server's order (its list after startup).
pub(super) fn live_in_load_order(node: &Node) -> BTreeMap<TableKey, Vec<EntryRc>> {
    node.live
        .iter()
        .map(|(t, files)| {
            let mut v = files.clone();
            v.sort_by_key(|f| node.load_pos.get(f.id).copied());
            (*t, v)
        })
        .collect()
}

/// Checks that a server started on the committed documents (`after`) loads exactly
/// `expected`, and keeps in their order every two files that stay, of one table and
/// `chunk_time`, whose `min_time` is equal: the server orders those by its list alone, and
/// the later one's fields win ([`crate::pipeline::merge::precedence`]).
///
/// `before` is each table's list as the server holds it now; `expected` that list without
/// the files that leave, with the new ones.
pub(super) fn check_load(
    node: &Node,
    after: &Inputs,
    before: &BTreeMap<TableKey, Vec<EntryRc>>,
    expected: &BTreeMap<TableKey, Vec<EntryRc>>,
) -> Result<()> {
    let loaded = load(after).lists;
    let ids = |l: Option<&Vec<EntryRc>>| -> BTreeSet<FileId> {
        l.into_iter().flatten().map(|f| f.id).collect()
    };
    let tables: BTreeSet<&TableKey> = loaded.keys().chain(expected.keys()).collect();
    for t in tables {
        let (got, want) = (ids(loaded.get(t)), ids(expected.get(t)));
        if got != want {
            let missing = want.difference(&got).count();
            let extra = got.difference(&want).count();
            return Err(Error::at(
                &node.dir,
                format!(
                    "the commit would leave the server loading {missing} file(s) fewer and {extra} more than intended for table {}",
                    node.table_label(*t)
                ),
            )
            .hint("nothing was changed; please report this with `kompactor status --json` of the node"));
        }
        let Some(new) = loaded.get(t) else { continue };
        let at: HashMap<FileId, usize> = new.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
        if let Some((chunk, min)) = reordered_tie(before.get(t), &at) {
            return Err(Error::at(
                &node.dir,
                format!(
                    "the commit would change the server's order among files of table {} that begin at the same time ({} in the window of {}), and so which of their versions of a point it returns",
                    node.table_label(*t),
                    min.to_rfc3339(),
                    chunk.to_rfc3339()
                ),
            )
            .hint("nothing was changed; merge that window too (a smaller --min-age), or leave the windows that end up in the same checkpoint or snapshot alone"));
        }
    }
    Ok(())
}

/// The first (chunk_time, min_time) whose files that stay the new list orders otherwise than
/// `before` does.
fn reordered_tie(
    before: Option<&Vec<EntryRc>>,
    at: &HashMap<FileId, usize>,
) -> Option<(Nanos, Nanos)> {
    let mut last: HashMap<(Nanos, Nanos), usize> = HashMap::new();
    for f in before.into_iter().flatten() {
        let Some(&pos) = at.get(&f.id) else { continue };
        let key = (f.chunk_time, f.min_time);
        if let Some(prev) = last.insert(key, pos) {
            if prev > pos {
                return Some(key);
            }
        }
    }
    None
}
