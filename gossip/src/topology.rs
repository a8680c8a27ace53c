//! Placeholder: module `topology` is being written.
