//! What a watch on one kind of object says, folded into the current set of objects by name. The
//! same fold serves Nodes and Namespaces; the watch itself (kube's watcher) is the edge's.

use std::collections::HashMap;

/// One step of a watch, in the watch's own order: a (re)list is `RelistStarted`, a `Listed` per
/// object, then `RelistDone`; changes between lists are `Applied` and `Deleted`. Objects come
/// reduced to `V`, what pullguard reads of them, under their name.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<V> {
    RelistStarted,
    Listed(String, V),
    RelistDone,
    Applied(String, V),
    Deleted(String),
}

/// The objects as the last complete list and the changes since describe them.
#[derive(Debug, Clone)]
pub struct Watched<V> {
    current: HashMap<String, V>,
    /// Objects of a list in progress: they replace `current` only once the list is complete, so a
    /// relist never shows a half-empty cluster.
    relisting: Option<HashMap<String, V>>,
    synced: bool,
}

impl<V> Default for Watched<V> {
    fn default() -> Self {
        Watched { current: HashMap::new(), relisting: None, synced: false }
    }
}

impl<V: PartialEq> Watched<V> {
    /// Folds one event in; true when what pullguard reads has changed (a heartbeat that changes
    /// nothing it keeps is no change).
    pub fn apply(&mut self, event: WatchEvent<V>) -> bool {
        match event {
            WatchEvent::RelistStarted => {
                self.relisting = Some(HashMap::new());
                false
            }
            WatchEvent::Listed(name, value) => {
                self.relisting.get_or_insert_with(HashMap::new).insert(name, value);
                false
            }
            WatchEvent::RelistDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let changed = !self.synced || listed != self.current;
                self.current = listed;
                self.synced = true;
                changed
            }
            WatchEvent::Applied(name, value) => {
                let unchanged = self.current.get(&name) == Some(&value);
                self.current.insert(name, value);
                !unchanged
            }
            WatchEvent::Deleted(name) => self.current.remove(&name).is_some(),
        }
    }

    /// True once a first complete list has been folded in.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        self.current.get(name)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.current.values()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.current.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(watched: &Watched<u8>) -> Vec<(String, u8)> {
        let mut all: Vec<(String, u8)> = watched.iter().map(|(name, value)| (name.clone(), *value)).collect();
        all.sort();
        all
    }

    /// An event, whether it changes what is read, and the objects afterwards.
    type Step = (WatchEvent<u8>, bool, Vec<(&'static str, u8)>);

    /// Each row: an event, whether it changes what is read, and the objects afterwards.
    #[test]
    fn watch_events_fold_into_the_current_objects() {
        use WatchEvent::*;
        let name = |text: &str| text.to_string();
        let steps: Vec<Step> = vec![
            (RelistStarted, false, vec![]),
            (Listed(name("a"), 1), false, vec![]),
            (Listed(name("b"), 2), false, vec![]),
            (RelistDone, true, vec![("a", 1), ("b", 2)]),
            // A heartbeat: what is kept of the object is the same.
            (Applied(name("a"), 1), false, vec![("a", 1), ("b", 2)]),
            (Applied(name("a"), 3), true, vec![("a", 3), ("b", 2)]),
            (Applied(name("c"), 4), true, vec![("a", 3), ("b", 2), ("c", 4)]),
            (Deleted(name("b")), true, vec![("a", 3), ("c", 4)]),
            (Deleted(name("b")), false, vec![("a", 3), ("c", 4)]),
            // A relist (after a dropped watch) shows the old objects until it is complete, then
            // only what it listed: an object deleted while the watch was down is gone.
            (RelistStarted, false, vec![("a", 3), ("c", 4)]),
            (Listed(name("a"), 3), false, vec![("a", 3), ("c", 4)]),
            (RelistDone, true, vec![("a", 3)]),
            (RelistStarted, false, vec![("a", 3)]),
            (Listed(name("a"), 3), false, vec![("a", 3)]),
            (RelistDone, false, vec![("a", 3)]),
        ];
        let mut watched = Watched::default();
        assert!(!watched.is_synced());
        for (row, (event, changes, after)) in steps.into_iter().enumerate() {
            let description = format!("row {row}: {event:?}");
            assert_eq!(watched.apply(event), changes, "{description}");
            let after: Vec<(String, u8)> =
                after.into_iter().map(|(name, value)| (name.to_string(), value)).collect();
            assert_eq!(listed(&watched), after, "{description}");
        }
        assert!(watched.is_synced());
    }

    #[test]
    fn an_empty_first_list_is_a_change_and_syncs() {
        let mut watched = Watched::<u8>::default();
        assert!(!watched.apply(WatchEvent::RelistStarted));
        assert!(watched.apply(WatchEvent::RelistDone), "the first list is published even when empty");
        assert!(watched.is_synced() && watched.values().next().is_none());
    }
}
