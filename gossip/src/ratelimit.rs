//! Placeholder: module `ratelimit` is being written.
