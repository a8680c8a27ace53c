//! IPAM tests: unit scenarios on the real mesh in `gossip::sim` ([`harness`]), the
//! randomized invariant simulation ([`sim`]), and refusal of bad input ([`input`]).

mod harness;
mod hostile;
mod input;
mod scenarios;
mod sim;
