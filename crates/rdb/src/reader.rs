//! A blocking iterator over an RDB file (or any `std::io::Read`), built on [`Parser`].

use std::io::Read;

use crate::error::Error;
use crate::parser::{Item, Parser, ParserOptions};
use crate::visit::Visitor;

/// Reads items from a `Read` in 64 KiB chunks; never holds more than one value plus one chunk.
///
/// ```no_run
/// let file = std::fs::File::open("dump.rdb").unwrap();
/// for item in ferry_rdb::Reader::new(file, Default::default()) {
///     if let ferry_rdb::Item::Entry(e) = item.unwrap() {
///         println!("{:?}", e.key);
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Reader<R: Read> {
    inner: R,
    parser: Parser,
    chunk: Vec<u8>,
    ended: bool,
}

impl<R: Read> Reader<R> {
    /// Wraps a reader.
    pub fn new(inner: R, opts: ParserOptions) -> Self {
        Reader {
            inner,
            parser: Parser::new(opts),
            chunk: vec![0u8; 64 * 1024],
            ended: false,
        }
    }

    /// The underlying parser (offset, version, bytes after EOF).
    pub fn parser(&self) -> &Parser {
        &self.parser
    }

    /// Returns the next item, `Ok(None)` after `Item::Eof`.
    pub fn next_item(&mut self) -> Result<Option<Item>, Error> {
        self.next_inner(None)
    }

    /// [`Reader::next_item`], giving each key's value to `visitor` (see [`Parser::next_item_visit`]).
    pub fn next_item_visit(&mut self, visitor: &mut dyn Visitor) -> Result<Option<Item>, Error> {
        self.next_inner(Some(visitor))
    }

    fn next_inner(&mut self, mut visitor: Option<&mut dyn Visitor>) -> Result<Option<Item>, Error> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let got = match visitor.as_deref_mut() {
                Some(v) => self.parser.next_item_visit(v),
                None => self.parser.next_item(),
            };
            // The parser's result is handed on as it is (an item is big: it is not moved out and back in).
            match &got {
                Ok(None) => {}
                Ok(Some(Item::Eof { .. })) => {
                    self.ended = true;
                    return got;
                }
                _ => return got,
            }
            if self.parser.is_done() {
                self.ended = true;
                return Ok(None);
            }
            // Read until the parser has what it asked for.
            let mut want = self.parser.bytes_needed().max(1);
            while want > 0 {
                let n = loop {
                    match self.inner.read(&mut self.chunk) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            self.ended = true;
                            return Err(e.into());
                        }
                    }
                };
                if n == 0 {
                    self.ended = true;
                    return Err(self.parser.finish().err().unwrap_or(Error::Finished));
                }
                self.parser.feed(&self.chunk[..n]);
                want = want.saturating_sub(n);
            }
        }
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Item, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}
