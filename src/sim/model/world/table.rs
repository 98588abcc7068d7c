//! The storage every kind of object shares: a [`Table`] keeps objects in insertion order with a gid
//! index, and a [`GidSource`] issues gids unique across all of them.
//!
//! Imports nothing of the simulator.

use std::collections::HashMap;

/// A table of objects in insertion order, indexed by gid.
#[derive(Debug, Clone)]
pub struct Table<T> {
    items: Vec<T>,
    index: HashMap<String, usize>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

/// Objects that have a gid.
pub trait HasGid {
    /// The object's gid.
    fn gid(&self) -> &str;
}

impl<T: HasGid> Table<T> {
    /// Adds an object.
    pub fn insert(&mut self, item: T) {
        self.index.insert(item.gid().to_string(), self.items.len());
        self.items.push(item);
    }

    /// Looks an object up.
    pub fn get(&self, gid: &str) -> Option<&T> {
        self.index.get(gid).map(|&i| &self.items[i])
    }

    /// Looks an object up for change.
    pub fn get_mut(&mut self, gid: &str) -> Option<&mut T> {
        self.index.get(gid).map(|&i| &mut self.items[i])
    }

    /// All objects in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// The gids of all objects, in insertion order.
    pub fn gids(&self) -> Vec<String> {
        self.gids_where(|_| true)
    }

    /// The gids of the objects `keep` takes, in insertion order.
    pub fn gids_where(&self, keep: impl Fn(&T) -> bool) -> Vec<String> {
        self.items
            .iter()
            .filter(|item| keep(item))
            .map(|item| item.gid().to_string())
            .collect()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The object at position `i` in insertion order.
    pub fn at(&self, i: usize) -> Option<&T> {
        self.items.get(i)
    }
}

/// Issues gids: numeric strings in Asana's style, unique across all object types.
#[derive(Debug, Clone)]
pub struct GidSource {
    next: u64,
}

impl GidSource {
    /// Starts at `base`.
    pub fn new(base: u64) -> Self {
        Self { next: base }
    }

    /// The next gid.
    pub fn next_gid(&mut self) -> String {
        self.next += 1;
        self.next.to_string()
    }
}
