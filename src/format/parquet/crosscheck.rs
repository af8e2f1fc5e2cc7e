//! The hand-written footer decoder ([`super::thrift`]) against the `parquet` crate, on every
//! Parquet file of the repo's sample nodes, and against damaged footers: the decoder exists
//! for its speed on millions of footers, so it must answer as the reference does and never
//! panic on bytes it did not expect.

use super::*;
use std::fs;

/// Every Parquet file under the repo's `fixtures/`, sorted.
fn sample_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    // Without them this test would check nothing.
    assert!(
        files.len() >= 100,
        "only {} Parquet files under {}",
        files.len(),
        root.display()
    );
    files
}

/// What the `parquet` crate reads from a footer: the row count and the key-value metadata,
/// in kompactor's shape. `None` when it refuses the footer.
fn reference(footer: &[u8]) -> Option<thrift::FileMetaData> {
    let md = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(footer).ok()?;
    let fmd = md.file_metadata();
    let key_value = fmd
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    (
                        kv.key.as_bytes().to_vec(),
                        kv.value.as_ref().map(|v| v.as_bytes().to_vec()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(thrift::FileMetaData {
        num_rows: fmd.num_rows(),
        key_value,
    })
}

#[test]
fn every_sample_footer_decodes_as_the_parquet_crate_decodes_it() {
    let mut scratch = FooterScratch::default();
    for path in sample_files() {
        let footer = footer_bytes(&path).unwrap();
        let theirs = reference(&footer)
            .unwrap_or_else(|| panic!("{}: the parquet crate refuses it", path.display()));
        let ours = thrift::decode_file_metadata(&footer).unwrap();
        assert_eq!(ours, theirs, "{}", path.display());
        let rows = u64::try_from(theirs.num_rows).unwrap();
        assert_eq!(thrift::decode_num_rows(&footer), Ok(theirs.num_rows));
        let size = fs::metadata(&path).unwrap().len();
        assert_eq!(
            read_row_count(&path, size).unwrap(),
            rows,
            "{}",
            path.display()
        );
        let file = fs::File::open(&path).unwrap();
        assert_eq!(quick_row_count(&file, size, &mut scratch), Some(rows));
        assert_eq!(read_footer(&path).unwrap().num_rows, rows);
    }
}

/// A small deterministic generator (xorshift64*): the same damage on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Damaged copies of a file's bytes: cut short anywhere in or after its footer, bytes of its
/// footer flipped or set to the values that bound Thrift's varints and lengths, a footer
/// length that lies.
fn damaged_copies(bytes: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    let n = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
    let footer_start = bytes.len() - 8 - n as usize;
    let mut out = Vec::new();
    for _ in 0..24 {
        let cut = footer_start + rng.below(bytes.len() - footer_start);
        out.push(bytes[..cut].to_vec());
    }
    for _ in 0..48 {
        let mut b = bytes.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = footer_start + rng.below(n as usize);
            b[at] = match rng.below(4) {
                0 => b[at] ^ (1 << rng.below(8)),
                1 => 0xff,
                2 => 0x00,
                _ => rng.next() as u8,
            };
        }
        out.push(b);
    }
    for lie in [0, 1, n - 1, n + 1, u32::MAX, rng.next() as u32] {
        let mut b = bytes.to_vec();
        let at = b.len() - 8;
        b[at..at + 4].copy_from_slice(&lie.to_le_bytes());
        out.push(b);
    }
    out
}

#[test]
fn damaged_footers_are_errors_that_name_the_file_never_panics() {
    let files = sample_files();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut scratch = FooterScratch::default();
    let (mut refused, mut agreed) = (0, 0);
    // A spread of the sample files: every schema shape, in a few seconds.
    for (i, src) in files.iter().step_by(files.len() / 60).enumerate() {
        let bytes = fs::read(src).unwrap();
        for (j, copy) in damaged_copies(&bytes, &mut rng).into_iter().enumerate() {
            let path = dir.path().join(format!("damaged-{i}-{j}.parquet"));
            fs::write(&path, &copy).unwrap();
            let size = copy.len() as u64;
            let mut named = |e: Error| {
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                refused += 1;
            };
            match read_footer(&path) {
                Ok(footer) => {
                    // Whatever was damaged, where both decoders take the footer they agree.
                    if let Some(theirs) = reference(&footer_bytes(&path).unwrap()) {
                        assert_eq!(footer.num_rows as i64, theirs.num_rows, "{}", src.display());
                        agreed += 1;
                    }
                }
                Err(e) => named(e),
            }
            if let Err(e) = read_row_count(&path, size) {
                named(e)
            }
            if let Err(e) = footer_len(&path) {
                named(e)
            }
            let file = fs::File::open(&path).unwrap();
            let _ = quick_row_count(&file, size, &mut scratch);
            let _ = small_file_row_count(&file, &mut scratch);
        }
    }
    // The damage reached the decoder: most copies are refused, some still read.
    assert!(
        refused > 1000 && agreed > 0,
        "{refused} refused, {agreed} agreed"
    );
}
