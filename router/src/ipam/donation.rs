//! Donation: a peer short of free space asks the owners of the range it wants, one at a
//! time, for part of their free space; an owner gives a share of what it can spare, and
//! a receiver accepts only space the sender owns.

use super::addr::AddrRange;
use super::allocator::{Asking, Ipam};
use super::ring::{next_version, Entries, Entry, MAX_RING_ENTRIES};
use super::space;
use super::space::free_count;
use super::wire::UnicastMsg;
use gossip::peer::PeerId;
use std::collections::BTreeSet;

impl Ipam {
    /// Asks a donor for space inside `within`, unless a request is already out.
    pub(super) fn ask_for_space(&mut self, within: AddrRange) {
        if self.asking.is_some() {
            return;
        }
        self.ask_next(within, BTreeSet::new());
    }

    pub(super) fn ask_next(&mut self, within: AddrRange, mut tried: BTreeSet<PeerId>) {
        let Some(ring) = self.ring.as_ref() else {
            return;
        };
        let reach = self.reachable.as_ref();
        let retry_at = self.now + self.config.donation_retry;
        let Some(donor) = space::choose_donor(ring, &self.me, reach, &tried, within, &mut self.rng)
        else {
            // Every candidate was asked this round (or there is none). Starting over at
            // once would make peers that keep their last address answer "no" in a tight
            // loop; wait a retry interval (or a donation) before the next round.
            self.asking = (!tried.is_empty()).then_some(Asking {
                donor: None,
                within,
                retry_at,
                tried: BTreeSet::new(),
            });
            return;
        };
        tried.insert(donor);
        let msg = UnicastMsg::SpaceRequest {
            ring: ring.id().0,
            within,
        };
        self.unicast(donor, &msg);
        self.asking = Some(Asking {
            donor: Some(donor),
            within,
            retry_at,
            tried,
        });
    }

    /// Gives `to` part of our free space inside `within`, or says no.
    pub(super) fn donate(&mut self, to: PeerId, within: super::AddrRange) {
        let ring_id = self.ring_id();
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let mine = ring.owned_by(&self.me);
        let Some(chunk) = space::donation(&mine, &self.by_addr, within) else {
            self.unicast(to, &UnicastMsg::Denied { ring: ring_id });
            return;
        };
        let Some((r, cur)) = ring.owner_of(chunk.start).map(|(r, e)| (r, *e)) else {
            return;
        };
        let mut delta = Entries::new();
        let tail = super::AddrRange {
            start: chunk.end,
            end: r.end,
        };
        if !tail.is_empty() {
            let free = free_count(tail, &self.by_addr);
            delta.insert(
                tail.start,
                Entry {
                    owner: self.me,
                    version: 1,
                    free,
                },
            );
        }
        let given = Entry {
            owner: to,
            version: 1,
            free: chunk.len(),
        };
        // A donation may add two tokens; a full ring takes none.
        let new_tokens = usize::from(chunk.start != r.start) + usize::from(chunk.end != r.end);
        if ring.entries().len() + new_tokens > MAX_RING_ENTRIES {
            self.stats.ring_full += 1;
            self.unicast(to, &UnicastMsg::Denied { ring: ring_id });
            return;
        }
        // The head token is rewritten: at the version limit it cannot be, so say no.
        let Some(bumped) = next_version(cur.version) else {
            self.stats.version_exhausted += 1;
            self.unicast(to, &UnicastMsg::Denied { ring: ring_id });
            return;
        };
        if chunk.start == r.start {
            delta.insert(
                r.start,
                Entry {
                    version: bumped,
                    ..given
                },
            );
        } else {
            delta.insert(chunk.start, given);
            let head = super::AddrRange {
                start: r.start,
                end: chunk.start,
            };
            let free = free_count(head, &self.by_addr);
            delta.insert(
                r.start,
                Entry {
                    version: bumped,
                    free,
                    ..cur
                },
            );
        }
        for (t, e) in &delta {
            ring.set(*t, *e);
        }
        self.outbox.dirty();
        self.stats.donations_given += 1;
        self.unicast(
            to,
            &UnicastMsg::Space {
                ring: ring_id,
                entries: delta.clone(),
            },
        );
        self.broadcast_entries(delta);
    }

    /// Whether every token in a donation from `from` lies in space `from` owns in our
    /// replica (a token it rewrites, or a new one inside its range).
    pub(super) fn owned_by_sender(&self, from: PeerId, entries: &Entries) -> bool {
        let Some(ring) = self.ring.as_ref() else {
            return false;
        };
        entries.keys().all(|t| match ring.entry(*t) {
            Some(cur) => cur.owner == from,
            None => ring.owner_of(*t).is_some_and(|(_, o)| o.owner == from),
        })
    }
}
