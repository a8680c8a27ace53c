//! The weft router daemon.
#![warn(missing_docs, unreachable_pub)]
