//! Placeholder: module `identity` is being written.
