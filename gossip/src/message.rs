//! Placeholder: module `message` is being written.
