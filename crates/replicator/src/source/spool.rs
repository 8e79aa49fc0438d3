//! The spool between the source link and the job: a FIFO of what the source sent, in memory up to a bound and
//! then in a local file up to another bound.
//!
//! The source must be read at network speed: a Redis master buffers what a replica has not read in the
//! replica's output buffer and drops the replica at `client-output-buffer-limit replica` (256 MB hard, 64 MB for
//! 60 s by default), which during a full copy into a slower target restarts the copy forever. The link task
//! pushes every piece here at once; the job pops them as fast as the target applies. Only when both bounds are
//! reached does the link stop reading (and the source's buffer grows).
//!
//! Order is kept with one rule: a piece goes to memory only while the file holds nothing unread, so everything
//! in memory is older than everything in the file. The file is unlinked right after it is created (nothing is
//! left behind, whatever happens to the process) and truncated each time it has been read to its end.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::error::Error;

/// Where and how much the spool may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolOptions {
    /// Bytes held in memory before the file is used.
    pub memory_bytes: usize,
    /// Most bytes the file may hold (0: no file, the memory bound is the only one).
    pub file_bytes: u64,
    /// The directory of the file (the system's temporary directory when `None`).
    pub dir: Option<PathBuf>,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            memory_bytes: 32 * 1024 * 1024,
            file_bytes: 4 * 1024 * 1024 * 1024,
            dir: None,
        }
    }
}

/// One piece of what the source sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Bytes of the RDB of a full resync.
    Rdb(Bytes),
    /// The RDB is complete; the command stream follows.
    RdbEnd,
    /// Bytes of the command stream, received at `at_ms` (Unix milliseconds).
    Stream {
        /// The bytes.
        data: Bytes,
        /// When they were received.
        at_ms: i64,
    },
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Rdb(b) | Piece::Stream { data: b, .. } => b.len(),
            Piece::RdbEnd => 0,
        }
    }
}

/// Bytes of a piece's header in the file: tag (1), length (4), time (8).
const HEADER: usize = 13;

/// The spool file: pieces written at `write_pos`, read at `read_pos`.
struct SpoolFile {
    file: File,
    read_pos: u64,
    write_pos: u64,
}

struct State {
    mem: VecDeque<Piece>,
    mem_bytes: usize,
    file: Option<SpoolFile>,
    /// Set by the link when it ends; given to the reader once everything before it was read.
    end: Option<Error>,
    /// The reader is gone: the link stops.
    reader_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Something was pushed or the link ended.
    readable: Notify,
    /// Something was popped.
    writable: Notify,
    opts: SpoolOptions,
}

/// The producer side, held by the link task.
pub(crate) struct SpoolWriter {
    shared: Arc<Shared>,
}

/// The consumer side, held by the job's [`super::Source`].
pub(crate) struct SpoolReader {
    shared: Arc<Shared>,
}

/// A new spool.
pub(crate) fn spool(opts: SpoolOptions) -> (SpoolWriter, SpoolReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            mem: VecDeque::new(),
            mem_bytes: 0,
            file: None,
            end: None,
            reader_gone: false,
        }),
        readable: Notify::new(),
        writable: Notify::new(),
        opts,
    });
    (
        SpoolWriter {
            shared: shared.clone(),
        },
        SpoolReader { shared },
    )
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every change is a single step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SpoolWriter {
    /// Adds a piece, or gives it back when both bounds are reached (wait with [`SpoolWriter::room`]).
    pub(crate) fn try_push(&self, piece: Piece) -> Result<Result<(), Piece>, Error> {
        let opts = &self.shared.opts;
        let mut st = self.shared.lock();
        let file_busy = st.file.as_ref().is_some_and(|f| f.write_pos > f.read_pos);
        let len = piece.len();
        if !file_busy && (st.mem_bytes + len <= opts.memory_bytes || st.mem.is_empty()) {
            st.mem_bytes += len;
            st.mem.push_back(piece);
        } else {
            let used = st.file.as_ref().map_or(0, |f| f.write_pos - f.read_pos);
            if used + (HEADER + len) as u64 > opts.file_bytes {
                return Ok(Err(piece));
            }
            if st.file.is_none() {
                st.file = Some(SpoolFile {
                    file: create_file(opts)?,
                    read_pos: 0,
                    write_pos: 0,
                });
            }
            let f = st.file.as_mut().expect("created above");
            write_piece(f, &piece)?;
        }
        drop(st);
        self.shared.readable.notify_one();
        Ok(Ok(()))
    }

    /// Resolves when the reader took something since the last call (or at once if it did before).
    pub(crate) async fn room(&self) {
        self.shared.writable.notified().await;
    }

    /// True once the reader is gone.
    pub(crate) fn reader_gone(&self) -> bool {
        self.shared.lock().reader_gone
    }

    /// Ends the spool with the link's error; the reader gets it after everything pushed before.
    pub(crate) fn close(&self, error: Error) {
        self.shared.lock().end = Some(error);
        self.shared.readable.notify_one();
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st.end.is_none() {
            st.end = Some(Error::Protocol("the source link ended".into()));
        }
        drop(st);
        self.shared.readable.notify_one();
    }
}

impl SpoolReader {
    /// The oldest piece, waiting for one; the link's error once everything before it was read.
    pub(crate) async fn pop(&mut self) -> Result<Piece, Error> {
        loop {
            if let Some(piece) = self.try_pop()? {
                return Ok(piece);
            }
            let shared = self.shared.clone();
            let notified = shared.readable.notified();
            if let Some(piece) = self.try_pop()? {
                return Ok(piece);
            }
            {
                let mut st = self.shared.lock();
                if let Some(e) = st.end.take() {
                    // Keep the spool ended for a later call.
                    st.end = Some(Error::Protocol("the source link ended".into()));
                    return Err(e);
                }
            }
            notified.await;
        }
    }

    /// The oldest piece if there is one.
    pub(crate) fn try_pop(&mut self) -> Result<Option<Piece>, Error> {
        let mut st = self.shared.lock();
        let piece = if let Some(piece) = st.mem.pop_front() {
            st.mem_bytes -= piece.len();
            Some(piece)
        } else if let Some(f) = st.file.as_mut().filter(|f| f.read_pos < f.write_pos) {
            let piece = read_piece(f)?;
            if f.read_pos == f.write_pos {
                f.file.set_len(0).map_err(spool_error)?;
                f.read_pos = 0;
                f.write_pos = 0;
            }
            Some(piece)
        } else {
            None
        };
        drop(st);
        if piece.is_some() {
            self.shared.writable.notify_one();
        }
        Ok(piece)
    }

    /// Bytes held (memory and file).
    pub(crate) fn held_bytes(&self) -> u64 {
        self.gauge().held_bytes()
    }

    /// A handle that reads how much the spool holds, from anywhere.
    pub(crate) fn gauge(&self) -> SpoolGauge {
        SpoolGauge(self.shared.clone())
    }

    /// True when nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        let st = self.shared.lock();
        st.mem.is_empty() && st.file.as_ref().is_none_or(|f| f.read_pos == f.write_pos)
    }
}

/// Reads how much a spool holds.
#[derive(Clone)]
pub(crate) struct SpoolGauge(Arc<Shared>);

impl SpoolGauge {
    /// Bytes held (memory and file).
    pub(crate) fn held_bytes(&self) -> u64 {
        let st = self.0.lock();
        st.mem_bytes as u64 + st.file.as_ref().map_or(0, |f| f.write_pos - f.read_pos)
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        self.shared.lock().reader_gone = true;
        self.shared.writable.notify_one();
    }
}

/// Creates the spool file and unlinks it at once (it lives as long as the handle).
fn create_file(opts: &SpoolOptions) -> Result<File, Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let name = format!(
        "ferry-spool-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            Error::Config(format!(
                "cannot create the spool file in {}: {e}",
                dir.display()
            ))
        })?;
    std::fs::remove_file(&path).map_err(spool_error)?;
    Ok(file)
}

fn write_piece(f: &mut SpoolFile, piece: &Piece) -> Result<(), Error> {
    let (tag, data, at): (u8, &[u8], i64) = match piece {
        Piece::Rdb(b) => (0, b, 0),
        Piece::RdbEnd => (1, &[], 0),
        Piece::Stream { data, at_ms } => (2, data, *at_ms),
    };
    let len = u32::try_from(data.len())
        .map_err(|_| Error::Protocol("a spooled piece is over 4 GB".into()))?;
    let mut header = [0u8; HEADER];
    header[0] = tag;
    header[1..5].copy_from_slice(&len.to_le_bytes());
    header[5..13].copy_from_slice(&at.to_le_bytes());
    f.file
        .write_all_at(&header, f.write_pos)
        .map_err(spool_error)?;
    f.file
        .write_all_at(data, f.write_pos + HEADER as u64)
        .map_err(spool_error)?;
    f.write_pos += (HEADER + data.len()) as u64;
    Ok(())
}

fn read_piece(f: &mut SpoolFile) -> Result<Piece, Error> {
    let mut header = [0u8; HEADER];
    f.file
        .read_exact_at(&mut header, f.read_pos)
        .map_err(spool_error)?;
    let len = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
    let at_ms = i64::from_le_bytes(header[5..13].try_into().expect("8 bytes"));
    let mut data = vec![0u8; len];
    f.file
        .read_exact_at(&mut data, f.read_pos + HEADER as u64)
        .map_err(spool_error)?;
    f.read_pos += (HEADER + len) as u64;
    let data = Bytes::from(data);
    match header[0] {
        0 => Ok(Piece::Rdb(data)),
        1 => Ok(Piece::RdbEnd),
        2 => Ok(Piece::Stream { data, at_ms }),
        t => Err(Error::Protocol(format!("corrupt spool file (tag {t})"))),
    }
}

fn spool_error(e: std::io::Error) -> Error {
    Error::Spool(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(i: u32) -> Piece {
        Piece::Stream {
            data: Bytes::from(format!("piece {i:05} ").repeat(7)),
            at_ms: i64::from(i),
        }
    }

    #[tokio::test]
    async fn pieces_come_out_in_order_across_memory_and_file() {
        let opts = SpoolOptions {
            memory_bytes: 300,
            file_bytes: 1 << 20,
            dir: None,
        };
        let (w, mut r) = spool(opts);
        let mut expected = Vec::new();
        let mut got = Vec::new();
        // Interleave pushes and pops so the spool goes memory -> file -> memory several times.
        for round in 0..20u32 {
            for i in 0..(round % 7 + 1) {
                let p = stream(round * 100 + i);
                expected.push(p.clone());
                w.try_push(p).unwrap().unwrap();
            }
            if round == 3 {
                expected.push(Piece::RdbEnd);
                w.try_push(Piece::RdbEnd).unwrap().unwrap();
            }
            for _ in 0..(round % 3) {
                if let Some(p) = r.try_pop().unwrap() {
                    got.push(p);
                }
            }
        }
        while let Some(p) = r.try_pop().unwrap() {
            got.push(p);
        }
        assert_eq!(got, expected);
        assert!(r.is_empty());
        assert_eq!(r.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_full_spool_gives_the_piece_back_and_memory_stays_bounded() {
        let opts = SpoolOptions {
            memory_bytes: 100,
            file_bytes: 200,
            dir: None,
        };
        let (w, mut r) = spool(opts);
        let piece = |n: usize| Piece::Rdb(Bytes::from(vec![b'x'; n]));
        w.try_push(piece(90)).unwrap().unwrap();
        w.try_push(piece(90)).unwrap().unwrap(); // file: 103
        assert!(w.try_push(piece(90)).unwrap().is_err()); // file would pass 200
        assert_eq!(r.held_bytes(), 90 + 103);
        assert_eq!(r.try_pop().unwrap(), Some(piece(90)));
        assert_eq!(r.try_pop().unwrap(), Some(piece(90)));
        assert!(r.is_empty());
        w.try_push(piece(90)).unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_link_error_comes_after_the_data() {
        let (w, mut r) = spool(SpoolOptions::default());
        w.try_push(Piece::Rdb(Bytes::from_static(b"abc")))
            .unwrap()
            .unwrap();
        w.close(Error::Protocol("gone".into()));
        assert_eq!(
            r.pop().await.unwrap(),
            Piece::Rdb(Bytes::from_static(b"abc"))
        );
        assert!(matches!(r.pop().await, Err(Error::Protocol(m)) if m == "gone"));
        assert!(r.pop().await.is_err());
    }

    #[test]
    fn an_unusable_spool_directory_is_a_clear_error() {
        let opts = SpoolOptions {
            memory_bytes: 1,
            file_bytes: 1 << 20,
            dir: Some(PathBuf::from("/nonexistent/ferry-spool-dir")),
        };
        let (w, _r) = spool(opts);
        w.try_push(Piece::RdbEnd).unwrap().unwrap();
        let err = w
            .try_push(Piece::Rdb(Bytes::from_static(b"abc")))
            .unwrap_err();
        assert!(err.to_string().contains("spool file"), "{err}");
    }
}
