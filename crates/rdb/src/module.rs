//! What a module value's payload holds: the operands the module saved (`MODULE_2` opcodes), and for the one
//! module type a Redis server defines itself (the vector sets of Redis 8, module type `vectorset`), its data.
//!
//! A module value stays opaque everywhere else in this crate (it is copied as its payload). This view is for
//! comparing two values: a vector set's payload also holds its HNSW graph (each node's level and links),
//! which a server rebuilds in another order when it loads the value, so two servers holding the same
//! elements serialize them differently, and one server does after a `DUMP`/`RESTORE` round trip.

use bytes::Bytes;

use crate::cursor::{Cur, R};
use crate::encode::{put_len, put_string};
use crate::error::{Error, KeyContext};
use crate::value::ModuleValue;

/// One operand of a module value, in the order the module saved it.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleItem {
    /// `RedisModule_SaveSigned` (opcode 1; stored as the unsigned bit pattern).
    Signed(i64),
    /// `RedisModule_SaveUnsigned` (opcode 2).
    Unsigned(u64),
    /// `RedisModule_SaveFloat` (opcode 3).
    Float(f32),
    /// `RedisModule_SaveDouble` (opcode 4).
    Double(f64),
    /// `RedisModule_SaveString` / `SaveStringBuffer` (opcode 5).
    String(Bytes),
}

/// Opcodes of a module payload (rdb.h `RDB_MODULE_OPCODE_*`).
pub(crate) const OP_EOF: u64 = 0;
pub(crate) const OP_SINT: u64 = 1;
pub(crate) const OP_UINT: u64 = 2;
pub(crate) const OP_FLOAT: u64 = 3;
pub(crate) const OP_DOUBLE: u64 = 4;
pub(crate) const OP_STRING: u64 = 5;

/// The operands of a module payload (the opcodes after the module ID, up to its EOF opcode).
pub fn module_items(payload: &[u8]) -> Result<Vec<ModuleItem>, Error> {
    let mut c = Cur::new(payload, 0, usize::MAX);
    let items = read_items(&mut c)
        .map_err(|stop| crate::parser::stop_error(stop, 0, KeyContext(None), "a module value"))?;
    if c.p != payload.len() {
        return Err(Error::Corrupt {
            offset: c.p as u64,
            key: KeyContext(None),
            message: format!(
                "{} bytes left after the module value's EOF opcode",
                payload.len() - c.p
            ),
        });
    }
    Ok(items)
}

fn read_items(c: &mut Cur<'_>) -> R<Vec<ModuleItem>> {
    let mut items = Vec::new();
    loop {
        let at = c.p;
        let item = match c.len("a module value opcode")? {
            OP_EOF => return Ok(items),
            OP_SINT => ModuleItem::Signed(c.len("a module integer")? as i64),
            OP_UINT => ModuleItem::Unsigned(c.len("a module integer")?),
            OP_FLOAT => ModuleItem::Float(f32::from_le_bytes(c.array("a module float")?)),
            OP_DOUBLE => ModuleItem::Double(f64::from_le_bytes(c.array("a module double")?)),
            OP_STRING => ModuleItem::String(c.string("a module string")?.to_bytes()?),
            x => return crate::cursor::corrupt(at, format!("unknown module opcode {x}")),
        };
        items.push(item);
    }
}

/// A module payload holding `items`, ending with the EOF opcode.
pub fn encode_module_items(items: &[ModuleItem]) -> Bytes {
    let mut out = Vec::new();
    for item in items {
        match item {
            ModuleItem::Signed(v) => {
                put_len(&mut out, OP_SINT);
                put_len(&mut out, *v as u64);
            }
            ModuleItem::Unsigned(v) => {
                put_len(&mut out, OP_UINT);
                put_len(&mut out, *v);
            }
            ModuleItem::Float(v) => {
                put_len(&mut out, OP_FLOAT);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ModuleItem::Double(v) => {
                put_len(&mut out, OP_DOUBLE);
                out.extend_from_slice(&v.to_le_bytes());
            }
            ModuleItem::String(s) => {
                put_len(&mut out, OP_STRING);
                put_string(&mut out, s);
            }
        }
    }
    put_len(&mut out, OP_EOF);
    Bytes::from(out)
}

/// The data of a Redis 8 vector set, without its graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorSet {
    /// The dimension of the stored vectors (after a projection).
    pub dim: u64,
    /// The quantization (`VINFO`'s quant-type: 0 none (fp32), 1 q8, 2 bin, as the server numbers them).
    pub quantization: u8,
    /// The HNSW `M` parameter.
    pub hnsw_m: u16,
    /// The random projection (`VADD ... REDUCE`): its input dimension and its matrix.
    pub projection: Option<(u64, Bytes)>,
    /// The elements in the order the server saved them.
    pub elements: Vec<VectorSetElement>,
}

/// One element of a vector set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorSetElement {
    /// The element's name.
    pub element: Bytes,
    /// Its attributes (`VSETATTR`), if it has any.
    pub attributes: Option<Bytes>,
    /// Its vector as the server stores it (quantized).
    pub vector: Bytes,
}

/// Flags of the vector set's layout (`VectorSetRdbSave` in Redis's modules/vector-sets/vset.c).
const VSET_HAS_PROJECTION: u64 = 1;
const VSET_HAS_ATTRIBUTES: u64 = 2;

impl ModuleValue {
    /// The operands of this value's payload.
    pub fn items(&self) -> Result<Vec<ModuleItem>, Error> {
        module_items(&self.payload)
    }

    /// This value as a vector set, when it is one (module type `vectorset`, encoding version 0) in the layout
    /// of Redis 8.0 GA and later: `dim`, element count, `quant | M << 8`, flags, the projection if flagged,
    /// then per element its name, its attributes if flagged (empty for none), its vector, and its graph
    /// parameters (a count and that many integers). `None` for any other value or a layout that does not
    /// read exactly so.
    pub fn vector_set(&self) -> Option<VectorSet> {
        if self.name != "vectorset" || self.encver != 0 {
            return None;
        }
        let items = self.items().ok()?;
        let mut it = items.into_iter();
        let unsigned = |it: &mut std::vec::IntoIter<ModuleItem>| match it.next() {
            Some(ModuleItem::Unsigned(v)) => Some(v),
            _ => None,
        };
        let string = |it: &mut std::vec::IntoIter<ModuleItem>| match it.next() {
            Some(ModuleItem::String(s)) => Some(s),
            _ => None,
        };
        let dim = unsigned(&mut it)?;
        let count = unsigned(&mut it)?;
        let config = unsigned(&mut it)?;
        let hnsw_m = ((config >> 8) & 0xffff) as u16;
        // Before 8.0 GA the third word was the quantization alone and the fourth a projection flag (and no
        // attributes were saved): that layout is not read here.
        if hnsw_m == 0 || config >> 24 != 0 {
            return None;
        }
        let flags = unsigned(&mut it)?;
        if flags & !(VSET_HAS_PROJECTION | VSET_HAS_ATTRIBUTES) != 0 {
            return None;
        }
        let projection = if flags & VSET_HAS_PROJECTION != 0 {
            Some((unsigned(&mut it)?, string(&mut it)?))
        } else {
            None
        };
        let mut elements = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let element = string(&mut it)?;
            let attributes = if flags & VSET_HAS_ATTRIBUTES != 0 {
                Some(string(&mut it)?).filter(|a| !a.is_empty())
            } else {
                None
            };
            let vector = string(&mut it)?;
            let params = unsigned(&mut it)?;
            for _ in 0..params {
                unsigned(&mut it)?;
            }
            elements.push(VectorSetElement {
                element,
                attributes,
                vector,
            });
        }
        if it.next().is_some() {
            return None;
        }
        Some(VectorSet {
            dim,
            quantization: (config & 0xff) as u8,
            hnsw_m,
            projection,
            elements,
        })
    }
}

impl VectorSet {
    /// A module payload of this vector set's data in a canonical form, for comparing: the elements sorted by
    /// name and no graph (each element with a parameter count of 0). Equal for two servers holding the same
    /// elements with the same vectors and attributes, whatever their graphs. Not a payload to restore.
    pub fn canonical_payload(&self) -> Bytes {
        let mut elements: Vec<&VectorSetElement> = self.elements.iter().collect();
        elements.sort_by(|a, b| a.element.cmp(&b.element));
        let any_attributes = elements.iter().any(|e| e.attributes.is_some());
        let mut flags = 0;
        if self.projection.is_some() {
            flags |= VSET_HAS_PROJECTION;
        }
        if any_attributes {
            flags |= VSET_HAS_ATTRIBUTES;
        }
        let mut items = vec![
            ModuleItem::Unsigned(self.dim),
            ModuleItem::Unsigned(elements.len() as u64),
            ModuleItem::Unsigned(self.quantization as u64 | (self.hnsw_m as u64) << 8),
            ModuleItem::Unsigned(flags),
        ];
        if let Some((input, matrix)) = &self.projection {
            items.push(ModuleItem::Unsigned(*input));
            items.push(ModuleItem::String(matrix.clone()));
        }
        for e in elements {
            items.push(ModuleItem::String(e.element.clone()));
            if any_attributes {
                items.push(ModuleItem::String(e.attributes.clone().unwrap_or_default()));
            }
            items.push(ModuleItem::String(e.vector.clone()));
            items.push(ModuleItem::Unsigned(0));
        }
        encode_module_items(&items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vset(items: &[ModuleItem]) -> ModuleValue {
        ModuleValue {
            module_id: module_id("vectorset", 0),
            name: "vectorset".into(),
            encver: 0,
            payload: encode_module_items(items),
        }
    }

    /// The 64-bit module type ID of a 9-character name and an encoding version.
    fn module_id(name: &str, encver: u16) -> u64 {
        crate::value::module_id_from_name(name, encver).unwrap()
    }

    #[test]
    fn the_test_ids_name_their_module() {
        assert_eq!(
            crate::value::module_name_from_id(module_id("vectorset", 0)),
            "vectorset"
        );
    }

    fn s(x: &str) -> ModuleItem {
        ModuleItem::String(Bytes::copy_from_slice(x.as_bytes()))
    }

    #[test]
    fn items_round_trip_through_the_encoder() {
        let items = vec![
            ModuleItem::Signed(-5),
            ModuleItem::Unsigned(u64::MAX),
            ModuleItem::Float(1.5),
            ModuleItem::Double(-0.25),
            s("abc"),
            ModuleItem::String(Bytes::new()),
        ];
        assert_eq!(module_items(&encode_module_items(&items)).unwrap(), items);
    }

    #[test]
    fn a_payload_cut_short_or_with_an_unknown_opcode_is_an_error() {
        let full = encode_module_items(&[ModuleItem::Unsigned(300), s("hello")]);
        for cut in 0..full.len() {
            assert!(module_items(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert!(module_items(&[9, 0]).is_err());
        let mut extra = full.to_vec();
        extra.push(0);
        assert!(module_items(&extra).is_err());
    }

    /// Two vector sets of the same elements, saved in another order with other graphs, have one canonical
    /// payload; a changed vector, attribute or parameter changes it.
    #[test]
    fn the_canonical_payload_ignores_order_and_graph_only() {
        let node = |name: &str, attr: &str, vec: &str, params: &[u64]| {
            let mut v = vec![
                s(name),
                s(attr),
                s(vec),
                ModuleItem::Unsigned(params.len() as u64),
            ];
            v.extend(params.iter().map(|p| ModuleItem::Unsigned(*p)));
            v
        };
        let head = |n: u64| {
            vec![
                ModuleItem::Unsigned(3),
                ModuleItem::Unsigned(n),
                ModuleItem::Unsigned(1 | 16 << 8),
                ModuleItem::Unsigned(VSET_HAS_ATTRIBUTES),
            ]
        };
        let a: Vec<ModuleItem> = [
            head(2),
            node("x", "{}", "v1", &[1, 0, 2]),
            node("y", "", "v2", &[2, 1, 1, 7]),
        ]
        .concat();
        let b: Vec<ModuleItem> = [
            head(2),
            node("y", "", "v2", &[5, 0]),
            node("x", "{}", "v1", &[4, 2, 9, 9]),
        ]
        .concat();
        let va = vset(&a).vector_set().expect("a vector set");
        assert_eq!(va.elements.len(), 2);
        assert_eq!(va.elements[1].attributes, None);
        assert_eq!(va.hnsw_m, 16);
        assert_eq!(va.quantization, 1);
        let vb = vset(&b).vector_set().expect("a vector set");
        assert_eq!(va.canonical_payload(), vb.canonical_payload());
        for changed in [
            [
                head(2),
                node("x", "{}", "v1", &[1]),
                node("y", "", "v3", &[2]),
            ]
            .concat(),
            [
                head(2),
                node("x", "{1}", "v1", &[1]),
                node("y", "", "v2", &[2]),
            ]
            .concat(),
            [
                head(2),
                node("x", "{}", "v1", &[1]),
                node("z", "", "v2", &[2]),
            ]
            .concat(),
        ] {
            let vc = vset(&changed).vector_set().expect("a vector set");
            assert_ne!(va.canonical_payload(), vc.canonical_payload());
        }
        // Not the layout: an element missing, one too many, another module's name.
        assert!(vset(&[head(3), node("x", "{}", "v1", &[1])].concat())
            .vector_set()
            .is_none());
        assert!(
            vset(&[head(1), node("x", "{}", "v1", &[1]), vec![s("extra")]].concat())
                .vector_set()
                .is_none()
        );
        let mut other = vset(&a);
        other.name = "ReJSON-RL".into();
        assert!(other.vector_set().is_none());
    }
}
