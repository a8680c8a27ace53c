//! Placeholder: module `codec` is being written.
