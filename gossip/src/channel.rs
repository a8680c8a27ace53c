//! Placeholder: module `channel` is being written.
