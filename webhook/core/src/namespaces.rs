//! Per-namespace modes: the `pullguard.io/mode` label of each labelled namespace, folded from a
//! watch on Namespaces.

use crate::{config::Mode, watched::Watched};

/// A namespace's `pullguard.io/mode` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceMode {
    Unset,
    Set(Mode),
    /// A value that is no mode (`Warn`, `off`): the configured mode applies, and the user is told.
    Invalid(String),
}

impl NamespaceMode {
    /// What a label value (or its absence) says.
    pub fn of_label(value: Option<&str>) -> NamespaceMode {
        match value {
            None => NamespaceMode::Unset,
            Some(value) => match value.parse() {
                Ok(mode) => NamespaceMode::Set(mode),
                Err(_) => NamespaceMode::Invalid(value.to_string()),
            },
        }
    }

    pub fn mode(&self) -> Option<Mode> {
        match self {
            NamespaceMode::Set(mode) => Some(*mode),
            NamespaceMode::Unset | NamespaceMode::Invalid(_) => None,
        }
    }
}

/// The modes of the labelled namespaces, folded from a watch on Namespaces.
pub type NamespaceModes = Watched<NamespaceMode>;

/// The mode a namespace's label sets; `Unset` for a namespace not (or not yet) seen.
pub fn mode_of(modes: &NamespaceModes, namespace: &str) -> NamespaceMode {
    modes.get(namespace).cloned().unwrap_or(NamespaceMode::Unset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watched::WatchEvent;

    #[test]
    fn labels_say_a_mode_nothing_or_something_invalid() {
        assert_eq!(NamespaceMode::of_label(None), NamespaceMode::Unset);
        assert_eq!(NamespaceMode::of_label(Some("warn")), NamespaceMode::Set(Mode::Warn));
        assert_eq!(NamespaceMode::of_label(Some("Warn")), NamespaceMode::Invalid("Warn".into()));
        assert_eq!(NamespaceMode::of_label(Some("off")).mode(), None);
        let mut modes = NamespaceModes::default();
        modes.apply(WatchEvent::RelistStarted);
        modes.apply(WatchEvent::Listed("shop".into(), NamespaceMode::of_label(Some("audit"))));
        modes.apply(WatchEvent::RelistDone);
        assert_eq!(mode_of(&modes, "shop"), NamespaceMode::Set(Mode::Audit));
        assert_eq!(mode_of(&modes, "elsewhere"), NamespaceMode::Unset);
        modes.apply(WatchEvent::Deleted("shop".into()));
        assert_eq!(
            mode_of(&modes, "shop"),
            NamespaceMode::Unset,
            "a label removed ends with the watch's delete"
        );
    }
}
