//! An append-only file as the source of a job: what Redis would load at start-up, replayed into the target.
//!
//! The path names one of:
//! - a single AOF (Redis before 7.0, or any file of commands), which may start with an RDB preamble
//!   (`aof-use-rdb-preamble yes`): the RDB part is restored like an RDB file, the commands after it follow;
//! - a multi-part AOF (Redis 7.0 and later): its manifest (`appendonly.aof.manifest`), or the directory holding
//!   it (`appenddirname`, `appendonlydir` by default). The base file (an RDB or an AOF) comes first, then the
//!   incremental files in the order of their sequence numbers; history files (`type h`) are not part of the
//!   dataset and are skipped, as Redis does.
//!
//! Lines starting with `#` between commands are annotations (`#TS:<unix seconds>` with
//! `aof-timestamp-enabled yes`). With a recovery timestamp the replay stops at the first `#TS:` annotation later
//! than it, as RedisShake's `aof_reader.timestamp` and `redis-check-aof --truncate-to-timestamp` do, so a
//! dataset can be rebuilt as it was at that second.
//!
//! A file that ends in the middle of a command (a crash while Redis appended) is read up to its last complete
//! command, and a `MULTI` without its `EXEC` at the end is dropped, as Redis loads such a file with
//! `aof-load-truncated yes`; both are logged with the byte where the file ends.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// What an AOF source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AofOptions {
    /// A single AOF, a manifest, or the directory holding a manifest.
    pub path: PathBuf,
    /// Stop at the first `#TS:` annotation later than this (Unix seconds); `None` replays everything.
    pub timestamp: Option<i64>,
}

impl AofOptions {
    /// Replays everything at `path`.
    pub fn new(path: impl Into<PathBuf>) -> AofOptions {
        AofOptions {
            path: path.into(),
            timestamp: None,
        }
    }

    /// Stops at the first `#TS:` annotation later than `unix_seconds`.
    pub fn until(mut self, unix_seconds: i64) -> AofOptions {
        self.timestamp = Some(unix_seconds);
        self
    }
}

/// The files to replay, in order.
pub(crate) fn files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Aof(format!("cannot open {}: {e}", path.display())))?;
    if meta.is_dir() {
        let manifests: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::Aof(format!("cannot list {}: {e}", path.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "manifest"))
            .collect();
        return match manifests.as_slice() {
            [one] => manifest_files(one),
            [] => Err(Error::Aof(format!(
                "{} holds no AOF manifest (*.manifest)",
                path.display()
            ))),
            _ => Err(Error::Aof(format!(
                "{} holds several AOF manifests; name one",
                path.display()
            ))),
        };
    }
    let head = read_head(path)?;
    if path.extension().is_some_and(|x| x == "manifest") || head.starts_with(b"file ") {
        manifest_files(path)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

fn read_head(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let mut head = vec![0u8; 5];
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::Aof(format!("cannot open {}: {e}", path.display())))?;
    let n = f
        .read(&mut head)
        .map_err(|e| Error::Aof(format!("cannot read {}: {e}", path.display())))?;
    head.truncate(n);
    Ok(head)
}

/// Whether the file starts with an RDB (`REDIS` magic): a base file or a preamble.
pub(crate) fn starts_with_rdb(path: &Path) -> Result<bool, Error> {
    Ok(read_head(path)?.starts_with(b"REDIS"))
}

/// The base and incremental files a manifest lists, relative to its directory.
fn manifest_files(manifest: &Path) -> Result<Vec<PathBuf>, Error> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| Error::Aof(format!("cannot read {}: {e}", manifest.display())))?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let mut base = None;
    let mut incr: Vec<(u64, PathBuf)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| {
            Error::Aof(format!(
                "manifest {} line {}: {what}: {line:?}",
                manifest.display(),
                n + 1
            ))
        };
        let words = split_words(line).ok_or_else(|| bad("unbalanced quotes"))?;
        if words.len() % 2 != 0 {
            return Err(bad("expected key value pairs"));
        }
        let get = |k: &str| words.chunks(2).find(|p| p[0] == k).map(|p| p[1].as_str());
        let name = get("file").ok_or_else(|| bad("no file name"))?;
        if name.contains('/') {
            return Err(bad("a file name with a path"));
        }
        let seq: u64 = get("seq")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no sequence number"))?;
        match get("type") {
            Some("b") => {
                if base.replace(dir.join(name)).is_some() {
                    return Err(bad("a second base file"));
                }
            }
            Some("i") => incr.push((seq, dir.join(name))),
            Some("h") => {}
            _ => return Err(bad("unknown file type (b, h or i)")),
        }
    }
    incr.sort_by_key(|(seq, _)| *seq);
    let files: Vec<PathBuf> = base
        .into_iter()
        .chain(incr.into_iter().map(|(_, p)| p))
        .collect();
    if files.is_empty() {
        return Err(Error::Aof(format!(
            "manifest {} lists no base or incremental file",
            manifest.display()
        )));
    }
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(Error::Aof(format!(
            "manifest {} lists {}, which is not there",
            manifest.display(),
            missing.display()
        )));
    }
    Ok(files)
}

/// Splits a manifest line into words: spaces separate them, a word in double quotes may hold spaces and the
/// escapes `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH` (how Redis quotes an unusual file name). `None` when a
/// quote is not closed.
fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Some(words);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            let mut bytes = Vec::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        'n' => bytes.push(b'\n'),
                        'r' => bytes.push(b'\r'),
                        't' => bytes.push(b'\t'),
                        'x' => {
                            let hex: String = [chars.next()?, chars.next()?].iter().collect();
                            bytes.push(u8::from_str_radix(&hex, 16).ok()?);
                        }
                        c => {
                            let mut b = [0u8; 4];
                            bytes.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                        }
                    },
                    c => {
                        let mut b = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                    }
                }
            }
            word = String::from_utf8_lossy(&bytes).into_owned();
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
}

/// A `#TS:<seconds>` annotation's time; `None` for any other annotation.
pub(crate) fn annotation_time(line: &[u8]) -> Option<i64> {
    let rest = line.strip_prefix(b"#TS:")?;
    std::str::from_utf8(rest).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_lists_the_base_then_the_incremental_files_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("appendonly.aof.manifest");
        std::fs::write(
            &m,
            "file appendonly.aof.3.incr.aof seq 3 type i\n\
             file appendonly.aof.1.base.rdb seq 1 type b\n\
             file appendonly.aof.1.incr.aof seq 1 type h\n\
             file \"append only.aof.2.incr.aof\" seq 2 type i\n",
        )
        .unwrap();
        for f in [
            "appendonly.aof.1.base.rdb",
            "append only.aof.2.incr.aof",
            "appendonly.aof.3.incr.aof",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let names: Vec<String> = files(&m)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "appendonly.aof.1.base.rdb",
                "append only.aof.2.incr.aof",
                "appendonly.aof.3.incr.aof"
            ]
        );
        // The directory finds its manifest.
        assert_eq!(files(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn a_bad_manifest_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("x.manifest");
        std::fs::write(&m, "file a.aof seq 1 type i\nfile b.aof seq 2 type z\n").unwrap();
        let e = files(&m).unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("unknown file type"),
            "{e}"
        );
        std::fs::write(&m, "file \"a.aof seq 1 type i\n").unwrap();
        assert!(files(&m).unwrap_err().to_string().contains("quotes"));
        std::fs::write(&m, "file gone.aof seq 1 type i\n").unwrap();
        let e = files(&m).unwrap_err().to_string();
        assert!(e.contains("gone.aof") && e.contains("not there"), "{e}");
    }

    #[test]
    fn a_plain_file_is_a_single_aof() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("appendonly.aof");
        std::fs::write(&f, "*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(files(&f).unwrap(), vec![f.clone()]);
        assert!(!starts_with_rdb(&f).unwrap());
        assert!(files(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn timestamp_annotations_are_read() {
        assert_eq!(annotation_time(b"#TS:1628217470"), Some(1628217470));
        assert_eq!(annotation_time(b"#other"), None);
    }
}
