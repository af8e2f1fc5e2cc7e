//! What kompactor needs from a Parquet footer: row count and the column roles.
//!
//! The server stores the Arrow schema in the `ARROW:schema` key-value entry. Its field
//! metadata says which columns are tags, fields and time; its schema metadata holds the series
//! key. kompactor reads it from inputs and writes the same entry into every file it creates.

use crate::error::{Error, Result};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use base64::Engine;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod thrift;

#[cfg(test)]
mod crosscheck;

const COLUMN_TYPE_KEY: &str = "iox::column::type";
const SERIES_KEY_V1: &str = "iox::series::key";
const SERIES_KEY_V2: &str = "iox::series::key::v2";

/// The role and type of one column, as the server's table schema defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Tag,
    Float,
    Integer,
    UInteger,
    String,
    Boolean,
    Time,
}

impl ColumnType {
    /// The column's role and type, for people: `tag`, `time`, `float field`, ...
    pub fn describe(self) -> &'static str {
        match self {
            ColumnType::Tag => "tag",
            ColumnType::Time => "time",
            ColumnType::Float => "float field",
            ColumnType::Integer => "integer field",
            ColumnType::UInteger => "unsigned field",
            ColumnType::String => "string field",
            ColumnType::Boolean => "boolean field",
        }
    }

    fn from_iox(s: &str) -> Option<ColumnType> {
        Some(match s {
            "iox::column_type::tag" => ColumnType::Tag,
            "iox::column_type::field::float" => ColumnType::Float,
            "iox::column_type::field::integer" => ColumnType::Integer,
            "iox::column_type::field::uinteger" => ColumnType::UInteger,
            "iox::column_type::field::string" => ColumnType::String,
            "iox::column_type::field::boolean" => ColumnType::Boolean,
            "iox::column_type::timestamp" => ColumnType::Time,
            _ => return None,
        })
    }

    fn iox(self) -> &'static str {
        match self {
            ColumnType::Tag => "iox::column_type::tag",
            ColumnType::Float => "iox::column_type::field::float",
            ColumnType::Integer => "iox::column_type::field::integer",
            ColumnType::UInteger => "iox::column_type::field::uinteger",
            ColumnType::String => "iox::column_type::field::string",
            ColumnType::Boolean => "iox::column_type::field::boolean",
            ColumnType::Time => "iox::column_type::timestamp",
        }
    }

    /// The DuckDB type a column of this kind is read and written as.
    pub fn duckdb_type(self) -> &'static str {
        match self {
            ColumnType::Tag | ColumnType::String => "VARCHAR",
            ColumnType::Float => "DOUBLE",
            ColumnType::Integer => "BIGINT",
            ColumnType::UInteger => "UBIGINT",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Time => "TIMESTAMP_NS",
        }
    }

    fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Tag => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
            ColumnType::String => DataType::Utf8,
            ColumnType::Float => DataType::Float64,
            ColumnType::Integer => DataType::Int64,
            ColumnType::UInteger => DataType::UInt64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Time => DataType::Timestamp(TimeUnit::Nanosecond, None),
        }
    }

    /// Whether an Arrow type is one the server writes for this kind of column.
    fn accepts(self, dt: &DataType) -> bool {
        match (self, dt) {
            (ColumnType::Tag, DataType::Dictionary(_, v)) => matches!(**v, DataType::Utf8),
            (ColumnType::Tag | ColumnType::String, DataType::Utf8) => true,
            (ColumnType::Float, DataType::Float64) => true,
            (ColumnType::Integer, DataType::Int64) => true,
            (ColumnType::UInteger, DataType::UInt64) => true,
            (ColumnType::Boolean, DataType::Boolean) => true,
            (ColumnType::Time, DataType::Timestamp(TimeUnit::Nanosecond, _)) => true,
            _ => false,
        }
    }
}

/// A column of a table: its name and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// What one Parquet file's footer says.
#[derive(Clone, Debug)]
pub struct Footer {
    pub path: PathBuf,
    pub num_rows: u64,
    pub columns: Vec<Column>,
    /// The series key from the schema metadata; `None` when the file has none (3.0.x).
    pub series_key: Option<Vec<String>>,
}

/// Reads the footers of `paths`, in order.
pub fn read_footers(paths: &[PathBuf]) -> Result<Vec<Footer>> {
    paths.iter().map(|p| read_footer(p)).collect()
}

/// Reads one file's footer: its row count, and its columns from `ARROW:schema`.
pub fn read_footer(path: &Path) -> Result<Footer> {
    let md = thrift::decode_file_metadata(&footer_bytes(path)?).map_err(|e| damaged(path, &e))?;
    let num_rows = u64::try_from(md.num_rows)
        .map_err(|_| damaged(path, &format!("a row count of {}", md.num_rows)))?;
    let raw = md
        .key_value
        .iter()
        .find(|(k, _)| k == b"ARROW:schema")
        .and_then(|(_, v)| v.as_ref())
        .ok_or_else(|| {
            Error::at(path, "the file has no ARROW:schema entry, so its tag columns cannot be told from string fields")
                .hint("only files written by InfluxDB 3 or kompactor can be merged")
        })?;
    let (columns, series_key) = decode_arrow_schema(raw).map_err(|e| Error::at(path, e))?;
    Ok(Footer {
        path: path.to_path_buf(),
        num_rows,
        columns,
        series_key,
    })
}

/// Reads one file's row count from its footer, without decoding its schema. `size` is the
/// file's size as listed: one read of its tail then usually holds the whole footer, where
/// finding the footer without it takes a stat and two reads.
pub fn read_row_count(path: &Path, size: u64) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    if let Some(rows) = quick_row_count(&file, size, &mut FooterScratch::default()) {
        return Ok(rows);
    }
    // The slow way, which says what is wrong if anything is.
    let rows = thrift::decode_num_rows(&footer_of(&file, path)?).map_err(|e| damaged(path, &e))?;
    u64::try_from(rows).map_err(|_| damaged(path, &format!("a row count of {rows}")))
}

/// How much of a file's end [`quick_row_count`] reads: a footer of a file the server
/// writes is a few kilobytes.
const TAIL_LEN: u64 = 64 * 1024;

/// What reading one footer after another keeps from one to the next: the buffer it reads
/// into, and the start of the last footer ([`thrift::RowsPrefix`]).
#[derive(Debug, Default)]
pub struct FooterScratch {
    buf: Vec<u8>,
    known: thrift::RowsPrefix,
}

/// The row count of an open Parquet file of `size` bytes, from one read of its last 64 KiB;
/// `None` when that read fails or does not end in a whole footer with a row count
/// ([`read_row_count`] then says what is wrong).
///
/// This is what `verify` does for each of millions of files: no allocation, and nothing of
/// the footer decoded past the row count.
pub fn quick_row_count(
    file: &std::fs::File,
    size: u64,
    scratch: &mut FooterScratch,
) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let want = size.min(TAIL_LEN) as usize;
    scratch.buf.resize(want, 0);
    file.read_exact_at(&mut scratch.buf, size - want as u64)
        .ok()?;
    tail_row_count(&scratch.buf, &mut scratch.known)
}

/// What [`small_file_row_count`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum SmallFile {
    /// The file is shorter than 64 KiB and ends in a footer: its size and row count.
    Read { size: u64, rows: u64 },
    /// The file is 64 KiB or longer, or could not be read, or what was read does not end in
    /// a footer: its size is not known, and [`quick_row_count`] (after a stat) or
    /// [`read_row_count`] says more.
    Other,
}

/// The size and row count of an open Parquet file shorter than 64 KiB, from one read of up
/// to 64 KiB at its start.
///
/// A read of a regular file stops short only at its end, so a short read gives the size
/// without a stat: on a deep history of tiny files that is a system call fewer for each of
/// millions. Only a read that ends in a whole footer is taken as the whole file.
pub fn small_file_row_count(file: &std::fs::File, scratch: &mut FooterScratch) -> SmallFile {
    use std::os::unix::fs::FileExt;
    let buf = &mut scratch.buf;
    buf.resize(TAIL_LEN as usize, 0);
    let n = loop {
        match file.read_at(buf, 0) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return SmallFile::Other,
            Ok(n) => break n,
        }
    };
    match tail_row_count(&buf[..n], &mut scratch.known) {
        Some(rows) if n < buf.len() => SmallFile::Read {
            size: n as u64,
            rows,
        },
        _ => SmallFile::Other,
    }
}

/// The row count in the footer at the end of `tail`, the last bytes of a file; `None` when
/// they do not end in a whole footer with a row count.
fn tail_row_count(tail: &[u8], known: &mut thrift::RowsPrefix) -> Option<u64> {
    if tail.len() < 12 {
        return None;
    }
    let (meta, end) = tail.split_at(tail.len() - 8);
    if &end[4..] != b"PAR1" {
        return None;
    }
    let n = u32::from_le_bytes(end[..4].try_into().expect("4 bytes")) as usize;
    let start = meta.len().checked_sub(n)?;
    u64::try_from(thrift::decode_num_rows_after(&meta[start..], known)?).ok()
}

/// Whether a file of `size` bytes is one [`small_file_row_count`] reads whole.
pub fn is_small_file(size: u64) -> bool {
    size < TAIL_LEN
}

/// The length of a file's footer (metadata, its length field and the magic), from its last
/// 8 bytes alone: one read, where decoding the footer costs far more.
pub fn footer_len(path: &Path) -> Result<u64> {
    let (_, _, n) = open_tail(path)?;
    Ok(n + 8)
}

/// Opens a Parquet file and checks its tail: the file, its length, and its metadata's length.
fn open_tail(path: &Path) -> Result<(std::fs::File, u64, u64)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let (len, n) = check_tail(&file, path)?;
    Ok((file, len, n))
}

/// Checks the tail of the open Parquet file at `path`: its length, and its metadata's length.
fn check_tail(file: &std::fs::File, path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    let damaged = |what: &str| damaged(path, what);
    let len = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    let mut tail = [0u8; 8];
    if len < 12 {
        return Err(damaged("the file is too short to be Parquet"));
    }
    file.read_exact_at(&mut tail, len - 8)
        .map_err(|e| Error::io(path, "read", e))?;
    match &tail[4..] {
        b"PAR1" => {}
        b"PARE" => return Err(damaged("the footer is encrypted")),
        _ => {
            return Err(damaged(
                "the file does not end with the Parquet magic bytes",
            ))
        }
    }
    let n = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    if n + 12 > len {
        return Err(damaged(
            "the footer length points before the start of the file",
        ));
    }
    Ok((len, n))
}

/// The Thrift-encoded `FileMetaData` at the end of a Parquet file:
/// `<metadata> <metadata length: u32 LE> PAR1`.
fn footer_bytes(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    footer_of(&file, path)
}

/// [`footer_bytes`] of a file already open.
fn footer_of(file: &std::fs::File, path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let (len, n) = check_tail(file, path)?;
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, len - 8 - n)
        .map_err(|e| Error::io(path, "read", e))?;
    Ok(buf)
}

/// The error for a file whose footer cannot be read.
fn damaged(path: &Path, what: &str) -> Error {
    Error::at(path, format!("unreadable Parquet footer: {what}"))
        .hint("the file is damaged or not Parquet; its group is left alone")
}

/// A SQL list of file paths, for `read_parquet`.
pub fn sql_list(paths: &[PathBuf]) -> String {
    let items: Vec<String> = paths
        .iter()
        .map(|p| sql_str(&p.to_string_lossy()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A SQL string literal.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier.
pub fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Decodes the base64 IPC schema message of an `ARROW:schema` entry.
fn decode_arrow_schema(
    raw: &[u8],
) -> std::result::Result<(Vec<Column>, Option<Vec<String>>), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|e| format!("ARROW:schema is not base64: {e}"))?;
    let schema = arrow_ipc::convert::try_schema_from_ipc_buffer(&bytes)
        .map_err(|e| format!("ARROW:schema is not an Arrow schema: {e}"))?;
    let mut columns = Vec::new();
    for f in schema.fields() {
        let role = f
            .metadata()
            .get(COLUMN_TYPE_KEY)
            .and_then(|s| ColumnType::from_iox(s));
        let ty = match role {
            Some(t) => t,
            None if f.name() == "time" => ColumnType::Time,
            None => {
                return Err(format!(
                    "column `{}` has no {COLUMN_TYPE_KEY} metadata, so its role is unknown",
                    f.name()
                ))
            }
        };
        if !ty.accepts(f.data_type()) {
            return Err(format!(
                "column `{}` is {:?}, which is not a {:?} column",
                f.name(),
                f.data_type(),
                ty
            ));
        }
        columns.push(Column {
            name: f.name().clone(),
            ty,
        });
    }
    let md = schema.metadata();
    let series_key = if let Some(v2) = md.get(SERIES_KEY_V2) {
        Some(decode_series_key_v2(v2)?)
    } else {
        md.get(SERIES_KEY_V1).map(|v1| {
            v1.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
    };
    Ok((columns, series_key))
}

/// `iox::series::key::v2`: base64 of repeated `[u32 LE length][utf8 name]`.
fn decode_series_key_v2(s: &str) -> std::result::Result<Vec<String>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("{SERIES_KEY_V2} is not base64: {e}"))?;
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(format!("{SERIES_KEY_V2} is truncated"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!("{SERIES_KEY_V2} is truncated"));
        }
        let name = std::str::from_utf8(&tail[..len])
            .map_err(|_| format!("{SERIES_KEY_V2} is not UTF-8"))?;
        out.push(name.to_string());
        rest = &tail[len..];
    }
    Ok(out)
}

fn encode_series_key_v2(key: &[String]) -> String {
    let mut bytes = Vec::new();
    for k in key {
        bytes.extend_from_slice(&(k.len() as u32).to_le_bytes());
        bytes.extend_from_slice(k.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `ARROW:schema` value for a file with these columns (in this order) and series key.
pub fn encode_arrow_schema(columns: &[Column], series_key: &[String]) -> String {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let md = HashMap::from([(COLUMN_TYPE_KEY.to_string(), c.ty.iox().to_string())]);
            Field::new(&c.name, c.ty.arrow_type(), c.ty != ColumnType::Time).with_metadata(md)
        })
        .collect();
    let md = HashMap::from([(SERIES_KEY_V2.to_string(), encode_series_key_v2(series_key))]);
    let schema = Schema::new_with_metadata(fields, md);
    let gen = arrow_ipc::writer::IpcDataGenerator::default();
    let mut tracker = arrow_ipc::writer::DictionaryTracker::new(false);
    let encoded = gen.schema_to_bytes_with_dictionary_tracker(
        &schema,
        &mut tracker,
        &arrow_ipc::writer::IpcWriteOptions::default(),
    );
    // The same framing arrow-rs uses for this entry: continuation marker, length, message.
    let msg = encoded.ipc_message;
    let mut framed = Vec::with_capacity(msg.len() + 8);
    framed.extend_from_slice(&[0xFF; 4]);
    framed.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    framed.extend_from_slice(&msg);
    base64::engine::general_purpose::STANDARD.encode(framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_key_v2_round_trips() {
        let key = vec![
            "cpu".to_string(),
            "host".to_string(),
            "region".to_string(),
            "dc".to_string(),
        ];
        let enc = encode_series_key_v2(&key);
        assert_eq!(enc, "AwAAAGNwdQQAAABob3N0BgAAAHJlZ2lvbgIAAABkYw==");
        assert_eq!(decode_series_key_v2(&enc).unwrap(), key);
    }

    #[test]
    fn arrow_schema_round_trips() {
        let cols = vec![
            Column {
                name: "host".into(),
                ty: ColumnType::Tag,
            },
            Column {
                name: "used".into(),
                ty: ColumnType::UInteger,
            },
            Column {
                name: "time".into(),
                ty: ColumnType::Time,
            },
        ];
        let enc = encode_arrow_schema(&cols, &["host".to_string()]);
        let (back, key) = decode_arrow_schema(enc.as_bytes()).unwrap();
        assert_eq!(back, cols);
        assert_eq!(key, Some(vec!["host".to_string()]));
    }

    #[test]
    fn row_count_is_read_with_the_listed_size_or_without_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "fixtures/influxdb3-3.10/small/node0/dbs/2/0/2026-11-18/03-50/0000000104.parquet",
        );
        let size = std::fs::metadata(&path).unwrap().len();
        let rows = read_footer(&path).unwrap().num_rows;
        let file = std::fs::File::open(&path).unwrap();
        let mut buf = FooterScratch::default();
        assert_eq!(quick_row_count(&file, size, &mut buf), Some(rows));
        assert_eq!(read_row_count(&path, size).unwrap(), rows);
        // A wrong size falls back to the file's real one.
        assert_eq!(quick_row_count(&file, size - 1, &mut buf), None);
        assert_eq!(quick_row_count(&file, size + 1, &mut buf), None);
        assert_eq!(read_row_count(&path, size - 1).unwrap(), rows);
        assert_eq!(read_row_count(&path, 3).unwrap(), rows);
    }

    #[test]
    fn a_small_file_is_sized_and_counted_by_one_read_from_its_start() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "fixtures/influxdb3-3.10/small/node0/dbs/2/0/2026-11-18/03-50/0000000104.parquet",
        );
        let bytes = std::fs::read(&path).unwrap();
        let rows = read_footer(&path).unwrap().num_rows;
        let tmp = tempfile::tempdir().unwrap();
        let read = |name: &str, content: &[u8]| {
            let p = tmp.path().join(name);
            std::fs::write(&p, content).unwrap();
            small_file_row_count(
                &std::fs::File::open(&p).unwrap(),
                &mut FooterScratch::default(),
            )
        };
        assert_eq!(
            read("small.parquet", &bytes),
            SmallFile::Read {
                size: bytes.len() as u64,
                rows
            }
        );
        assert_eq!(
            read("cut.parquet", &bytes[..bytes.len() - 1]),
            SmallFile::Other
        );
        assert_eq!(read("empty.parquet", b""), SmallFile::Other);
        // 64 KiB or more: the read is not the whole file, whatever it ends in.
        let mut big = vec![0u8; TAIL_LEN as usize - bytes.len()];
        big.extend_from_slice(&bytes);
        assert_eq!(big.len() as u64, TAIL_LEN);
        assert_eq!(read("big.parquet", &big), SmallFile::Other);
        big.insert(0, 0);
        let file = tmp.path().join("big.parquet");
        std::fs::write(&file, &big).unwrap();
        let file = std::fs::File::open(&file).unwrap();
        assert_eq!(
            small_file_row_count(&file, &mut FooterScratch::default()),
            SmallFile::Other
        );
        assert!(!is_small_file(big.len() as u64) && is_small_file(bytes.len() as u64));
        assert_eq!(
            quick_row_count(&file, big.len() as u64, &mut FooterScratch::default()),
            Some(rows),
            "after a stat, its tail is read"
        );
    }
}
