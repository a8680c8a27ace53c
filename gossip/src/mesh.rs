//! Placeholder: module `mesh` is being written.
