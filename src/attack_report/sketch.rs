//! The report's bounded-memory aggregates: how many distinct sources (`Distinct`: exact while small, then
//! HyperLogLog) and which keys weigh most (`Top`: Space-Saving with a fixed number of counters).
//!
//! Why: a day's window may hold millions of source addresses, chosen by the attacker. Exact sets or SQLite's
//! GROUP BY grow (or spill to temp B-trees) with them; these do not. Their building blocks (the keyed address
//! hash, the HyperLogLog registers and estimate) are the policy's, in `policy::sketch`, so that the report and
//! the decisions it explains count distinct sources the same way.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;

use crate::addr::normalise;
use crate::policy::sketch::{hll_estimate, hll_insert, AddrHasher};

/// 2^12 one-byte registers (4 KiB): about 1.6% standard error once estimating.
pub const DISTINCT_PRECISION: u8 = 12;
/// Exact (a set of 64-bit keyed hashes) up to this many distinct addresses. Chosen so that the exact phase's
/// table (at most `2 * EXACT_LIMIT` slots of 8 bytes, kept at most half full) is no larger than the registers
/// it turns into: one `Distinct` never holds more than 4 KiB of data, exact or not. Below the limit the count
/// is exact up to a collision of keyed 64-bit hashes (about n^2 / 2^65: never, in practice); the small sets of
/// a report (a /24's hosts, a quiet bucket) stay exact, and only the floods are estimated.
pub const EXACT_LIMIT: usize = 256;
const MAX_SLOTS: usize = 2 * EXACT_LIMIT;
/// A free slot in the exact table; a hash that happens to be 0 is stored as 1 (one more collision in 2^64).
const FREE: u64 = 0;

/// Distinct addresses: exact below [`EXACT_LIMIT`], then a HyperLogLog of 2^[`DISTINCT_PRECISION`] registers.
/// Memory: at most 4 KiB of data whatever is inserted (see [`EXACT_LIMIT`]); an empty one allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Distinct {
    /// Open-addressing table of hashes (linear probing), grown by doubling up to `MAX_SLOTS`.
    exact: Vec<u64>,
    len: usize,
    /// Non-empty once the set passed `EXACT_LIMIT`; `exact` is dropped then.
    registers: Box<[u8]>,
}

impl Distinct {
    /// The keyed hash of an address (the policy's: secret per process, so an attacker cannot pick addresses
    /// that collide), computed once per row and shared by every `Distinct` the row feeds.
    pub fn hash(addr: IpAddr) -> u64 {
        AddrHasher::process().hash(normalise(addr))
    }

    #[cfg(test)]
    pub fn insert(&mut self, addr: IpAddr) {
        self.insert_hash(Distinct::hash(addr));
    }

    /// Inserts an address by its [`Distinct::hash`].
    pub fn insert_hash(&mut self, hash: u64) {
        if !self.registers.is_empty() {
            hll_insert(&mut self.registers, DISTINCT_PRECISION, hash);
            return;
        }
        let hash = if hash == FREE { 1 } else { hash };
        if self.exact.is_empty() {
            self.exact = vec![FREE; 16];
        }
        if !probe_insert(&mut self.exact, hash) {
            return;
        }
        self.len += 1;
        if self.len > EXACT_LIMIT {
            self.estimate_from_now();
        } else if self.len * 2 > self.exact.len() && self.exact.len() < MAX_SLOTS {
            let mut grown = vec![FREE; self.exact.len() * 2];
            for &h in self.exact.iter().filter(|h| **h != FREE) {
                probe_insert(&mut grown, h);
            }
            self.exact = grown;
        }
    }

    /// The number of distinct addresses inserted: exact while [`Distinct::is_exact`], else estimated.
    pub fn count(&self) -> u64 {
        if self.registers.is_empty() {
            self.len as u64
        } else {
            hll_estimate(&self.registers)
        }
    }

    pub fn is_exact(&self) -> bool {
        self.registers.is_empty()
    }

    /// Turns the exact set into registers holding the same hashes.
    fn estimate_from_now(&mut self) {
        let mut registers = vec![0u8; 1 << DISTINCT_PRECISION].into_boxed_slice();
        for &h in self.exact.iter().filter(|h| **h != FREE) {
            hll_insert(&mut registers, DISTINCT_PRECISION, h);
        }
        self.registers = registers;
        self.exact = Vec::new();
    }

    /// Folds in the addresses of `other` (the union: as if both had been inserted here).
    pub fn merge(&mut self, other: &Distinct) {
        if other.registers.is_empty() {
            for &h in other.exact.iter().filter(|h| **h != FREE) {
                self.insert_hash(h);
            }
            return;
        }
        if self.registers.is_empty() {
            self.estimate_from_now();
        }
        for (mine, theirs) in self.registers.iter_mut().zip(other.registers.iter()) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// Bytes of data held (the table or the registers).
    #[cfg(test)]
    pub fn memory_bytes(&self) -> usize {
        self.exact.capacity() * std::mem::size_of::<u64>() + self.registers.len()
    }
}

/// Inserts `hash` (not `FREE`) into a table with a free slot; false if it was there already.
fn probe_insert(table: &mut [u64], hash: u64) -> bool {
    let mask = table.len() - 1;
    // The low bits pick the slot: the HyperLogLog uses the high ones, and the hash mixes both fully.
    let mut pos = hash as usize & mask;
    loop {
        match table[pos] {
            FREE => {
                table[pos] = hash;
                return true;
            }
            h if h == hash => return false,
            _ => pos = (pos + 1) & mask,
        }
    }
}

/// The keys with the most weight, by Space-Saving (Metwally et al. 2005) over `capacity` counters, each with a
/// companion value `A` (a source's failures, a prefix's distinct sources) that starts afresh when its counter
/// changes hands.
///
/// While no counter has changed hands (fewer distinct keys than counters) every figure is exact. After that the
/// counts reported are lower bounds (`count - error`: what the key surely weighed), so are the companions (what
/// came while the key was monitored), and any key above total/capacity is surely listed. Memory: `capacity`
/// counters, fixed whatever arrives (plus the size of the keys themselves: the caller bounds those).
///
/// The smallest counter is found through a min-heap of the counters, so a takeover or an increment costs
/// O(log capacity), not a scan: a long tail of sources evicts on nearly every row. Counters are found by a
/// 64-bit keyed hash of their key (secret per process), computed once per row by the caller for every sketch
/// it feeds ([`Top::add_hashed`]) or here ([`Top::add`]); two keys of one hash would share a counter, which
/// with keyed 64-bit hashes happens about n^2 / 2^65 of the time and cannot be aimed at.
#[derive(Debug, Clone)]
pub struct Top<K, A> {
    capacity: usize,
    random: RandomState,
    index: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    hashes: Vec<u64>,
    keys: Vec<K>,
    counts: Vec<u64>,
    errors: Vec<u64>,
    companions: Vec<A>,
    /// Counters ordered as a binary min-heap by count; `place[c]` is counter c's position in it.
    heap: Vec<u32>,
    place: Vec<u32>,
    evicted: bool,
}

/// The hasher of a map whose keys are already keyed, well-mixed hashes: passes them through.
#[derive(Debug, Clone, Copy, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    /// Only u64 keys are hashed here; anything else is folded in all the same rather than dropped.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

impl<K: Hash + Eq + Clone, A: Default> Top<K, A> {
    pub fn new(capacity: usize) -> Top<K, A> {
        assert!(capacity > 0 && capacity < u32::MAX as usize, "a Top needs between 1 and 2^32 counters");
        Top {
            capacity,
            random: RandomState::new(),
            index: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            hashes: Vec::with_capacity(capacity),
            keys: Vec::with_capacity(capacity),
            counts: Vec::with_capacity(capacity),
            errors: Vec::with_capacity(capacity),
            companions: Vec::with_capacity(capacity),
            heap: Vec::with_capacity(capacity),
            place: Vec::with_capacity(capacity),
            evicted: false,
        }
    }

    /// Adds `weight` to `key` and returns its companion value to update. Not to be mixed with
    /// [`Top::add_hashed`] on one `Top`: the hashes differ.
    pub fn add<Q>(&mut self, key: &Q, weight: u64) -> &mut A
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.random.hash_one(key);
        self.add_hashed(hash, key, weight)
    }

    /// [`Top::add`] with the key's hash computed by the caller: a keyed hash secret to the process, such as
    /// [`Distinct::hash`].
    pub fn add_hashed<Q>(&mut self, hash: u64, key: &Q, weight: u64) -> &mut A
    where
        K: Borrow<Q>,
        Q: Eq + ToOwned<Owned = K> + ?Sized,
    {
        let c = if let Some(&c) = self.index.get(&hash) {
            let c = c as usize;
            self.counts[c] = self.counts[c].saturating_add(weight);
            c
        } else if self.keys.len() < self.capacity {
            let c = self.keys.len();
            self.index.insert(hash, c as u32);
            self.hashes.push(hash);
            self.keys.push(key.to_owned());
            self.counts.push(weight);
            self.errors.push(0);
            self.companions.push(A::default());
            self.heap.push(c as u32);
            self.place.push(c as u32);
            self.sift_up(c);
            c
        } else {
            // The newcomer takes over the smallest counter and inherits its count as possible error: what keeps
            // every key above total/capacity in the summary.
            self.evicted = true;
            let c = self.heap[0] as usize;
            let floor = self.counts[c];
            self.index.remove(&self.hashes[c]);
            self.index.insert(hash, c as u32);
            self.hashes[c] = hash;
            self.keys[c] = key.to_owned();
            self.counts[c] = floor.saturating_add(weight);
            self.errors[c] = floor;
            self.companions[c] = A::default();
            c
        };
        self.sift_down(self.place[c] as usize);
        &mut self.companions[c]
    }

    /// Whether every count is exact: no counter ever changed hands.
    pub fn is_exact(&self) -> bool {
        !self.evicted
    }

    /// An empty `Top` of the same capacity and the same key hashing, to fold another part of the same stream
    /// and [`Top::merge`] back.
    pub fn sibling(&self) -> Top<K, A> {
        Top { random: self.random.clone(), ..Top::new(self.capacity) }
    }

    /// Folds in `other`, a [`Top::sibling`] that saw another part of the stream, as if one `Top` had seen both
    /// (the parallel Space-Saving merge of Cafaro, Pulimeno and Tempesta 2016): a key in both sums its counts
    /// and errors; a key missing from one summary may have weighed up to that summary's smallest counter there
    /// (0 if it never evicted, so it saw every key it was given), which is added to its count and to its error
    /// alike; then the `capacity` heaviest are kept. What is reported (`count - error`) stays a lower bound, and
    /// a key above total/capacity of the whole stream stays listed. Companions of a key in both are combined by
    /// `combine`.
    pub fn merge(&mut self, other: Top<K, A>, combine: impl Fn(&mut A, A)) {
        let floor = |t: &Top<K, A>| if t.evicted { t.heap.first().map_or(0, |&c| t.counts[c as usize]) } else { 0 };
        let (mine_floor, other_floor) = (floor(self), floor(&other));
        let evicted = self.evicted || other.evicted;
        let mine = std::mem::replace(self, self.sibling());
        let index = mine.index.clone();
        // (hash, key, count, error, companion, seen on the other side too).
        let mut counters: Vec<(u64, K, u64, u64, A, bool)> =
            mine.into_counters().map(|(h, k, n, e, a)| (h, k, n, e, a, false)).collect();
        for (hash, key, count, error, companion) in other.into_counters() {
            match index.get(&hash) {
                Some(&c) => {
                    let m = &mut counters[c as usize];
                    m.2 = m.2.saturating_add(count);
                    m.3 = m.3.saturating_add(error);
                    combine(&mut m.4, companion);
                    m.5 = true;
                }
                None => counters.push((
                    hash,
                    key,
                    count.saturating_add(mine_floor),
                    error.saturating_add(mine_floor),
                    companion,
                    true,
                )),
            }
        }
        for m in counters.iter_mut().filter(|m| !m.5) {
            m.2 = m.2.saturating_add(other_floor);
            m.3 = m.3.saturating_add(other_floor);
        }
        let dropped = counters.len() > self.capacity;
        if dropped {
            counters.sort_by_key(|c| std::cmp::Reverse(c.2));
            counters.truncate(self.capacity);
        }
        self.evicted = evicted || dropped;
        for (c, (hash, key, count, error, companion, _)) in counters.into_iter().enumerate() {
            self.index.insert(hash, c as u32);
            self.hashes.push(hash);
            self.keys.push(key);
            self.counts.push(count);
            self.errors.push(error);
            self.companions.push(companion);
            self.heap.push(c as u32);
            self.place.push(c as u32);
            self.sift_up(c);
        }
    }

    /// Every counter as (hash, key, count, error, companion), in counter order.
    fn into_counters(self) -> impl Iterator<Item = (u64, K, u64, u64, A)> {
        let (counts, errors) = (self.counts, self.errors);
        self.hashes
            .into_iter()
            .zip(self.keys)
            .zip(counts.into_iter().zip(errors))
            .zip(self.companions)
            .map(|(((h, k), (n, e)), a)| (h, k, n, e, a))
    }

    /// The `n` heaviest keys with what each surely weighed and its companion, heaviest first (ties by `order`).
    pub fn top(&self, n: usize, order: impl Fn(&K, &K) -> std::cmp::Ordering) -> Vec<(&K, u64, &A)> {
        let mut all: Vec<(&K, u64, &A)> = (0..self.keys.len())
            .map(|c| (&self.keys[c], self.counts[c] - self.errors[c], &self.companions[c]))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| order(a.0, b.0)));
        all.truncate(n);
        all
    }

    /// Every key monitored with what it surely weighed (for totals over all of them).
    pub fn iter(&self) -> impl Iterator<Item = (&K, u64, &A)> {
        (0..self.keys.len()).map(|c| (&self.keys[c], self.counts[c] - self.errors[c], &self.companions[c]))
    }

    fn less(&self, i: usize, j: usize) -> bool {
        self.counts[self.heap[i] as usize] < self.counts[self.heap[j] as usize]
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.heap.swap(i, j);
        self.place[self.heap[i] as usize] = i as u32;
        self.place[self.heap[j] as usize] = j as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.less(i, parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    /// Counts only grow, so a counter only ever moves down the heap.
    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if l < n && self.less(l, smallest) {
                smallest = l;
            }
            if r < n && self.less(r, smallest) {
                smallest = r;
            }
            if smallest == i {
                return;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::net::Ipv4Addr;

    use super::*;

    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An address of 198.18.0.0/15 (131,072 of them).
    fn benchmark_addr(i: u64) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (i as u32 & 0x1_ffff)))
    }

    #[test]
    fn distinct_is_exact_up_to_the_limit_and_ignores_repeats() {
        let mut d = Distinct::default();
        assert_eq!((d.count(), d.memory_bytes()), (0, 0), "an empty one allocates nothing");
        for round in 0..3 {
            for i in 0..EXACT_LIMIT as u64 {
                d.insert(benchmark_addr(i));
            }
            assert_eq!(d.count(), EXACT_LIMIT as u64, "round {round}");
            assert!(d.is_exact());
        }
        // A mapped IPv6 address is its IPv4 address.
        d.insert("::ffff:198.18.0.1".parse().unwrap());
        assert_eq!(d.count(), EXACT_LIMIT as u64);
        d.insert("2001:db8::1".parse().unwrap());
        assert!(!d.is_exact(), "one past the limit: estimating");
        let n = d.count();
        assert!((n as f64 - 257.0).abs() <= 257.0 * 0.05, "{n}");
    }

    #[test]
    fn distinct_estimates_100k_random_addresses_within_5_percent() {
        // 1.6% standard error at 2^12 registers: 5% is three deviations.
        for seed in [1u64, 2, 3] {
            let mut state = seed;
            let mut d = Distinct::default();
            let mut truth = HashSet::new();
            while truth.len() < 100_000 {
                let bits = splitmix(&mut state);
                let addr = if bits & 1 == 0 {
                    benchmark_addr(bits >> 1)
                } else {
                    IpAddr::V6((0x2001_0db8_u128 << 96 | u128::from(bits >> 1)).into())
                };
                truth.insert(addr);
                d.insert(addr);
                // Repeats: every address again, which must not move the estimate.
                d.insert(addr);
            }
            let n = d.count() as f64;
            assert!((n - 100_000.0).abs() <= 5_000.0, "seed {seed}: {n}");
        }
    }

    #[test]
    fn distinct_memory_is_bounded_whatever_is_inserted() {
        let mut d = Distinct::default();
        let mut most = 0;
        for i in 0..200_000u64 {
            d.insert(IpAddr::V6((0x2001_0db8_u128 << 96 | u128::from(i)).into()));
            most = most.max(d.memory_bytes());
        }
        assert_eq!(most, 1 << DISTINCT_PRECISION, "never more than the registers");
        assert_eq!(d.memory_bytes(), 1 << DISTINCT_PRECISION);
    }

    #[test]
    fn top_is_exact_while_nothing_is_evicted() {
        let mut top: Top<IpAddr, u64> = Top::new(64);
        for i in 0..50u64 {
            for _ in 0..=i {
                *top.add(&benchmark_addr(i), 2) += 1;
            }
        }
        assert!(top.is_exact());
        let listed = top.top(3, |a, b| a.cmp(b));
        let got: Vec<(IpAddr, u64, u64)> = listed.iter().map(|(k, n, f)| (**k, *n, **f)).collect();
        assert_eq!(got, [(benchmark_addr(49), 100, 50), (benchmark_addr(48), 98, 49), (benchmark_addr(47), 96, 48)]);
    }

    #[test]
    fn top_finds_the_heavy_keys_among_100k_with_lower_bounds() {
        // 20 heavy sources sending 300 each among 100,000 random ones sending 1-3: 4,096 counters keep all the
        // heavy ones (each far above total/capacity), their counts never above the truth.
        let mut top: Top<IpAddr, u64> = Top::new(4096);
        let mut truth: HashMap<IpAddr, u64> = HashMap::new();
        let mut state = 7u64;
        let heavy: Vec<IpAddr> = (0..20).map(|i| format!("203.0.113.{}", i + 1).parse().unwrap()).collect();
        for step in 0..100_000u64 {
            let bits = splitmix(&mut state);
            let addr = IpAddr::V6((0x2001_0db8_u128 << 96 | u128::from(bits)).into());
            let w = 1 + bits % 3;
            *truth.entry(addr).or_default() += w;
            top.add(&addr, w);
            if step % 200 == 0 {
                for h in &heavy {
                    *truth.entry(*h).or_default() += 3;
                    top.add(h, 3);
                }
            }
        }
        assert!(!top.is_exact());
        assert!(top.iter().count() <= 4096, "fixed capacity");
        let listed = top.top(20, |a, b| a.cmp(b));
        let mut found: Vec<IpAddr> = listed.iter().map(|(k, _, _)| **k).collect();
        found.sort();
        assert_eq!(found, heavy, "the 20 heavy sources are the top 20");
        for (k, n, _) in top.iter() {
            assert!(n <= truth[k], "{k}: {n} reported, {} sent", truth[k]);
        }
        for (k, n, _) in &listed {
            // A heavy source keeps its counter once it has one: its bound misses at most its first packets.
            assert!(*n + 10 >= truth[*k], "{k}: {n} of {}", truth[*k]);
        }
    }

    #[test]
    fn distinct_merged_counts_as_one_that_saw_both() {
        // Sizes on either side of the exact limit: exact + exact, exact + estimating, estimating + estimating.
        for (a, b) in [(100u64, 100u64), (200, 200), (100, 5000), (5000, 100), (20_000, 30_000)] {
            let (mut left, mut right, mut whole) = (Distinct::default(), Distinct::default(), Distinct::default());
            // Overlapping halves: the last 50 of the left are the first 50 of the right.
            for i in 0..a {
                left.insert(benchmark_addr(i));
                whole.insert(benchmark_addr(i));
            }
            for i in a - 50..a - 50 + b {
                right.insert(benchmark_addr(i));
                whole.insert(benchmark_addr(i));
            }
            left.merge(&right);
            assert_eq!((left.count(), left.is_exact()), (whole.count(), whole.is_exact()), "{a} + {b}");
        }
    }

    #[test]
    fn top_merged_keeps_lower_bounds_and_the_heavy_keys() {
        // One stream cut in two, each half into its own Top (as two threads read a window), merged: the 20 heavy
        // keys stay the top 20, and no count reported exceeds what the key sent.
        let heavy: Vec<IpAddr> = (0..20).map(|i| format!("203.0.113.{}", i + 1).parse().unwrap()).collect();
        let mut truth: HashMap<IpAddr, u64> = HashMap::new();
        let mut left: Top<IpAddr, u64> = Top::new(1024);
        let mut right = left.sibling();
        let mut state = 11u64;
        for step in 0..60_000u64 {
            let half = if step < 30_000 { &mut left } else { &mut right };
            let bits = splitmix(&mut state);
            let addr = IpAddr::V6((0x2001_0db8_u128 << 96 | u128::from(bits % 20_000)).into());
            *truth.entry(addr).or_default() += 1;
            *half.add(&addr, 1) += 1;
            if step % 100 == 0 {
                for h in &heavy {
                    *truth.entry(*h).or_default() += 2;
                    *half.add(h, 2) += 1;
                }
            }
        }
        left.merge(right, |mine, theirs| *mine += theirs);
        assert!(!left.is_exact());
        assert!(left.iter().count() <= 1024, "still at most its capacity");
        for (k, n, failures) in left.iter() {
            assert!(n <= truth[k], "{k}: {n} reported, {} sent", truth[k]);
            assert!(*failures <= truth[k]);
        }
        let mut found: Vec<IpAddr> = left.top(20, |a, b| a.cmp(b)).iter().map(|(k, _, _)| **k).collect();
        found.sort();
        assert_eq!(found, heavy);

        // Below capacity on both sides, a merge is exact: counts and companions add up.
        let mut a: Top<String, u64> = Top::new(8);
        let mut b = a.sibling();
        *a.add("admin", 3) += 1;
        *a.add("root", 1) += 1;
        *b.add("admin", 2) += 1;
        *b.add("test", 4) += 1;
        a.merge(b, |mine, theirs| *mine += theirs);
        assert!(a.is_exact());
        let got: Vec<(String, u64, u64)> =
            a.top(8, |x, y| x.cmp(y)).into_iter().map(|(k, n, c)| (k.clone(), n, *c)).collect();
        assert_eq!(got, [("admin".into(), 5, 2), ("test".into(), 4, 1), ("root".into(), 1, 1)]);
    }

    #[test]
    fn top_counts_borrowed_string_keys() {
        let mut top: Top<String, ()> = Top::new(2);
        top.add("admin", 5);
        top.add("root", 3);
        top.add("admin", 1);
        assert!(top.is_exact());
        top.add("test", 1);
        assert!(!top.is_exact(), "a third key takes over the smallest counter");
        let got: Vec<(String, u64)> = top.top(5, |a, b| a.cmp(b)).into_iter().map(|(k, n, _)| (k.clone(), n)).collect();
        assert_eq!(got, [("admin".to_string(), 6), ("test".to_string(), 1)]);
    }
}
