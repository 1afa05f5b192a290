//! Between probe windows (`--window`), following the blocks recorded in earlier windows: their
//! frees are not seen then, so each one's chunk is read from outside (`chunks`) and the dead
//! ones leave the tables as if their free had been seen. Runs while no allocation or free
//! probe is attached (just before a window opens).

use std::collections::{BTreeMap, HashMap};

use tracer_ebpf::{AllocInfo, AllocKey};

use crate::chunks::{self, Block, Death, Fingerprint};
use crate::collector::Collector;
use crate::leaks::Outlived;
use crate::remote::ProcessMemory;

/// Blocks checked per process per sweep, at most (a bounded cost per period; the rest wait).
const MAX_PER_SWEEP: usize = 200_000;

#[derive(Default)]
pub struct Sweeper {
    /// Per record (and the time it was made, so a new record at the address starts afresh): the
    /// fingerprint taken when it was first followed.
    fingerprints: HashMap<AllocKey, (u64, Option<Fingerprint>)>,
    /// Per process, its tcache key once found.
    tcache_keys: HashMap<u32, u64>,
    /// Deaths inferred so far, by what showed them.
    pub deaths: BTreeMap<Death, u64>,
    /// The blocks outstanding after the last sweep (a window had closed on them), to see which
    /// of them die later, whether a later window saw the free or a sweep inferred it.
    survivors: HashMap<AllocKey, AllocInfo>,
    /// Per raw stack id: allocations that outlived a window, and how many of those died later.
    /// A leak's never die; a cache's or a queue's do, even when the chunk is handed out again
    /// to an identical block that keeps its address looking alive.
    pub turnover: HashMap<u64, Outlived>,
}

impl Sweeper {
    /// Checks every outstanding block of `pids` and drops the dead ones. `sample_bytes`: the
    /// sampling period (a sampled record's size is not the block's).
    pub fn sweep(&mut self, collector: &mut Collector, pids: &[u32], sample_bytes: u64) {
        let records = collector.records_of(pids);
        let mut dead = Vec::new();
        for &pid in pids {
            // mmap records (page-aligned: pymalloc arenas) have no chunk header; munmap is seen.
            let mine: Vec<&(AllocKey, AllocInfo)> = records
                .iter()
                .filter(|(k, _)| k.tgid == pid && !k.addr.is_multiple_of(4096))
                .take(MAX_PER_SWEEP)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mem = ProcessMemory::new(pid);
            let key = self.tcache_key(pid, &mem);
            let blocks: Vec<Block> = mine
                .iter()
                .map(|(k, info)| {
                    let exact = sample_bytes == 0 || (info.count == 1 && info.size >= sample_bytes);
                    Block { addr: k.addr, size: exact.then_some(info.size), fingerprint: self.follow(&mem, k, info) }
                })
                .collect();
            for (verdict, record) in chunks::check(&mem, &blocks, key).into_iter().zip(&mine) {
                if let Some(why) = verdict {
                    *self.deaths.entry(why).or_default() += 1;
                    dead.push(**record);
                }
            }
        }
        let outstanding: std::collections::HashSet<&AllocKey> = records.iter().map(|(k, _)| k).collect();
        self.fingerprints.retain(|k, _| outstanding.contains(k));
        for (k, _) in &dead {
            self.fingerprints.remove(k);
        }
        self.count_turnover(&records, &dead, pids);
        let dropped = collector.drop_dead(&dead);
        log::debug!("between windows: {dropped} of {} outstanding blocks found dead", records.len());
    }

    /// Which survivors of earlier windows are gone (`records`: outstanding now in `pids`,
    /// `dead`: of which found dead by this sweep), and which blocks are new survivors. Blocks of
    /// processes not in `pids` (ended) are forgotten uncounted.
    fn count_turnover(&mut self, records: &[(AllocKey, AllocInfo)], dead: &[(AllocKey, AllocInfo)], pids: &[u32]) {
        let dead: std::collections::HashSet<(&AllocKey, u64)> = dead.iter().map(|(k, i)| (k, i.ts_ns)).collect();
        let mut now: HashMap<AllocKey, AllocInfo> = HashMap::with_capacity(records.len());
        for (k, info) in records {
            let known = self.survivors.get(k).is_some_and(|old| old.ts_ns == info.ts_ns);
            let t = self.turnover.entry(info.stack_id).or_default();
            if !known {
                t.survivors += info.count;
            }
            if dead.contains(&(k, info.ts_ns)) {
                t.died += info.count;
            } else {
                now.insert(*k, *info);
            }
        }
        for (k, old) in self.survivors.drain() {
            let gone = pids.contains(&k.tgid) && now.get(&k).is_none_or(|info| info.ts_ns != old.ts_ns);
            if gone && !dead.contains(&(&k, old.ts_ns)) {
                self.turnover.entry(old.stack_id).or_default().died += old.count;
            }
        }
        self.survivors = now;
        let all = self.turnover.values().fold(Outlived::default(), |acc, t| acc + *t);
        log::debug!("between windows: {} blocks outlived a window, {} of them died later", all.survivors, all.died);
    }

    /// The fingerprint of a record, taken the first time it is followed.
    fn follow(&mut self, mem: &ProcessMemory, key: &AllocKey, info: &AllocInfo) -> Option<Fingerprint> {
        match self.fingerprints.get(key) {
            Some(&(ts, f)) if ts == info.ts_ns => f,
            _ => {
                let f = chunks::fingerprint(mem, key.addr);
                self.fingerprints.insert(*key, (info.ts_ns, f));
                f
            }
        }
    }

    fn tcache_key(&mut self, pid: u32, mem: &ProcessMemory) -> Option<u64> {
        if let Some(&k) = self.tcache_keys.get(&pid) {
            return Some(k);
        }
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let key = chunks::tcache_key(mem, chunks::heap_start(&maps)?)?;
        self.tcache_keys.insert(pid, key);
        Some(key)
    }

    /// Inferred deaths in all, and by what showed them.
    pub fn summary(&self) -> (u64, BTreeMap<String, u64>) {
        let total = self.deaths.values().sum();
        (total, self.deaths.iter().map(|(d, n)| (d.as_str().to_string(), *n)).collect())
    }
}
