//! Placeholder: module `crdt` is being written.
