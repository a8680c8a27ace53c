//! MAC learning: which source MAC was last seen behind which peer (or here), with aging.
//!
//! Sans-IO: every call takes `now`. Entries age out [`MacTableConfig::max_age`] after they
//! were last seen; a lookup never returns an aged entry, even before [`MacTable::expire`]
//! has removed it. The table holds at most [`MacTableConfig::capacity`] entries: when it
//! is full, a new MAC evicts the entry seen least recently, so a flood of random source
//! MACs costs bounded memory (and evicts only idle entries first).
//!
//! Eviction and expiry walk a FIFO queue of `(mac, queued_at)` in learning order, giving a
//! refreshed entry a second chance (it is queued again at its last-seen time) instead of
//! reordering on every frame, so learning a known MAC is one hash lookup and no queue work.
//! The queue holds exactly one item per entry, so it is bounded by the capacity too.

use gossip::peer::PeerId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Default time after which an unseen MAC is forgotten (the Linux bridge's default).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Default bound on the number of entries.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Where a MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// On this host (seen on frames captured from our bridge).
    Local,
    /// Behind this peer (seen as the source of frames that peer sent into the overlay).
    Peer(PeerId),
}

/// What [`MacTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// The MAC was unknown (or its entry had aged out).
    New,
    /// The MAC was known with the same owner; its age was reset.
    Refreshed,
    /// The MAC was known behind another owner, and has moved.
    Moved {
        /// The previous owner.
        from: Owner,
    },
    /// A group (multicast or broadcast) or all-zero address: never learned.
    Ignored,
}

/// Aging and size knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacTableConfig {
    /// How long an entry lives after it was last seen.
    pub max_age: Duration,
    /// The most entries the table holds.
    pub capacity: usize,
}

impl Default for MacTableConfig {
    fn default() -> Self {
        MacTableConfig {
            max_age: DEFAULT_MAX_AGE,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: Owner,
    last_seen: Instant,
    /// The time of this entry's (one) item in the queue.
    queued_at: Instant,
}

/// The learned MAC addresses. See the module doc.
#[derive(Debug, Clone, Default)]
pub struct MacTable {
    config: MacTableConfig,
    entries: HashMap<Mac, Entry>,
    queue: VecDeque<(Mac, Instant)>,
    evictions: u64,
}

/// Whether `mac` is a group (multicast or broadcast) address.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 0x01 != 0
}

impl MacTable {
    /// An empty table.
    pub fn new(config: MacTableConfig) -> MacTable {
        MacTable {
            config,
            ..MacTable::default()
        }
    }

    /// Number of entries, including aged ones not yet expired.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many live entries were evicted because the table was full.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Records that `mac` was seen as a source at `owner`.
    pub fn learn(&mut self, now: Instant, mac: Mac, owner: Owner) -> Learned {
        if is_group(&mac) || mac == [0; 6] {
            return Learned::Ignored;
        }
        let max_age = self.config.max_age;
        if let Some(entry) = self.entries.get_mut(&mac) {
            let alive = !aged(entry.last_seen, max_age, now);
            let before = entry.owner;
            entry.owner = owner;
            entry.last_seen = entry.last_seen.max(now);
            return match (alive, before == owner) {
                (false, _) => Learned::New,
                (true, true) => Learned::Refreshed,
                (true, false) => Learned::Moved { from: before },
            };
        }
        if self.entries.len() >= self.config.capacity {
            self.expire(now);
            while self.entries.len() >= self.config.capacity.max(1) {
                if !self.evict_oldest() {
                    break;
                }
            }
        }
        let entry = Entry {
            owner,
            last_seen: now,
            queued_at: now,
        };
        self.entries.insert(mac, entry);
        self.queue.push_back((mac, now));
        Learned::New
    }

    /// Where `mac` lives, unless unknown or aged out.
    pub fn lookup(&self, now: Instant, mac: &Mac) -> Option<Owner> {
        let entry = self.entries.get(mac)?;
        (!aged(entry.last_seen, self.config.max_age, now)).then_some(entry.owner)
    }

    /// When `mac` was last seen here ([`Owner::Local`]), if it lives here.
    pub fn local_seen(&self, mac: &Mac) -> Option<Instant> {
        let entry = self.entries.get(mac)?;
        (entry.owner == Owner::Local).then_some(entry.last_seen)
    }

    /// Removes entries unseen for `max_age`; returns how many. Cost: the entries removed,
    /// plus the refreshed entries met on the way.
    pub fn expire(&mut self, now: Instant) -> usize {
        let max_age = self.config.max_age;
        let mut removed = 0;
        while let Some(&(mac, queued_at)) = self.queue.front() {
            if !aged(queued_at, max_age, now) {
                break;
            }
            self.queue.pop_front();
            let Some(entry) = self.entries.get_mut(&mac) else {
                continue;
            };
            if entry.queued_at != queued_at {
                continue;
            }
            if aged(entry.last_seen, max_age, now) {
                self.entries.remove(&mac);
                removed += 1;
            } else {
                entry.queued_at = entry.last_seen;
                self.queue.push_back((mac, entry.last_seen));
            }
        }
        removed
    }

    /// Forgets every MAC behind `peer` (when it leaves the network); returns how many.
    pub fn forget_peer(&mut self, peer: &PeerId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.owner != Owner::Peer(*peer));
        let entries = &self.entries;
        self.queue
            .retain(|(mac, q)| entries.get(mac).is_some_and(|e| e.queued_at == *q));
        before - self.entries.len()
    }

    /// Evicts the entry seen least recently (second chance for refreshed ones).
    /// Returns `false` if there was nothing to evict.
    fn evict_oldest(&mut self) -> bool {
        while let Some((mac, queued_at)) = self.queue.pop_front() {
            let Some(entry) = self.entries.get_mut(&mac) else {
                continue;
            };
            if entry.queued_at != queued_at {
                continue;
            }
            if entry.last_seen > queued_at {
                entry.queued_at = entry.last_seen;
                self.queue.push_back((mac, entry.last_seen));
                continue;
            }
            self.entries.remove(&mac);
            self.evictions += 1;
            return true;
        }
        false
    }
}

/// Whether something last seen at `seen` has aged out at `now`.
fn aged(seen: Instant, max_age: Duration, now: Instant) -> bool {
    now.saturating_duration_since(seen) >= max_age
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const P: PeerId = PeerId([7; 16]);
    const Q: PeerId = PeerId([8; 16]);

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        [0x02, 0x42, b[0], b[1], b[2], b[3]]
    }

    #[test]
    fn learn_refresh_move_and_ignore() {
        let now = Instant::now();
        let mut table = MacTable::new(MacTableConfig::default());
        assert_eq!(table.learn(now, mac(1), Owner::Local), Learned::New);
        assert_eq!(table.learn(now, mac(1), Owner::Local), Learned::Refreshed);
        assert_eq!(
            table.learn(now, mac(1), Owner::Peer(P)),
            Learned::Moved { from: Owner::Local }
        );
        assert_eq!(table.lookup(now, &mac(1)), Some(Owner::Peer(P)));
        assert_eq!(table.learn(now, [0xff; 6], Owner::Local), Learned::Ignored);
        assert_eq!(
            table.learn(now, [0x01, 0, 0x5e, 0, 0, 1], Owner::Local),
            Learned::Ignored
        );
        assert_eq!(
            table.learn(now, [0x33, 0x33, 0, 0, 0, 1], Owner::Local),
            Learned::Ignored
        );
        assert_eq!(table.learn(now, [0; 6], Owner::Local), Learned::Ignored);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn entries_age_out() {
        let start = Instant::now();
        let config = MacTableConfig {
            max_age: Duration::from_secs(10),
            capacity: 100,
        };
        let mut table = MacTable::new(config);
        table.learn(start, mac(1), Owner::Peer(P));
        table.learn(start, mac(2), Owner::Peer(Q));
        table.learn(start + Duration::from_secs(8), mac(2), Owner::Peer(Q));
        let t10 = start + Duration::from_secs(10);
        assert_eq!(table.lookup(t10, &mac(1)), None, "aged even before expire");
        assert_eq!(table.lookup(t10, &mac(2)), Some(Owner::Peer(Q)));
        assert_eq!(table.expire(t10), 1);
        assert_eq!(table.len(), 1);
        assert_eq!(table.expire(start + Duration::from_secs(17)), 0);
        assert_eq!(table.expire(start + Duration::from_secs(18)), 1);
        assert!(table.is_empty() && table.queue.is_empty());
        // An aged entry seen again is new, whatever its old owner.
        table.learn(start, mac(3), Owner::Peer(P));
        assert_eq!(table.learn(t10, mac(3), Owner::Local), Learned::New);
    }

    /// A flood of random source MACs never grows the table past its capacity, and the
    /// entries still in use survive it.
    #[test]
    fn random_mac_flood_is_bounded() {
        let start = Instant::now();
        let config = MacTableConfig {
            max_age: Duration::from_secs(300),
            capacity: 1000,
        };
        let mut table = MacTable::new(config);
        let mut rng = StdRng::seed_from_u64(1);
        for i in 0..100_000u32 {
            let now = start + Duration::from_millis(u64::from(i));
            table.learn(now, mac(0), Owner::Local);
            let mut random: Mac = rng.gen();
            random[0] &= 0xfe;
            table.learn(now, random, Owner::Peer(P));
            assert!(table.len() <= 1000);
            assert_eq!(table.queue.len(), table.len());
        }
        let end = start + Duration::from_secs(100);
        assert_eq!(table.lookup(end, &mac(0)), Some(Owner::Local));
        assert!(table.evictions() > 90_000);
    }

    #[test]
    fn evicts_the_least_recently_seen() {
        let start = Instant::now();
        let config = MacTableConfig {
            max_age: Duration::from_secs(300),
            capacity: 3,
        };
        let mut table = MacTable::new(config);
        let at = |s: u64| start + Duration::from_secs(s);
        table.learn(at(0), mac(1), Owner::Local);
        table.learn(at(1), mac(2), Owner::Local);
        table.learn(at(2), mac(3), Owner::Local);
        table.learn(at(3), mac(1), Owner::Local); // refreshed: second chance
        table.learn(at(4), mac(4), Owner::Local);
        assert_eq!(table.lookup(at(4), &mac(2)), None);
        for n in [1, 3, 4] {
            assert_eq!(table.lookup(at(4), &mac(n)), Some(Owner::Local));
        }
    }

    #[test]
    fn forget_peer_removes_its_macs() {
        let now = Instant::now();
        let mut table = MacTable::new(MacTableConfig::default());
        table.learn(now, mac(1), Owner::Peer(P));
        table.learn(now, mac(2), Owner::Peer(Q));
        table.learn(now, mac(3), Owner::Peer(P));
        assert_eq!(table.forget_peer(&P), 2);
        assert_eq!(table.lookup(now, &mac(2)), Some(Owner::Peer(Q)));
        assert_eq!(table.queue.len(), 1);
    }
}
