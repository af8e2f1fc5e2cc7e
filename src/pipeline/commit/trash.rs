//! Where the replaced files go: the moves into the run's trash.

use crate::durable::journal::{trash_name, Move, RunDirs};
use crate::format::layout::ParquetPath;
use crate::format::model::DbFiles;
use crate::pipeline::discover::Node;
use std::collections::HashSet;

/// The moves of the replaced files into the trash: a window directory (`.../HH-MM`) that
/// holds nothing but replaced files is moved whole, every other replaced file on its own.
///
/// A deep history replaces millions of files, several per window directory, and each
/// rename is a journaled directory change made while the server is stopped. A directory
/// that will receive an output, or holds anything else (a hidden file left alone, a file
/// the metadata does not list), keeps it and gives up only the replaced files.
///
/// What a directory holds is what discovery listed ([`Node::listed_dirs`]): the replaced
/// files are distinct names in it that the merge has read, so a directory that held as
/// many entries as it has replaced files holds nothing else.
pub(super) fn trash_moves(
    node: &Node,
    replaced: &DbFiles,
    outputs: &[Move],
    dirs: &RunDirs,
) -> Vec<Move> {
    let trash = |rel: &str| format!("{}/{rel}", dirs.rel_trash());
    let receives_output: HashSet<&str> = outputs
        .iter()
        .filter_map(|o| o.to.rsplit_once('/').map(|(dir, _)| dir))
        .collect();
    // Each replaced path once, with its directory, sorted: so that the journal lists the
    // moves the same way every time, and each directory's files come together.
    let paths: Vec<String> = replaced
        .iter()
        .map(|(_, _, f)| f.path.to_string())
        .collect();
    let mut files: Vec<(&str, &str)> = paths
        .iter()
        .map(|p| (p.rsplit_once('/').map_or("", |(dir, _)| dir), p.as_str()))
        .collect();
    files.sort_unstable();
    files.dedup();
    let mut moves = Vec::new();
    let mut single = Vec::new();
    for in_dir in files.chunk_by(|a, b| a.0 == b.0) {
        let dir = in_dir[0].0;
        if is_window_dir(&node.id, dir)
            && !receives_output.contains(dir)
            && node.listed_dirs.entries(dir) == Some(in_dir.len())
        {
            moves.push(Move {
                from: dir.to_string(),
                to: trash(dir),
            });
        } else {
            single.extend(in_dir.iter().map(|&(_, path)| path));
        }
    }
    // Two paths fold to one trash name only if names hold `__` (the server writes none);
    // such a file gets a name of its own, so that no move can fail after the commit point.
    let mut taken = HashSet::new();
    for path in single {
        let mut name = trash_name(path);
        let mut n = 0;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{path}.{n}");
        }
        moves.push(Move {
            from: path.to_string(),
            to: trash(&name),
        });
    }
    moves
}

/// Whether `dir` (relative to the data dir) is one of the node's window directories,
/// `<node>/dbs/<db>/<table>/<date>/<window>`, never a table's or a database's own.
fn is_window_dir(node: &str, dir: &str) -> bool {
    let file = format!("{dir}/f.parquet");
    let Some(p) = ParquetPath::parse(&file) else {
        return false;
    };
    let below_table = dir
        .strip_prefix(p.table_dir)
        .and_then(|r| r.strip_prefix('/'));
    dir.starts_with(&format!("{node}/"))
        && below_table
            .is_some_and(|r| r.split('/').count() == 2 && !r.split('/').any(str::is_empty))
}

#[cfg(test)]
mod tests {
    use super::is_window_dir;

    #[test]
    fn only_a_nodes_window_directories_are_moved_whole() {
        assert!(is_window_dir("node0", "node0/dbs/1/0/2025-01-06/00-10"));
        assert!(is_window_dir(
            "node0",
            "node0/dbs/cpu-1/load-0/2025-01-06/00-10"
        ));
        // A table's, a day's or another node's directory, or no window at all.
        assert!(!is_window_dir("node0", "node0/dbs/1/0"));
        assert!(!is_window_dir("node0", "node0/dbs/1/0/2025-01-06"));
        assert!(!is_window_dir("node0", "node0/dbs/1/0/2025-01-06/00-10/x"));
        assert!(!is_window_dir("node0", "node1/dbs/1/0/2025-01-06/00-10"));
        assert!(!is_window_dir("node0", "node0/wal/1/0/2025-01-06/00-10"));
        assert!(!is_window_dir("node0", "node0/dbs/1/0//00-10"));
    }
}
