//! Placeholder: module `routes` is being written.
