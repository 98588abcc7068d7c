//! The storage every kind of object shares: a [`Table`] keeps objects in insertion order with a gid
//! index and an index of what each container holds, and a [`GidSource`] issues gids unique across
//! all of them.
//!
//! Imports nothing of the simulator.

use std::collections::HashMap;

/// A table of objects in insertion order, indexed by gid and by container.
#[derive(Debug, Clone)]
pub struct Table<T> {
    items: Vec<T>,
    index: HashMap<String, usize>,
    /// Positions of the objects of each container, in insertion order.
    contents: HashMap<String, Vec<usize>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashMap::new(),
            contents: HashMap::new(),
        }
    }
}

/// Objects that have a gid.
pub trait HasGid {
    /// The object's gid.
    fn gid(&self) -> &str;

    /// The object this one lives in (a story's task, a section's project, a subtask's parent),
    /// when it has one that never changes: the table indexes it, so listing what a container
    /// holds needs no scan of the table, however large the world.
    fn container(&self) -> Option<&str> {
        None
    }
}

impl<T: HasGid> Table<T> {
    /// Adds an object.
    pub fn insert(&mut self, item: T) {
        let position = self.items.len();
        self.index.insert(item.gid().to_string(), position);
        if let Some(container) = item.container() {
            self.contents
                .entry(container.to_string())
                .or_default()
                .push(position);
        }
        self.items.push(item);
    }

    /// The objects that live in `container`, in insertion order.
    pub fn within<'a>(&'a self, container: &str) -> impl Iterator<Item = &'a T> + 'a {
        self.contents
            .get(container)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|&i| &self.items[i])
    }

    /// The gids of the objects in `container` that `keep` takes, in insertion order.
    pub fn gids_within(&self, container: &str, keep: impl Fn(&T) -> bool) -> Vec<String> {
        self.within(container)
            .filter(|item| keep(item))
            .map(|item| item.gid().to_string())
            .collect()
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
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
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
