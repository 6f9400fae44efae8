//! Parsed image references, remembered by their text. A cluster runs a few hundred distinct
//! images and every admission names some of them again: parsing one (validation and three
//! allocations) cost about a microsecond, a tenth of a warm 10-image admission's own work, for an
//! answer that never changes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{ImageRef, ReferenceError};

/// Distinct references kept before the memo starts over. Image text comes from whoever creates
/// a pod, so both the count and the length of what is kept are bounded: at most
/// `CAPACITY × MAX_REMEMBERED_LEN` bytes of text (1 MiB), however many images are sent.
const CAPACITY: usize = 2048;
/// Longer than any valid reference (a 255-byte name, a 128-byte tag and a sha512 digest); longer
/// input is parsed every time.
const MAX_REMEMBERED_LEN: usize = 512;

pub type Parsed = Arc<Result<ImageRef, ReferenceError>>;

#[derive(Default)]
pub struct ReferenceMemo {
    parsed: Mutex<HashMap<Box<str>, Parsed>>,
}

impl ReferenceMemo {
    /// What [`ImageRef::parse`] says about `input`, from memory when it was asked before.
    pub fn parse(&self, input: &str) -> Parsed {
        if input.len() > MAX_REMEMBERED_LEN {
            return Arc::new(ImageRef::parse(input));
        }
        if let Some(known) = self.parsed.lock().ok().and_then(|parsed| parsed.get(input).cloned()) {
            return known;
        }
        let parsed = Arc::new(ImageRef::parse(input));
        // A poisoned lock only costs the memo: the answer is still right.
        if let Ok(mut remembered) = self.parsed.lock() {
            // Starting over is cheap and cannot be steered: a full memo of one-off names (a
            // flood of made-up images) only costs the next admissions a parse each.
            if remembered.len() >= CAPACITY {
                remembered.clear();
            }
            remembered.insert(input.into(), parsed.clone());
        }
        parsed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.parsed.lock().map_or(0, |parsed| parsed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_the_parser_does() {
        let memo = ReferenceMemo::default();
        let inputs = [
            "nginx",
            "nginx:1.27",
            "registry.example.com:5000/team/api:v2",
            "ghcr.io/org/app@sha256:0123456789012345678901234567890123456789012345678901234567890123",
            "Nginx",
            "",
            "a b",
            "localhost/x:-bad",
        ];
        for _ in 0..2 {
            for input in inputs {
                assert_eq!(*memo.parse(input), ImageRef::parse(input), "{input:?}");
            }
        }
        assert_eq!(memo.len(), inputs.len());
    }

    #[test]
    fn a_remembered_reference_is_shared() {
        let memo = ReferenceMemo::default();
        assert!(Arc::ptr_eq(&memo.parse("nginx:1.27"), &memo.parse("nginx:1.27")));
        assert!(!Arc::ptr_eq(&memo.parse("nginx:1.27"), &memo.parse("nginx:1.28")));
    }

    #[test]
    fn memory_is_bounded_in_count_and_length() {
        let memo = ReferenceMemo::default();
        for index in 0..CAPACITY * 3 + 7 {
            let input = format!("r.example/app:v{index}");
            assert_eq!(*memo.parse(&input), ImageRef::parse(&input));
            assert!(memo.len() <= CAPACITY);
        }
        let long = format!("r.example/{}:v1", "a/".repeat(MAX_REMEMBERED_LEN));
        let before = memo.len();
        assert_eq!(*memo.parse(&long), ImageRef::parse(&long));
        assert_eq!(memo.len(), before, "input past {MAX_REMEMBERED_LEN} bytes is not kept");
    }
}
