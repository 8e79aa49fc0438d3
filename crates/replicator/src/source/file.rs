//! An RDB file as the source of a job: its bytes read in chunks, as the full sync reads the RDB that follows
//! `+FULLRESYNC` (see [`crate::fullsync::RdbInput`]). Nothing of the file is held beyond one chunk.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use crate::error::Error;
use crate::fullsync::RdbInput;

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;

/// An open RDB file.
#[derive(Debug)]
pub(crate) struct RdbFile {
    file: tokio::fs::File,
    path: PathBuf,
    read: u64,
    /// The file's length when opened (for the status and errors).
    len: u64,
}

impl RdbFile {
    /// Opens the file; an error names it.
    pub(crate) async fn open(path: &Path) -> Result<RdbFile, Error> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::Rdb(format!("cannot open {}: {e}", path.display())))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::Rdb(format!("cannot read {}: {e}", path.display())))?
            .len();
        Ok(RdbFile {
            file,
            path: path.to_path_buf(),
            read: 0,
            len,
        })
    }

    /// The file's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

impl RdbInput for RdbFile {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let mut buf = BytesMut::zeroed(CHUNK);
        let n = self.file.read(&mut buf).await.map_err(|e| {
            Error::Rdb(format!(
                "reading {} at byte {}: {e}",
                self.path.display(),
                self.read
            ))
        })?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        self.read += n as u64;
        Ok(Some(buf.freeze()))
    }

    fn bytes_read(&self) -> u64 {
        self.read
    }

    fn describe(&self) -> String {
        format!("RDB file {}", self.path.display())
    }
}
