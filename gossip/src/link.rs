//! Placeholder: module `link` is being written.
