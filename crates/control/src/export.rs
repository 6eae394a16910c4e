//! `safegate log export`: one person's records as a JSON file and a CSV file.
//!
//! The export is one stream of frames, so that the service can send both files over
//! one control connection without holding them in memory, and so that a local export
//! goes through exactly the same bytes:
//!
//! ```text
//! frame   = tag (1 byte) length (u32, big-endian) payload (length bytes)
//! tag     = 'J' (JSON file bytes) | 'C' (CSV file bytes) | 'E' (end)
//! ```
//!
//! The JSON frames come first, then the CSV frames, then exactly one `E` frame whose
//! payload is `{"records":N}`. A stream without its `E` frame is incomplete (the
//! service stopped) and nothing is kept. [`FrameReader`] takes the stream apart into
//! two writers; the command line writes them to temporary files (mode 0600, personal
//! data) that are renamed into place only when the stream is complete.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use safegate_store::{Record, StoreError, write_records_csv, write_records_json};

/// Tag of a frame of the JSON file.
pub const TAG_JSON: u8 = b'J';
/// Tag of a frame of the CSV file.
pub const TAG_CSV: u8 = b'C';
/// Tag of the final frame.
pub const TAG_END: u8 = b'E';
/// Largest frame written.
const FRAME_BYTES: usize = 64 * 1024;
/// Largest frame accepted (anything larger is a corrupt stream).
const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// Largest end-frame payload accepted.
const MAX_END_BYTES: usize = 1024;
const HEADER_LEN: usize = 5;

/// Why an export's files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The stream ended without its end frame.
    #[error("the export stopped before its end (SafeGate stopped or the connection broke)")]
    Incomplete,
    /// The end frame does not hold the record count.
    #[error("the export's end marker is unreadable: {0}")]
    UnreadableEnd(serde_json::Error),
    /// `--out` is not a folder.
    #[error("--out {}: not a folder (create it first)", .0.display())]
    NotAFolder(PathBuf),
    /// A file could not be created or written (`what` names it).
    #[error("{what}")]
    File {
        /// What was being done, with the path.
        what: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes the records as JSON and CSV frames and the end frame.
pub fn write_frames(records: &[Record], out: &mut dyn Write) -> Result<(), StoreError> {
    let mut json = FrameWriter::new(&mut *out, TAG_JSON);
    write_records_json(records, &mut json)?;
    json.finish()?;
    let mut csv = FrameWriter::new(&mut *out, TAG_CSV);
    write_records_csv(records, &mut csv)?;
    csv.finish()?;
    let end = serde_json::to_vec(&serde_json::json!({ "records": records.len() }))?;
    write_frame(out, TAG_END, &end)?;
    out.flush()?;
    Ok(())
}

fn write_frame(out: &mut dyn Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut header = [0u8; HEADER_LEN];
    header[0] = tag;
    header[1..].copy_from_slice(&len.to_be_bytes());
    out.write_all(&header)?;
    out.write_all(payload)
}

/// Buffers writes into frames of one tag.
struct FrameWriter<'a> {
    out: &'a mut dyn Write,
    tag: u8,
    buffer: Vec<u8>,
}

impl<'a> FrameWriter<'a> {
    fn new(out: &'a mut dyn Write, tag: u8) -> Self {
        Self {
            out,
            tag,
            buffer: Vec::with_capacity(FRAME_BYTES),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            write_frame(self.out, self.tag, &self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.emit()
    }
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = FRAME_BYTES - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() >= FRAME_BYTES {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.out.flush()
    }
}

/// Takes a frame stream apart: JSON bytes to one writer, CSV bytes to the other.
/// Bytes can arrive in pieces of any size.
pub struct FrameReader<J, C> {
    json: J,
    csv: C,
    header: [u8; HEADER_LEN],
    header_len: usize,
    tag: u8,
    remaining: u32,
    end: Vec<u8>,
    ended: bool,
}

fn corrupt(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl<J: Write, C: Write> FrameReader<J, C> {
    /// A reader writing the JSON file to `json` and the CSV file to `csv`.
    pub fn new(json: J, csv: C) -> Self {
        Self {
            json,
            csv,
            header: [0; HEADER_LEN],
            header_len: 0,
            tag: 0,
            remaining: 0,
            end: Vec::new(),
            ended: false,
        }
    }

    /// The number of records, once the whole stream has arrived; an error when the
    /// stream stopped early.
    pub fn finish(mut self) -> Result<usize, ExportError> {
        if !self.ended {
            return Err(ExportError::Incomplete);
        }
        self.json.flush()?;
        self.csv.flush()?;
        #[derive(serde::Deserialize)]
        struct End {
            records: usize,
        }
        let end: End = serde_json::from_slice(&self.end).map_err(ExportError::UnreadableEnd)?;
        Ok(end.records)
    }

    fn payload(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tag {
            TAG_JSON => self.json.write_all(bytes),
            TAG_CSV => self.csv.write_all(bytes),
            _ => {
                if self.end.len() + bytes.len() > MAX_END_BYTES {
                    return Err(corrupt("export end marker too long"));
                }
                self.end.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

impl<J: Write, C: Write> Write for FrameReader<J, C> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            if self.remaining == 0 {
                if self.ended {
                    return Err(corrupt("bytes after the end of the export"));
                }
                let take = (HEADER_LEN - self.header_len).min(buf.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&buf[..take]);
                self.header_len += take;
                buf = &buf[take..];
                if self.header_len < HEADER_LEN {
                    break;
                }
                self.header_len = 0;
                self.tag = self.header[0];
                let mut len = [0u8; 4];
                len.copy_from_slice(&self.header[1..]);
                self.remaining = u32::from_be_bytes(len);
                if ![TAG_JSON, TAG_CSV, TAG_END].contains(&self.tag) {
                    return Err(corrupt(format!("unknown export frame {:#04x}", self.tag)));
                }
                if self.remaining > MAX_FRAME_BYTES {
                    return Err(corrupt("export frame too large"));
                }
                self.ended = self.tag == TAG_END && self.remaining == 0;
                continue;
            }
            let take = buf.len().min(self.remaining as usize);
            self.payload(&buf[..take])?;
            self.remaining -= take as u32;
            buf = &buf[take..];
            self.ended = self.tag == TAG_END && self.remaining == 0;
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.json.flush()?;
        self.csv.flush()
    }
}

/// The user name as it may appear in a file name: `[A-Za-z0-9._-]` kept, anything
/// else `_`.
pub fn file_safe(user: &str) -> String {
    user.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The two export files being written in a folder: temporary (mode 0600) until
/// [`ExportFiles::keep`] renames them to their final names.
pub struct ExportFiles {
    json: tempfile::NamedTempFile,
    csv: tempfile::NamedTempFile,
    /// Final path of the JSON file.
    pub json_path: PathBuf,
    /// Final path of the CSV file.
    pub csv_path: PathBuf,
}

impl ExportFiles {
    /// Temporary files in `dir` for `safegate-export-<user>-<date>.json` and `.csv`.
    pub fn create(dir: &Path, user: &str, date: &str) -> Result<Self, ExportError> {
        if !dir.is_dir() {
            return Err(ExportError::NotAFolder(dir.to_path_buf()));
        }
        let stem = format!("safegate-export-{}-{date}", file_safe(user));
        let temp = |ext: &str| {
            tempfile::Builder::new()
                .prefix(&format!(".{stem}."))
                .suffix(&format!(".{ext}.part"))
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .tempfile_in(dir)
                .map_err(|source| ExportError::File {
                    what: format!("cannot create a file in {}", dir.display()),
                    source,
                })
        };
        Ok(Self {
            json: temp("json")?,
            csv: temp("csv")?,
            json_path: dir.join(format!("{stem}.json")),
            csv_path: dir.join(format!("{stem}.csv")),
        })
    }

    /// A frame reader writing into the two files.
    pub fn reader(&self) -> FrameReader<&File, &File> {
        FrameReader::new(self.json.as_file(), self.csv.as_file())
    }

    /// Makes both files durable and gives them their final names (replacing an
    /// earlier export of the same day).
    pub fn keep(self) -> Result<(), ExportError> {
        for (file, path) in [(self.json, &self.json_path), (self.csv, &self.csv_path)] {
            let failed = |source| ExportError::File {
                what: format!("cannot write {}", path.display()),
                source,
            };
            file.as_file().sync_all().map_err(failed)?;
            file.persist(path).map_err(|e| failed(e.error))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::tests::record;
    use safegate_store::Outcome;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                record(
                    1_700_000_000_000_000 + i as u64,
                    Some("ada"),
                    "www.bbc.co.uk",
                    Outcome::Allowed,
                )
            })
            .collect()
    }

    #[test]
    fn frames_carry_both_files_in_any_piece_size() {
        // Enough records for several frames of each file.
        let records = records(600);
        let mut stream = Vec::new();
        write_frames(&records, &mut stream).unwrap();
        let mut expected_json = Vec::new();
        write_records_json(&records, &mut expected_json).unwrap();
        let mut expected_csv = Vec::new();
        write_records_csv(&records, &mut expected_csv).unwrap();
        assert!(expected_json.len() > 2 * FRAME_BYTES);
        for piece in [1, 3, 4096, stream.len()] {
            let (mut json, mut csv) = (Vec::new(), Vec::new());
            let mut reader = FrameReader::new(&mut json, &mut csv);
            for chunk in stream.chunks(piece) {
                reader.write_all(chunk).unwrap();
            }
            assert_eq!(reader.finish().unwrap(), 600);
            assert!(json == expected_json, "json differs at piece size {piece}");
            assert!(csv == expected_csv, "csv differs at piece size {piece}");
        }
    }

    #[test]
    fn truncated_or_corrupt_streams_are_refused() {
        let mut stream = Vec::new();
        write_frames(&records(3), &mut stream).unwrap();
        let (mut json, mut csv) = (Vec::new(), Vec::new());
        let mut reader = FrameReader::new(&mut json, &mut csv);
        reader.write_all(&stream[..stream.len() - 3]).unwrap();
        let error = reader.finish().unwrap_err();
        assert!(
            format!("{error}").contains("stopped before its end"),
            "{error}"
        );

        let mut reader = FrameReader::new(Vec::new(), Vec::new());
        assert!(reader.write_all(b"X\0\0\0\x01x").is_err());
        let mut reader = FrameReader::new(Vec::new(), Vec::new());
        assert!(reader.write_all(b"J\xff\xff\xff\xff").is_err());
        let mut reader = FrameReader::new(Vec::new(), Vec::new());
        let mut extra = stream.clone();
        extra.push(b'J');
        assert!(reader.write_all(&extra).is_err());
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_safe("ada.lovelace_1-x"), "ada.lovelace_1-x");
        assert_eq!(file_safe("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(file_safe("Zoë O'Neil"), "Zo__O_Neil");
    }

    #[test]
    fn export_files_are_private_and_appear_only_when_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = ExportFiles::create(dir.path(), "a/b", "2026-07-01").unwrap();
        let mut stream = Vec::new();
        write_frames(&records(2), &mut stream).unwrap();
        let mut reader = files.reader();
        reader.write_all(&stream).unwrap();
        assert_eq!(reader.finish().unwrap(), 2);
        assert!(!files.json_path.exists());
        let (json_path, csv_path) = (files.json_path.clone(), files.csv_path.clone());
        assert_eq!(
            json_path.file_name().unwrap(),
            "safegate-export-a_b-2026-07-01.json"
        );
        files.keep().unwrap();
        for path in [&json_path, &csv_path] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2);
        // Nothing else is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
