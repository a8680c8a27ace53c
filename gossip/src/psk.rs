//! Placeholder: module `psk` is being written.
