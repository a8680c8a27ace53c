//! Placeholder: module `sim` is being written.
