//! Reading the model from JSON in one pass, without serde's `flatten`.
//!
//! A derived `Deserialize` with a `#[serde(flatten)]` map first buffers the whole object as an
//! intermediate tree and then reads the struct out of it. For a snapshot or a checkpoint that
//! tree holds every file entry of the document, with an allocation per key and value: on a
//! deep history, hundreds of megabytes that live only during the parse, and most of its time.
//! [`deserialize_with_extra!`] reads the known keys straight into their fields and only the
//! unknown ones into the `extra` map, and [`parse_recording_keys`] records a document's key
//! order as it goes, so the text is scanned once.

use super::{Doc, EntryPool, EntryRc, FileEntry};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Deserializer as _;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Implements `Deserialize` for a struct with named fields and an `extra` map of every key it
/// does not know. `required` fields must be present; `defaulted` ones take their type's
/// default when absent (`None` for an `Option`).
macro_rules! deserialize_with_extra {
    ($ty:ident, $what:literal, required: [$($req:ident),* $(,)?], defaulted: [$($def:ident),* $(,)?]) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                use $crate::format::model::de::{put, Key, KeySeed};
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut m: A,
                    ) -> Result<$ty, A::Error> {
                        const FIELDS: &[&str] = &[$(stringify!($req),)* $(stringify!($def),)*];
                        $(let mut $req = None;)*
                        $(let mut $def = None;)*
                        let mut extra = serde_json::Map::new();
                        while let Some(key) = m.next_key_seed(KeySeed(FIELDS))? {
                            match key {
                                $(Key::Known(stringify!($req)) => put(&mut $req, stringify!($req), m.next_value()?)?,)*
                                $(Key::Known(stringify!($def)) => put(&mut $def, stringify!($def), m.next_value()?)?,)*
                                Key::Known(k) => unreachable!("{k} is listed in FIELDS"),
                                Key::Other(k) => {
                                    let v = m.next_value()?;
                                    if extra.insert(k.clone(), v).is_some() {
                                        return Err(<A::Error as serde::de::Error>::custom(
                                            format_args!("duplicate key `{k}`"),
                                        ));
                                    }
                                }
                            }
                        }
                        Ok($ty {
                            $($req: $req.ok_or_else(|| {
                                <A::Error as serde::de::Error>::missing_field(stringify!($req))
                            })?,)*
                            $($def: $def.unwrap_or_default(),)*
                            extra: extra.into(),
                        })
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}
pub(super) use deserialize_with_extra;

/// An object key: one of the struct's fields, or a key kept in `extra`.
pub enum Key {
    Known(&'static str),
    Other(String),
}

/// Reads a key without allocating when it names a field.
pub struct KeySeed(pub &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(match self.0.iter().find(|f| **f == s) {
            Some(f) => Key::Known(f),
            None => Key::Other(s.to_owned()),
        })
    }
}

/// Fills a field's slot; a key given twice is an error, as it is for a derived `Deserialize`.
pub fn put<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), E> {
    match slot.replace(v) {
        Some(_) => Err(E::duplicate_field(name)),
        None => Ok(()),
    }
}

/// Parses a JSON object into `T` and, in the same pass, the order of its top-level keys.
pub fn parse_recording_keys<T: DeserializeOwned>(text: &[u8]) -> serde_json::Result<Doc<T>> {
    let mut d = serde_json::Deserializer::from_slice(text);
    let doc = d.deserialize_map(DocVisitor(PhantomData))?;
    d.end()?;
    Ok(doc)
}

struct DocVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for DocVisitor<T> {
    type Value = Doc<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Doc<T>, A::Error> {
        let mut key_order = Vec::new();
        let value = T::deserialize(MapAccessDeserializer::new(Recording {
            inner: map,
            keys: &mut key_order,
        }))?;
        Ok(Doc {
            value,
            key_order: shared_order(key_order),
        })
    }
}

thread_local! {
    /// The key order of the last document this thread read.
    static LAST_ORDER: RefCell<Option<Arc<[String]>>> = const { RefCell::new(None) };
}

/// The key order as a shared list: a node's tens of thousands of snapshots all have the
/// same one, and a list of its own took each of them a kilobyte.
fn shared_order(keys: Vec<String>) -> Arc<[String]> {
    LAST_ORDER.with_borrow_mut(|last| match last {
        Some(order) if **order == *keys => Arc::clone(order),
        _ => Arc::clone(last.insert(keys.into())),
    })
}

/// A map whose keys are noted down as they are read.
struct Recording<'k, A> {
    inner: A,
    keys: &'k mut Vec<String>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Recording<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.inner.next_key::<String>()? else {
            return Ok(None);
        };
        let v = seed.deserialize(IntoDeserializer::<A::Error>::into_deserializer(
            key.as_str(),
        ))?;
        self.keys.push(key);
        Ok(Some(v))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A JSON object's top-level keys and the text of their values, in the order they appear.
pub struct TopLevel<'a>(pub Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TopLevel<'a>, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TopLevel<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<TopLevel<'a>, A::Error> {
                let mut fields = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    fields.push((k, m.next_value()?));
                }
                Ok(TopLevel(fields))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

thread_local! {
    /// The entries the document this thread is reading may share ([`with_pool`]). Set up
    /// without a lazy first use: it is looked at once per entry, millions of times.
    static POOL: RefCell<Option<EntryPool>> = const { RefCell::new(None) };
    /// How many entries read through the pool it did not have.
    static NOT_IN_POOL: Cell<usize> = const { Cell::new(0) };
}

/// Runs `read` with `pool` as this thread's pool of entries to share; also how many of the
/// entries read were not in it.
pub fn with_pool<R>(pool: &EntryPool, read: impl FnOnce() -> R) -> (R, usize) {
    POOL.set(Some(pool.clone()));
    NOT_IN_POOL.set(0);
    let out = read();
    POOL.take().expect("the pool stays while reading");
    (out, NOT_IN_POOL.take())
}

/// A file entry as read: the pool's equal entry when it has one, else a new one.
pub struct Shared(pub EntryRc);

impl<'de> serde::Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shared, D::Error> {
        let entry = FileEntry::deserialize(d)?;
        let same = POOL.with_borrow(|pool| {
            let pool = pool.as_ref()?;
            let same = pool.get(entry.id).filter(|same| ***same == entry);
            if same.is_none() {
                NOT_IN_POOL.set(NOT_IN_POOL.get() + 1);
            }
            same.cloned()
        });
        Ok(Shared(same.unwrap_or_else(|| EntryRc::new(entry))))
    }
}
