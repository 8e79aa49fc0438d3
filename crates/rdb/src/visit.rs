//! Reading values without building them: a [`Visitor`] is handed each key's strings and elements as borrowed
//! slices of the parser's buffers, for a consumer that turns them into its own objects (a language binding's
//! strings, lists and dicts) and would only take a [`Value`] apart again.
//!
//! [`Parser::next_item_visit`](crate::Parser::next_item_visit) (and the same on [`Reader`](crate::Reader)) gives
//! the value of each key to the visitor before it returns the key's [`Item::Entry`](crate::Item::Entry), whose
//! `value` is then `None`. Strings, lists, sets and hashes without field expiries come element by element in file
//! order, exactly the bytes [`Value`] would hold (integer elements of intsets, ziplists and listpacks as `Int`;
//! [`Value`] holds their decimal text). Every other value (sorted sets, hashes with field expiries, streams,
//! modules) is decoded and given whole through [`Visitor::value`], and then also not in the entry.
//!
//! ```
//! use ferry_rdb::visit::{Shape, Visitor};
//! use ferry_rdb::encoding::Elem;
//! use ferry_rdb::{Item, Parser, Value, Writer};
//!
//! /// Counts the bytes of strings and string elements, and the elements.
//! #[derive(Default)]
//! struct Count { bytes: usize, elements: usize }
//! impl Visitor for Count {
//!     fn string(&mut self, s: &[u8]) { self.bytes += s.len(); }
//!     fn begin(&mut self, _shape: Shape, _len_hint: usize) {}
//!     fn element(&mut self, e: Elem<'_>) {
//!         self.elements += 1;
//!         if let Elem::Str(s) = e { self.bytes += s.len(); }
//!     }
//!     fn value(&mut self, _v: Value) {}
//! }
//!
//! let file = Writer::write_to_vec(9, |w| {
//!     w.select_db(0)?;
//!     w.write_entry(b"s", &Value::String("abc".into()), None)?;
//!     w.write_entry(b"l", &Value::List(vec!["x".into(), "7".into()]), None)
//! })?;
//! let mut p = Parser::new(Default::default());
//! p.feed(&file);
//! let mut count = Count::default();
//! while let Some(item) = p.next_item_visit(&mut count)? {
//!     if let Item::Entry(e) = item { assert!(e.value.is_none()); }
//! }
//! // "abc" and "x": the writer stored "7" as an integer element, which counts no bytes here.
//! assert_eq!((count.bytes, count.elements), (4, 2));
//! # Ok::<(), ferry_rdb::Error>(())
//! ```

use crate::encoding::Elem;
use crate::value::Value;

/// The kind of collection a visited value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shape {
    /// A list: elements head first.
    List,
    /// A set: its members.
    Set,
    /// A hash: field, value, field, value ...
    Hash,
}

/// Receives one value at a time: `string`, or `begin` then its elements, or `value`.
///
/// When decoding fails part way through a value, the parser returns the error after the visitor has seen part of
/// that value: drop what was collected for it.
pub trait Visitor {
    /// A string value.
    fn string(&mut self, s: &[u8]);
    /// A collection opens; about `len_hint` elements follow (a hint: count what comes; for a hash, the number of
    /// fields, each given as two elements).
    fn begin(&mut self, shape: Shape, len_hint: usize);
    /// One element of the open collection.
    fn element(&mut self, e: Elem<'_>);
    /// A value of another type, decoded (sorted sets in file order, as [`Value::SortedSet`]).
    fn value(&mut self, v: Value);
}
