//! Placeholder: module `connection_maker` is being written.
