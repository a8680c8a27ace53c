//! Sleeve tests: the codec ([`codec`]: round trips, tampering, replay, malformed inner
//! lists, fuzzing) and sessions ([`session`]: rekey exchanges, confirmation, expiry and
//! limits), with shared helpers in [`util`].

mod codec;
mod session;
mod util;
