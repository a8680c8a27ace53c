//! Placeholder: module `handshake` is being written.
