//! The two things kompactor needs from a Parquet footer (row count and key-value metadata),
//! decoded straight from its Thrift compact encoding.
//!
//! A footer is `FileMetaData`: field 3 is `num_rows` (i64), field 5 `key_value_metadata`
//! (a list of `KeyValue { 1: key, 2: value }`). Every other field, whatever its type, is
//! skipped. Reading this directly costs microseconds a file, where asking DuckDB costs a
//! query (about 2 ms per window of a dozen files).

/// A key-value metadata entry: key, and value if it has one.
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// What a footer says that kompactor uses.
#[derive(Debug, Default, PartialEq)]
pub struct FileMetaData {
    pub num_rows: i64,
    /// `(key, value)` pairs in file order; a pair without a value has `None`.
    pub key_value: Vec<KeyValue>,
}

/// Thrift compact type ids.
const STOP: u8 = 0;
const TRUE: u8 = 1;
const FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;

/// Nesting deeper than this is refused: the real schema nests a handful of levels, and a
/// damaged footer must not exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Decodes the `FileMetaData` at the start of `buf`.
pub fn decode_file_metadata(buf: &[u8]) -> Result<FileMetaData, String> {
    file_metadata(buf).map_err(|e| e.to_string())
}

fn file_metadata(buf: &[u8]) -> Result<FileMetaData, Malformed> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = FileMetaData::default();
    let mut seen_rows = false;
    let mut last = 0i16;
    while let Some((id, ty)) = r.field_header(&mut last)? {
        match (id, ty) {
            (3, I64) => {
                out.num_rows = r.varint_i64()?;
                seen_rows = true;
            }
            (5, LIST) => out.key_value = r.key_values()?,
            _ => r.skip(ty, 0)?,
        }
    }
    if !seen_rows {
        return Err(Malformed::NoRowCount);
    }
    Ok(out)
}

/// Decodes only `num_rows` from the `FileMetaData` at the start of `buf`: the schema before
/// it is skipped and nothing after it is read, so that checking the row counts of millions
/// of files costs no allocation and no walk through their key-value metadata.
pub fn decode_num_rows(buf: &[u8]) -> Result<i64, String> {
    num_rows(buf, None).map_err(|e| e.to_string())
}

/// [`decode_num_rows`] for one footer after another: the schema is walked only when the
/// footer does not begin as the last one did ([`RowsPrefix`]). `None` when it is damaged.
pub fn decode_num_rows_after(buf: &[u8], known: &mut RowsPrefix) -> Option<i64> {
    num_rows(buf, Some(known)).ok()
}

/// The start of the last footer decoded, up to its row count.
///
/// The files of one table have one schema, so their footers begin with the same bytes up to
/// the row count. Decoding is a function of the bytes read: after the same bytes it is in the
/// same state, so a footer that begins with these is read on from their end. Walking a
/// schema was most of the work of reading a row count.
#[derive(Debug, Default)]
pub struct RowsPrefix {
    bytes: Vec<u8>,
    /// The id of the field before the row count, which the next field header is relative to.
    last: i16,
}

fn num_rows(buf: &[u8], mut known: Option<&mut RowsPrefix>) -> Result<i64, Malformed> {
    let mut r = Reader { buf, pos: 0 };
    let mut last = 0i16;
    if let Some(k) = known.as_deref() {
        if !k.bytes.is_empty() && buf.starts_with(&k.bytes) {
            r.pos = k.bytes.len();
            last = k.last;
        }
    }
    loop {
        let (at, before) = (r.pos, last);
        let Some((id, ty)) = r.field_header(&mut last)? else {
            return Err(Malformed::NoRowCount);
        };
        if (id, ty) == (3, I64) {
            if let Some(k) = known.as_deref_mut() {
                if k.bytes.len() != at || k.last != before || !buf.starts_with(&k.bytes) {
                    k.bytes.clear();
                    k.bytes.extend_from_slice(&buf[..at]);
                    k.last = before;
                }
            }
            return r.varint_i64();
        }
        r.skip(ty, 0)?;
    }
}

/// What is wrong with a footer.
///
/// Small and `Copy`: the reader returns one from every step of skipping a schema, millions
/// of times when `verify` reads every footer, and the message is only made at the end.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Malformed {
    Truncated,
    LongInteger,
    LongString,
    FieldId,
    LongList,
    KeyValueShape,
    KeyValueWithoutKey,
    TooDeep,
    UnknownType(u8),
    NoRowCount,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Truncated => f.write_str("the footer ends in the middle of a value"),
            Malformed::LongInteger => f.write_str("the footer has an integer longer than 64 bits"),
            Malformed::LongString => f.write_str("a string is too long"),
            Malformed::FieldId => f.write_str("a field id is out of range"),
            Malformed::LongList => f.write_str("a list is too long"),
            Malformed::KeyValueShape => f.write_str("key_value_metadata is not a list of structs"),
            Malformed::KeyValueWithoutKey => f.write_str("a key-value entry has no key"),
            Malformed::TooDeep => f.write_str("the footer nests too deeply"),
            Malformed::UnknownType(t) => write!(f, "the footer has an unknown Thrift type {t}"),
            Malformed::NoRowCount => f.write_str("the footer has no row count"),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Malformed> {
        let b = *self.buf.get(self.pos).ok_or(Malformed::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Malformed::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(Malformed::LongInteger);
            }
        }
    }

    fn varint_i64(&mut self) -> Result<i64, Malformed> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn binary(&mut self) -> Result<Vec<u8>, Malformed> {
        let n = usize::try_from(self.varint()?).map_err(|_| Malformed::LongString)?;
        Ok(self.bytes(n)?.to_vec())
    }

    /// The next field's id and type, or `None` at the end of the struct.
    fn field_header(&mut self, last: &mut i16) -> Result<Option<(i16, u8)>, Malformed> {
        let b = self.byte()?;
        let ty = b & 0x0f;
        if ty == STOP {
            return Ok(None);
        }
        let delta = (b >> 4) as i16;
        *last = if delta == 0 {
            i16::try_from(self.varint_i64()?).map_err(|_| Malformed::FieldId)?
        } else {
            last.checked_add(delta).ok_or(Malformed::FieldId)?
        };
        Ok(Some((*last, ty)))
    }

    /// A list or set header: element count and element type.
    fn list_header(&mut self) -> Result<(usize, u8), Malformed> {
        let b = self.byte()?;
        let n = match b >> 4 {
            15 => usize::try_from(self.varint()?).map_err(|_| Malformed::LongList)?,
            n => n as usize,
        };
        Ok((n, b & 0x0f))
    }

    fn key_values(&mut self) -> Result<Vec<KeyValue>, Malformed> {
        let (n, ty) = self.list_header()?;
        if ty != STRUCT {
            return Err(Malformed::KeyValueShape);
        }
        // Each entry takes at least one byte, so a damaged count cannot reserve much.
        let mut out = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            let (mut key, mut value) = (None, None);
            let mut last = 0i16;
            while let Some((id, ty)) = self.field_header(&mut last)? {
                match (id, ty) {
                    (1, BINARY) => key = Some(self.binary()?),
                    (2, BINARY) => value = Some(self.binary()?),
                    _ => self.skip(ty, 1)?,
                }
            }
            out.push((key.ok_or(Malformed::KeyValueWithoutKey)?, value));
        }
        Ok(out)
    }

    /// Skips one element of a list, set or map: as `skip`, except that a boolean, whose
    /// value a struct field carries in its header, takes a byte of its own here.
    fn skip_element(&mut self, ty: u8, depth: usize) -> Result<(), Malformed> {
        if matches!(ty, TRUE | FALSE) {
            self.byte().map(drop)
        } else {
            self.skip(ty, depth)
        }
    }

    /// Skips one value of type `ty`, `depth` levels down.
    fn skip(&mut self, ty: u8, depth: usize) -> Result<(), Malformed> {
        if depth > MAX_DEPTH {
            return Err(Malformed::TooDeep);
        }
        match ty {
            TRUE | FALSE => {}
            BYTE => {
                self.byte()?;
            }
            I16 | I32 | I64 => {
                self.varint()?;
            }
            DOUBLE => {
                self.bytes(8)?;
            }
            BINARY => {
                let n = usize::try_from(self.varint()?).map_err(|_| Malformed::LongString)?;
                self.bytes(n)?;
            }
            LIST | SET => {
                let (n, elem) = self.list_header()?;
                for _ in 0..n {
                    self.skip_element(elem, depth + 1)?;
                }
            }
            MAP => {
                let n = self.varint()?;
                if n > 0 {
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.skip_element(kv >> 4, depth + 1)?;
                        self.skip_element(kv & 0x0f, depth + 1)?;
                    }
                }
            }
            STRUCT => {
                let mut last = 0i16;
                while let Some((_, t)) = self.field_header(&mut last)? {
                    self.skip(t, depth + 1)?;
                }
            }
            t => return Err(Malformed::UnknownType(t)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact-protocol field header for a field `delta` ids after the previous one.
    fn field(delta: u8, ty: u8) -> u8 {
        (delta << 4) | ty
    }

    fn zigzag(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn string(s: &str) -> Vec<u8> {
        let mut out = vec![s.len() as u8];
        out.extend_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn reads_rows_and_key_values_and_skips_everything_else() {
        let mut buf = vec![field(1, I32)];
        buf.extend(zigzag(2)); // 1: version
        buf.push(field(1, LIST)); // 2: schema, one struct with a string, a bool and a list
        buf.push(0x1c);
        buf.push(field(4, BINARY));
        buf.extend(string("time"));
        buf.push(field(1, TRUE));
        buf.push(field(1, LIST));
        buf.push(0x21); // two booleans
        buf.extend([1, 2]);
        buf.push(field(1, MAP));
        buf.push(1);
        buf.push((BINARY << 4) | DOUBLE);
        buf.extend(string("k"));
        buf.extend([0u8; 8]);
        buf.push(field(1, MAP)); // a map of booleans: a byte each
        buf.push(2);
        buf.push((I32 << 4) | TRUE);
        buf.extend([zigzag(1)[0], 1, zigzag(2)[0], 2]);
        buf.push(STOP);
        buf.push(field(1, I64));
        buf.extend(zigzag(104_892)); // 3: num_rows
        let rows_end = buf.len();
        buf.push(field(1, LIST)); // 4: row_groups, empty
        buf.push(STRUCT);
        buf.push(field(1, LIST)); // 5: key_value_metadata
        buf.push(0x2c);
        buf.push(field(1, BINARY));
        buf.extend(string("ARROW:schema"));
        buf.push(field(1, BINARY));
        buf.extend(string("/////w=="));
        buf.push(STOP);
        buf.push(field(1, BINARY));
        buf.extend(string("no value"));
        buf.push(STOP);
        buf.push(BINARY); // a field header without a delta: its id (100) follows
        buf.extend(zigzag(100));
        buf.extend(string("created by a test"));
        buf.push(STOP);

        let md = decode_file_metadata(&buf).unwrap();
        assert_eq!(md.num_rows, 104_892);
        assert_eq!(decode_num_rows(&buf), Ok(104_892));
        assert_eq!(
            decode_num_rows(&buf[..rows_end]),
            Ok(104_892),
            "nothing after the row count is read"
        );
        assert_eq!(
            md.key_value,
            vec![
                (b"ARROW:schema".to_vec(), Some(b"/////w==".to_vec())),
                (b"no value".to_vec(), None)
            ]
        );
    }

    #[test]
    fn a_footer_that_begins_as_the_last_one_is_read_on_from_there() {
        // 1: version, 2: a schema of one struct with a string, 3: num_rows.
        let footer = |name: &str, rows: i64| {
            let mut buf = vec![field(1, I32)];
            buf.extend(zigzag(2));
            buf.extend([field(1, LIST), 0x1c, field(4, BINARY)]);
            buf.extend(string(name));
            buf.push(STOP);
            buf.push(field(1, I64));
            buf.extend(zigzag(rows));
            buf.push(STOP);
            buf
        };
        let mut known = RowsPrefix::default();
        assert_eq!(
            decode_num_rows_after(&footer("time", 5), &mut known),
            Some(5)
        );
        let kept = known.bytes.clone();
        assert_eq!(known.last, 2);
        assert_eq!(
            decode_num_rows_after(&footer("time", 300), &mut known),
            Some(300)
        );
        assert_eq!(known.bytes, kept, "the same start is kept");
        // Another schema: walked, and kept in its place.
        assert_eq!(
            decode_num_rows_after(&footer("times", 7), &mut known),
            Some(7)
        );
        assert_ne!(known.bytes, kept);
        assert_eq!(
            decode_num_rows_after(&footer("time", 9), &mut known),
            Some(9)
        );
        // A footer that ends within the kept start, or is damaged after it.
        assert_eq!(decode_num_rows_after(&kept, &mut known), None);
        let mut cut = footer("time", 9);
        cut.truncate(kept.len() + 1);
        assert_eq!(decode_num_rows_after(&cut, &mut known), None);
        assert_eq!(
            decode_num_rows_after(&footer("time", 11), &mut known),
            Some(11)
        );
    }

    #[test]
    fn damaged_footers_are_errors_not_panics() {
        let mut ok = vec![field(3, I64)];
        ok.extend(zigzag(7));
        ok.push(STOP);
        assert_eq!(decode_file_metadata(&ok).unwrap().num_rows, 7);
        assert_eq!(decode_num_rows(&ok), Ok(7));
        for cut in 0..ok.len() {
            assert!(decode_file_metadata(&ok[..cut]).is_err(), "cut at {cut}");
            if cut < ok.len() - 1 {
                assert!(decode_num_rows(&ok[..cut]).is_err(), "cut at {cut}");
            }
        }
        let no_rows = [field(1, I32), zigzag(2)[0], STOP];
        assert!(decode_num_rows(&no_rows).is_err());
        let nested: Vec<u8> = std::iter::repeat_n(field(1, STRUCT), 1000).collect();
        assert!(decode_file_metadata(&nested).is_err());
        assert!(decode_file_metadata(&[field(1, 13)]).is_err());
        assert!(decode_file_metadata(&[field(1, BINARY), 0xff, 0xff, 0xff, 0x7f]).is_err());
    }
}
