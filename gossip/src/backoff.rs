//! Placeholder: module `backoff` is being written.
