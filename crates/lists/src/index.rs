//! The compiled, immutable matching index: given a [`RequestTarget`], which lists match?
//!
//! Built once per policy load by [`IndexBuilder`], then shared read-only (it is `Send +
//! Sync`, with no interior locking). Three parts, each chosen for its job:
//!
//! * **Domains** (millions of entries). Every distinct domain is stored as a 64-bit
//!   *fingerprint* only — a keyed SipHash-1-3 of the normalised name with a random key
//!   per index — in a flat "sorted open-addressing" table: fingerprints are sorted and
//!   each is placed at the first free slot at or after its home slot
//!   `⌊fp · buckets / 2⁶⁴⌋` (this is exactly Robin Hood order). A lookup starts at the
//!   home slot and scans forward until it finds the fingerprint, an empty slot or a
//!   larger fingerprint, so misses (the common case) stop after one or two slots in the
//!   same cache line. At load factor 0.85 a domain costs ≈ 8/0.85 bytes of fingerprint
//!   plus 2/0.85 bytes of list-set id, ≈ 12 bytes, against ~60+ for a `HashMap<String,
//!   _>`. The value is an id into an interned table of list sets, since most domains are
//!   in a single list and there are few distinct combinations.
//!
//!   *Building* keeps 8 bytes a domain until the table is made (each list's fingerprints,
//!   see [`IndexBuilder::stage`]), about 26 at the peak: a reload of a 5-million-domain
//!   feed must fit beside the index still serving requests.
//!
//!   *Collisions.* A host probes one fingerprint per label suffix (`a.b.example.co.uk`
//!   → `a.b.example.co.uk`, `b.example.co.uk`, `example.co.uk`, `co.uk`, `uk`). With `n`
//!   stored fingerprints, a probe of an unlisted name is a false match with probability
//!   `n / 2⁶⁴`: for n = 5 million and 6 probes per request that is 1.6·10⁻¹² per request,
//!   i.e. about one wrong answer per 600 billion requests (a school does ~10⁷ a day).
//!   Because the hash is keyed with a secret random key (SipHash is a PRF), nobody can
//!   *construct* a host that collides with an allow-listed domain; an unkeyed hash such
//!   as FxHash would allow that, turning a collision into a filter bypass.
//!
//! * **URL entries** (tens of thousands): a hash map from the fingerprint of the entry's
//!   host to the entry's path prefixes (lower-cased); probed for each label suffix like
//!   domains, then the prefixes are compared. URL paths are compared **ASCII
//!   case-insensitively**, as squidGuard does for UT1 lists: a filter must not be
//!   bypassed by writing `/Porn` for `/porn`. A prefix matches on segment boundaries:
//!   `/a` matches `/a`, `/a/`, `/a/b` and `/a?x`, not `/ab`; a prefix ending in `/`
//!   matches everything below it; a prefix with a query (`/p?id=1`) matches when the
//!   query goes on with `&`. An entry whose path is `/` is the whole host and also
//!   matches host-only targets (CONNECT); other URL entries cannot match those.
//!
//! * **Expressions**: one [`regex::bytes::RegexSet`] (case-insensitive, ASCII classes)
//!   over [`RequestTarget::url_text`], run only when there are expressions. A cheap
//!   "any match?" pass runs first — a fully compiled dense DFA of all expressions when
//!   it fits in 8 MiB (≈80 ns for the UT1 expressions against ≈200 ns for
//!   `RegexSet::is_match`), else `RegexSet::is_match` — and the per-pattern pass only
//!   on a hit.
//!
//! The hot path allocates nothing for a miss; a hit allocates only if more than
//! [`ListMatches`]'s inline capacity of lists match. Building the URL text for
//! expressions allocates once per request when the index has expressions.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use crate::normalise::{Host, RequestTarget, normalise_path};
use crate::source::{Entries, ListError, expression_builder};

pub use crate::ListId;

/// Load factor of the domain table: memory against probe length.
const LOAD_FACTOR: f64 = 0.85;

/// Accumulates entries, then compiles them with [`IndexBuilder::build`].
#[derive(Debug)]
pub struct IndexBuilder {
    hasher: RandomState,
    /// Domain fingerprints by list id (8 bytes a domain; see [`IndexBuilder::build`]).
    domains: Vec<Vec<u64>>,
    urls: Vec<(u64, Box<str>, ListId)>,
    expressions: Vec<(String, ListId)>,
}

/// Fingerprints of one list's domains, taken with [`IndexBuilder::stage`] while the list
/// is read (8 bytes a domain instead of a [`Host`]) and added with
/// [`IndexBuilder::add_staged`] once the whole list has passed screening.
#[derive(Debug, Default)]
pub struct StagedDomains(Vec<u64>);

impl StagedDomains {
    /// Number of domains staged (duplicates included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for IndexBuilder {
    fn default() -> Self {
        IndexBuilder::new()
    }
}

impl IndexBuilder {
    /// An empty builder with a fresh random fingerprint key.
    pub fn new() -> Self {
        IndexBuilder {
            hasher: RandomState::new(),
            domains: Vec::new(),
            urls: Vec::new(),
            expressions: Vec::new(),
        }
    }

    /// Adds every domain, URL and expression of `entries` to list `id`.
    pub fn add(&mut self, id: ListId, entries: &Entries) {
        let fps = entries
            .domains
            .iter()
            .map(|host| fingerprint(&self.hasher, host.as_str()));
        list_domains(&mut self.domains, id).extend(fps);
        for (host, path) in &entries.urls {
            self.add_url(id, host, path);
        }
        for expression in &entries.expressions {
            self.add_expression(id, expression);
        }
    }

    /// Adds a domain (or IP address) entry to list `id`.
    pub fn add_domain(&mut self, id: ListId, host: impl std::borrow::Borrow<Host>) {
        let fp = fingerprint(&self.hasher, host.borrow().as_str());
        list_domains(&mut self.domains, id).push(fp);
    }

    /// Takes the fingerprint of `host` into `staged`, for [`add_staged`](Self::add_staged)
    /// once the whole list has been read and screened.
    pub fn stage(&self, staged: &mut StagedDomains, host: &Host) {
        staged.0.push(fingerprint(&self.hasher, host.as_str()));
    }

    /// Adds the domains staged with [`stage`](Self::stage) to list `id`.
    pub fn add_staged(&mut self, id: ListId, mut staged: StagedDomains) {
        // The vector grew by doubling: give back the spare capacity (up to half of it)
        // before the table is built beside it. Shrinking a large block is done in place.
        staged.0.shrink_to_fit();
        let list = list_domains(&mut self.domains, id);
        if list.is_empty() {
            *list = staged.0;
        } else {
            list.extend_from_slice(&staged.0);
        }
    }

    /// Adds a URL entry (host and subdomains, path prefix) to list `id`. The path is
    /// normalised here (so raw text from a policy file is fine); `""` means the whole host.
    pub fn add_url(
        &mut self,
        id: ListId,
        host: impl std::borrow::Borrow<Host>,
        path: impl AsRef<str>,
    ) {
        let fp = fingerprint(&self.hasher, host.borrow().as_str());
        let path = normalise_path(path.as_ref()).to_ascii_lowercase();
        self.urls.push((fp, path.into_boxed_str(), id));
    }

    /// Adds a regular expression (`regex` crate syntax, matched case-insensitively
    /// against [`RequestTarget::url_text`]) to list `id`. Checked in [`build`](Self::build).
    pub fn add_expression(&mut self, id: ListId, expression: impl AsRef<str>) {
        self.expressions.push((expression.as_ref().to_string(), id));
    }

    /// Compiles the index. Fails only on an invalid expression (naming list and
    /// expression) or expressions too large to compile together.
    pub fn build(self) -> Result<Index, ListError> {
        let IndexBuilder {
            hasher,
            domains,
            mut urls,
            expressions,
        } = self;
        let mut sets = SetTable::default();
        // Set 0 is the empty set: the value of every slot before its lists are added.
        sets.intern(&[]);

        let (domain_table, entry_count) = DomainTable::build(domains, &mut sets);

        // URL entries: group by host fingerprint.
        urls.sort_unstable();
        urls.dedup();
        let url_count = urls.len();
        let mut url_hosts: HashMap<u64, (u32, u32), BuildHasherDefault<FingerprintHasher>> =
            HashMap::default();
        let mut url_rules: Vec<(Box<str>, ListId)> = Vec::with_capacity(urls.len());
        for (fp, path, id) in urls {
            let at = url_rules.len() as u32;
            url_hosts
                .entry(fp)
                .and_modify(|r| r.1 = at + 1)
                .or_insert((at, at + 1));
            url_rules.push((path, id));
        }

        // Expressions: one set, identical patterns merged.
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_sets: Vec<u32> = Vec::new();
        let expression_count = expressions.len();
        {
            let mut by_pattern: HashMap<&str, Vec<ListId>> = HashMap::new();
            let mut order: Vec<&str> = Vec::new();
            for (p, id) in &expressions {
                let lists = by_pattern.entry(p.as_str()).or_insert_with(|| {
                    order.push(p.as_str());
                    Vec::new()
                });
                lists.push(*id);
            }
            for p in order {
                let mut lists = by_pattern.remove(p).unwrap_or_default();
                lists.sort_unstable();
                lists.dedup();
                patterns.push(p.to_string());
                pattern_sets.push(sets.intern(&lists));
            }
        }
        let regex_set = if patterns.is_empty() {
            None
        } else {
            Some(compile_set(&patterns, &expressions)?)
        };

        let prefilter = if patterns.is_empty() {
            None
        } else {
            compile_prefilter(&patterns)
        };

        Ok(Index {
            hasher,
            prefilter,
            domains: domain_table,
            url_hosts,
            url_rules,
            regex_set,
            pattern_bytes: patterns.iter().map(String::len).sum(),
            pattern_sets,
            sets,
            entry_count: entry_count + url_count + expression_count,
        })
    }
}

fn compile_set(
    patterns: &[String],
    expressions: &[(String, ListId)],
) -> Result<regex::bytes::RegexSet, ListError> {
    let built = regex::bytes::RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(256 << 20)
        .dfa_size_limit(64 << 20)
        .build();
    match built {
        Ok(set) => Ok(set),
        Err(set_error) => {
            // Find the culprit to name it.
            for (p, id) in expressions {
                if let Err(e) = expression_builder(p).build() {
                    return Err(ListError::Expression {
                        list: *id,
                        expression: p.clone(),
                        reason: e.to_string(),
                    });
                }
            }
            Err(ListError::ExpressionsTooLarge(set_error.to_string()))
        }
    }
}

/// Size limit of the expression pre-check DFA (and of its construction).
const PREFILTER_DFA_LIMIT: usize = 8 << 20;

/// A dense DFA answering "does any expression match?" about 2–3× faster than the lazy
/// DFA behind `RegexSet::is_match`; `None` if it would exceed the size limit.
fn compile_prefilter(patterns: &[String]) -> Option<regex_automata::dfa::dense::DFA<Vec<u32>>> {
    use regex_automata::dfa::dense;
    use regex_automata::util::syntax;
    dense::Builder::new()
        .syntax(
            syntax::Config::new()
                .case_insensitive(true)
                .unicode(false)
                .utf8(false),
        )
        .configure(
            dense::Config::new()
                .match_kind(regex_automata::MatchKind::All)
                .dfa_size_limit(Some(PREFILTER_DFA_LIMIT))
                .determinize_size_limit(Some(PREFILTER_DFA_LIMIT)),
        )
        .build_many(patterns)
        .ok()
}

/// The domain fingerprint: keyed SipHash-1-3 of the name; never 0 (0 marks a free slot).
#[inline]
fn fingerprint(hasher: &RandomState, name: &str) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(name.as_bytes());
    h.finish().max(1)
}

/// Hasher for keys that are already uniformly distributed fingerprints.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Interned, sorted, de-duplicated sets of list ids.
#[derive(Debug, Default)]
struct SetTable {
    ranges: Vec<(u32, u32)>,
    items: Vec<ListId>,
    lookup: HashMap<Box<[ListId]>, u32>,
}

impl SetTable {
    /// `lists` must be sorted and de-duplicated.
    fn intern(&mut self, lists: &[ListId]) -> u32 {
        if let Some(&id) = self.lookup.get(lists) {
            return id;
        }
        let id = self.ranges.len() as u32;
        let start = self.items.len() as u32;
        self.items.extend_from_slice(lists);
        self.ranges.push((start, self.items.len() as u32));
        self.lookup.insert(lists.into(), id);
        id
    }

    #[inline]
    fn get(&self, id: u32) -> &[ListId] {
        let (a, b) = self.ranges[id as usize];
        &self.items[a as usize..b as usize]
    }

    fn memory_bytes(&self) -> usize {
        self.ranges.capacity() * 8 + self.items.capacity() * 2
    }
}

/// Set ids of the domain table, as narrow as the number of distinct sets allows.
#[derive(Debug)]
enum SetIds {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl SetIds {
    /// Grows to `len` slots, new slots holding set 0 (the empty set).
    fn resize(&mut self, len: usize) {
        match self {
            SetIds::Narrow(v) => v.resize(len, 0),
            SetIds::Wide(v) => v.resize(len, 0),
        }
    }

    /// Stores `set` at `slot`, widening to `u32` the first time a set id needs it.
    fn set(&mut self, slot: usize, set: u32) {
        if let SetIds::Narrow(narrow) = self {
            match u16::try_from(set) {
                Ok(small) => {
                    narrow[slot] = small;
                    return;
                }
                Err(_) => *self = SetIds::Wide(narrow.iter().map(|&v| u32::from(v)).collect()),
            }
        }
        if let SetIds::Wide(wide) = self {
            wide[slot] = set;
        }
    }
}

/// Calls `visit(fingerprint, lists holding it)` for every distinct fingerprint of the
/// sorted, de-duplicated `lists` in ascending order; the list ids come in ascending
/// order too. A k-way merge over a heap of one cursor per non-empty list.
fn merge_sorted(lists: &[Vec<u64>], mut visit: impl FnMut(u64, &[ListId])) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut heap: BinaryHeap<Reverse<(u64, ListId, usize)>> = lists
        .iter()
        .enumerate()
        .filter_map(|(id, list)| Some(Reverse((*list.first()?, id as ListId, 0))))
        .collect();
    let mut holders: Vec<ListId> = Vec::new();
    while let Some(Reverse((fp, _, _))) = heap.peek().copied() {
        holders.clear();
        while let Some(mut top) = heap.peek_mut() {
            let Reverse((next_fp, id, at)) = *top;
            if next_fp != fp {
                break;
            }
            holders.push(id);
            match lists[usize::from(id)].get(at + 1) {
                Some(&following) => *top = Reverse((following, id, at + 1)),
                None => {
                    std::collections::binary_heap::PeekMut::pop(top);
                }
            }
        }
        visit(fp, &holders);
    }
}

/// The fingerprint table described in the module documentation.
#[derive(Debug)]
struct DomainTable {
    /// Fingerprints in ascending order, 0 = free slot; longer than `buckets` by the
    /// overflow of the last runs.
    keys: Vec<u64>,
    values: SetIds,
    buckets: u64,
}

impl DomainTable {
    /// Builds the table from each list's fingerprints (indexed by list id); returns it
    /// and the number of distinct (domain, list) pairs. Memory at the peak is about 20
    /// bytes a domain (the lists, 8, and the table, 12), never a copy of every
    /// fingerprint: each list is sorted in place, then the sorted lists are merged
    /// straight into the table's slots, each slot's value being the interned set of
    /// lists that hold its fingerprint.
    fn build(mut lists: Vec<Vec<u64>>, sets: &mut SetTable) -> (DomainTable, usize) {
        let mut total = 0;
        for list in &mut lists {
            list.sort_unstable();
            list.dedup();
            total += list.len();
        }
        let mut distinct = 0usize;
        merge_sorted(&lists, |_, _| distinct += 1);
        let buckets = ((distinct as f64 / LOAD_FACTOR) as u64).max(1);
        // Buckets plus one free slot so every scan ends in bounds; the overflow of the
        // last run (a few slots) fits in the spare capacity without reallocating.
        let mut keys = Vec::with_capacity(buckets as usize + 1025);
        keys.resize(buckets as usize + 1, 0u64);
        let mut values = SetIds::Narrow(Vec::with_capacity(keys.capacity()));
        values.resize(keys.len());
        let singles: Vec<u32> = (0..lists.len())
            .map(|id| sets.intern(&[id as ListId]))
            .collect();
        let mut next_free = 0usize;
        merge_sorted(&lists, |fp, holders| {
            let pos = home(fp, buckets).max(next_free);
            if pos + 1 >= keys.len() {
                keys.resize(pos + 2, 0);
                values.resize(keys.len());
            }
            keys[pos] = fp;
            let set = match holders {
                [one] => singles[usize::from(*one)],
                many => sets.intern(many),
            };
            values.set(pos, set);
            next_free = pos + 1;
        });
        (
            DomainTable {
                keys,
                values,
                buckets,
            },
            total,
        )
    }

    /// Looks up `fp`, scanning from slot `i` (its home slot).
    #[inline]
    fn get_from(&self, i: usize, fp: u64) -> Option<u32> {
        let i = find_slot(&self.keys, i, fp)?;
        Some(match &self.values {
            SetIds::Narrow(v) => u32::from(v[i]),
            SetIds::Wide(v) => v[i],
        })
    }

    fn memory_bytes(&self) -> usize {
        self.keys.capacity() * 8
            + match &self.values {
                SetIds::Narrow(v) => v.capacity() * 2,
                SetIds::Wide(v) => v.capacity() * 4,
            }
    }
}

/// The fingerprints of list `id` in the builder's `domains`, made on first use.
fn list_domains(domains: &mut Vec<Vec<u64>>, id: ListId) -> &mut Vec<u64> {
    let i = usize::from(id);
    if domains.len() <= i {
        domains.resize_with(i + 1, Vec::new);
    }
    &mut domains[i]
}

/// The slot holding `fp`, scanning from slot `i` (its home slot).
#[inline]
fn find_slot(keys: &[u64], mut i: usize, fp: u64) -> Option<usize> {
    loop {
        let k = *keys.get(i)?;
        if k == fp {
            return Some(i);
        }
        if k == 0 || k > fp {
            return None;
        }
        i += 1;
    }
}

#[inline]
fn home(fp: u64, buckets: u64) -> usize {
    ((u128::from(fp) * u128::from(buckets)) >> 64) as usize
}

/// Whether URL entry path `entry` (lower-cased, normalised) matches request path `path`
/// (normalised, any case) as a prefix on a segment boundary.
#[inline]
fn path_prefix_matches(entry: &str, path: &str) -> bool {
    let (e, p) = (entry.as_bytes(), path.as_bytes());
    if e == b"/" {
        return true;
    }
    if p.len() < e.len() || !p[..e.len()].eq_ignore_ascii_case(e) {
        return false;
    }
    if p.len() == e.len() {
        return true;
    }
    let last = e[e.len() - 1];
    if matches!(last, b'/' | b'?' | b'&') {
        return true;
    }
    let next = p[e.len()];
    if e.contains(&b'?') {
        next == b'&'
    } else {
        next == b'/' || next == b'?'
    }
}

/// The compiled, immutable index. See the module documentation for its structure.
#[derive(Debug)]
pub struct Index {
    hasher: RandomState,
    domains: DomainTable,
    url_hosts: HashMap<u64, (u32, u32), BuildHasherDefault<FingerprintHasher>>,
    url_rules: Vec<(Box<str>, ListId)>,
    regex_set: Option<regex::bytes::RegexSet>,
    /// A fully compiled DFA of all expressions, used as a fast "any match?" pre-check
    /// when it fits in [`PREFILTER_DFA_LIMIT`] bytes; the set stays authoritative.
    prefilter: Option<regex_automata::dfa::dense::DFA<Vec<u32>>>,
    pattern_bytes: usize,
    pattern_sets: Vec<u32>,
    sets: SetTable,
    entry_count: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index::empty()
    }
}

impl Index {
    /// An index with no entries.
    pub fn empty() -> Index {
        IndexBuilder::new()
            .build()
            .unwrap_or_else(|_| unreachable!("an empty index always builds"))
    }

    /// Every list with an entry that matches `target` (see the module documentation).
    pub fn matches(&self, target: &RequestTarget) -> ListMatches {
        let mut out = ListMatches::default();
        self.match_host_and_path(&target.host, target.path.as_deref(), &mut out);
        if let Some(set) = &self.regex_set {
            let text = target.url_text();
            if self.any_expression_matches(set, text.as_bytes()) {
                for p in set.matches(text.as_bytes()).iter() {
                    for &id in self.sets.get(self.pattern_sets[p]) {
                        out.insert(id);
                    }
                }
            }
        }
        out
    }

    /// Lists whose domain entries (or whole-host URL entries) match `host`; expressions
    /// are matched against the host name alone.
    pub fn matches_host(&self, host: &Host) -> ListMatches {
        let mut out = ListMatches::default();
        self.match_host_and_path(host, None, &mut out);
        if let Some(set) = &self.regex_set {
            let text = host.as_str().as_bytes();
            if self.any_expression_matches(set, text) {
                for p in set.matches(text).iter() {
                    for &id in self.sets.get(self.pattern_sets[p]) {
                        out.insert(id);
                    }
                }
            }
        }
        out
    }

    fn any_expression_matches(&self, set: &regex::bytes::RegexSet, text: &[u8]) -> bool {
        use regex_automata::dfa::Automaton;
        if let Some(dfa) = &self.prefilter {
            let input = regex_automata::Input::new(text).earliest(true);
            if let Ok(found) = dfa.try_search_fwd(&input) {
                return found.is_some();
            }
        }
        set.is_match(text)
    }

    /// Probes every label suffix of `host`. Fingerprints of all suffixes are computed
    /// first and the first slot of each is loaded in a branch-free pass, so the (up to
    /// one per suffix) cache misses on a large table overlap instead of queueing.
    #[inline]
    fn match_host_and_path(&self, host: &Host, path: Option<&str>, out: &mut ListMatches) {
        const BATCH: usize = 12;
        let single = host.is_ip();
        let check_urls = !self.url_hosts.is_empty();
        let mut next = Some(host.as_str());
        while let Some(mut name) = next.take() {
            let mut fps = [0u64; BATCH];
            let mut n = 0;
            loop {
                fps[n] = fingerprint(&self.hasher, name);
                n += 1;
                if single {
                    break;
                }
                match name.find('.') {
                    Some(i) => name = &name[i + 1..],
                    None => break,
                }
                if n == BATCH {
                    next = Some(name);
                    break;
                }
            }
            let mut slots = [0usize; BATCH];
            let mut first = [0u64; BATCH];
            for j in 0..n {
                slots[j] = home(fps[j], self.domains.buckets);
                first[j] = self.domains.keys.get(slots[j]).copied().unwrap_or(0);
            }
            for j in 0..n {
                let fp = fps[j];
                if first[j] != 0
                    && first[j] <= fp
                    && let Some(set) = self.domains.get_from(slots[j], fp)
                {
                    for &id in self.sets.get(set) {
                        out.insert(id);
                    }
                }
                if check_urls && let Some(&(a, b)) = self.url_hosts.get(&fp) {
                    for (entry, id) in &self.url_rules[a as usize..b as usize] {
                        let hit = match path {
                            Some(p) => path_prefix_matches(entry, p),
                            None => &**entry == "/",
                        };
                        if hit {
                            out.insert(*id);
                        }
                    }
                }
            }
        }
    }

    /// Number of entries: distinct (domain, list) pairs, URL entries and expressions.
    pub fn len(&self) -> usize {
        self.entry_count
    }

    /// Whether the index has no entries.
    pub fn is_empty(&self) -> bool {
        self.entry_count == 0
    }

    /// Approximate heap use in bytes (compiled regexes estimated from pattern size).
    pub fn memory_bytes(&self) -> usize {
        let url_map = self.url_hosts.capacity() * (8 + 8 + 1);
        let url_rules: usize = self.url_rules.capacity() * 24
            + self.url_rules.iter().map(|(p, _)| p.len()).sum::<usize>();
        // Lookup table of the set interner is build-time only but still held.
        let set_lookup = self.sets.lookup.capacity() * 24 + self.sets.items.len() * 2;
        self.domains.memory_bytes()
            + url_map
            + url_rules
            + self.sets.memory_bytes()
            + set_lookup
            + self.pattern_sets.capacity() * 4
            + self.pattern_bytes * 64
            + self.prefilter.as_ref().map_or(0, |d| d.memory_usage())
    }
}

/// Inline capacity of [`ListMatches`] before it spills to the heap.
const INLINE: usize = 8;

/// The lists that matched a request: a small sorted set of [`ListId`]s.
#[derive(Clone, Default)]
pub struct ListMatches {
    inline: [ListId; INLINE],
    len: u8,
    spill: Vec<ListId>,
}

impl ListMatches {
    fn as_slice(&self) -> &[ListId] {
        if self.spill.is_empty() {
            &self.inline[..usize::from(self.len)]
        } else {
            &self.spill
        }
    }

    /// Adds a list id (no effect if present).
    pub fn insert(&mut self, id: ListId) {
        let pos = match self.as_slice().binary_search(&id) {
            Ok(_) => return,
            Err(pos) => pos,
        };
        if self.spill.is_empty() && usize::from(self.len) < INLINE {
            let len = usize::from(self.len);
            self.inline.copy_within(pos..len, pos + 1);
            self.inline[pos] = id;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill
                    .extend_from_slice(&self.inline[..usize::from(self.len)]);
            }
            self.spill.insert(pos, id);
        }
    }

    /// Whether list `id` matched.
    pub fn contains(&self, id: ListId) -> bool {
        self.as_slice().binary_search(&id).is_ok()
    }

    /// Whether no list matched.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Number of lists that matched.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The matching list ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ListId> + '_ {
        self.as_slice().iter().copied()
    }
}

impl PartialEq for ListMatches {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ListMatches {}

impl std::fmt::Debug for ListMatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<ListId> for ListMatches {
    fn from_iter<I: IntoIterator<Item = ListId>>(iter: I) -> Self {
        let mut m = ListMatches::default();
        for id in iter {
            m.insert(id);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn target(url: &str) -> RequestTarget {
        RequestTarget::parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn ids(index: &Index, url: &str) -> Vec<ListId> {
        index.matches(&target(url)).iter().collect()
    }

    /// Domains in several lists (added directly or staged, in any order) match every
    /// one of their lists; the entry count is the distinct (domain, list) pairs.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn shared_domains_match_all_their_lists() {
        let mut b = IndexBuilder::new();
        let mut staged = StagedDomains::default();
        for name in ["a.com", "b.com", "a.com"] {
            b.stage(&mut staged, &host(name));
        }
        assert_eq!(staged.len(), 3);
        b.add_domain(7, host("b.com"));
        b.add_domain(2, host("c.com"));
        b.add_staged(2, staged);
        b.add_domain(7, host("d.com"));
        b.add_domain(0, host("a.com"));
        let index = b.build().unwrap();
        assert_eq!(ids(&index, "http://x.a.com/"), [0, 2]);
        assert_eq!(ids(&index, "http://b.com/"), [2, 7]);
        assert_eq!(ids(&index, "http://c.com/"), [2]);
        assert_eq!(ids(&index, "http://d.com/"), [7]);
        assert!(ids(&index, "http://e.com/").is_empty());
        assert_eq!(index.len(), 6);
    }

    #[test]
    fn domains_on_label_boundaries() {
        let mut b = IndexBuilder::new();
        b.add_domain(1, host("bet.com"));
        let by_ref = host("bet.com");
        b.add_domain(2, &by_ref);
        b.add_domain(3, host("sub.example.org"));
        b.add_domain(4, host("10.1.2.3"));
        b.add_domain(4, host("uk"));
        let index = b.build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.len(), 5);
        assert_eq!(ids(&index, "http://bet.com/"), [1, 2]);
        assert_eq!(ids(&index, "http://WWW.Bet.COM.:80/x"), [1, 2]);
        assert!(ids(&index, "http://abet.com/").is_empty());
        assert!(ids(&index, "http://bet.com.au/").is_empty());
        assert_eq!(ids(&index, "a.b.sub.example.org"), [3]);
        assert!(ids(&index, "example.org").is_empty());
        assert_eq!(ids(&index, "http://10.1.2.3/"), [4]);
        assert_eq!(ids(&index, "http://0x0a010203/"), [4]);
        assert!(ids(&index, "http://2.10.1.2.3.x/").is_empty());
        assert_eq!(ids(&index, "http://bbc.co.uk/"), [4]);
        let m = index.matches(&target("www.bet.com"));
        assert!(m.contains(1) && m.contains(2) && !m.contains(3));
    }

    #[test]
    fn ip_entries_match_literally() {
        let mut b = IndexBuilder::new();
        b.add_domain(1, host("3"));
        let index = b.build().unwrap_or_else(|e| panic!("{e}"));
        // "3" normalises to 0.0.0.3; 1.2.0.3 must not match through a "suffix".
        assert!(ids(&index, "http://1.2.0.3/").is_empty());
        assert_eq!(ids(&index, "http://0.0.0.3/"), [1]);
    }

    #[test]
    fn url_entries_on_segment_boundaries() {
        let mut b = IndexBuilder::new();
        b.add_url(7, host("example.com"), "/a");
        b.add_url(8, host("example.com"), "/dir/");
        b.add_url(9, host("example.com"), "/page?id=1");
        b.add_url(10, host("whole.net"), "");
        let index = b.build().unwrap_or_else(|e| panic!("{e}"));
        for yes in [
            "example.com/a",
            "example.com/a/",
            "example.com/a/b",
            "example.com/a?x=1",
            "www.example.com/A/B",
            "example.com/%61",
            "example.com//a//b",
            "example.com/z/../a/b",
        ] {
            assert_eq!(ids(&index, yes), [7], "{yes}");
        }
        for no in [
            "example.com/ab",
            "example.com/",
            "example.com/b/a",
            "xexample.com/a",
        ] {
            assert!(ids(&index, no).is_empty(), "{no}");
        }
        assert_eq!(ids(&index, "example.com/dir/x"), [8]);
        assert!(ids(&index, "example.com/dir").is_empty());
        assert_eq!(ids(&index, "example.com/page?id=1"), [9]);
        assert_eq!(ids(&index, "example.com/page?id=1&y=2"), [9]);
        assert!(ids(&index, "example.com/page?id=12").is_empty());
        assert_eq!(ids(&index, "m.whole.net/anything"), [10]);
        // Host-only targets: only whole-host URL entries can match.
        let connect =
            RequestTarget::from_parts("m.whole.net:443", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(index.matches(&connect).iter().collect::<Vec<_>>(), [10]);
        let connect =
            RequestTarget::from_parts("example.com:443", None).unwrap_or_else(|e| panic!("{e}"));
        assert!(index.matches(&connect).is_empty());
    }

    #[test]
    fn expressions() {
        let mut b = IndexBuilder::new();
        b.add_expression(5, r"(^|[-/_.])porn([-/_.?]|$)");
        b.add_expression(6, r"(^|[-/_.])porn([-/_.?]|$)");
        b.add_expression(6, r"casino");
        let index = b.build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(&index, "example.com/porn/x"), [5, 6]);
        assert_eq!(ids(&index, "example.com/%50ORN"), [5, 6]);
        assert_eq!(ids(&index, "www.Casino.example/"), [6]);
        assert!(ids(&index, "example.com/pornography").is_empty());

        let mut b = IndexBuilder::new();
        b.add_expression(3, "(unclosed");
        match b.build() {
            Err(ListError::Expression {
                list, expression, ..
            }) => {
                assert_eq!((list, expression.as_str()), (3, "(unclosed"));
            }
            other => panic!("expected an expression error, got {other:?}"),
        }
    }

    #[test]
    fn many_lists_spill() {
        let mut b = IndexBuilder::new();
        for id in (0..20).rev() {
            b.add_domain(id, host("multi.example"));
        }
        let index = b.build().unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<ListId> = index.matches(&target("x.multi.example")).iter().collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        let m: ListMatches = [3, 1, 2, 1].into_iter().collect();
        assert_eq!(m.iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(format!("{m:?}"), "{1, 2, 3}");
    }

    #[test]
    fn empty_index() {
        let index = Index::empty();
        assert!(index.is_empty());
        assert!(index.matches(&target("example.com/")).is_empty());
    }

    #[test]
    fn table_with_collisions_in_home_slots() {
        // Dense small tables exercise the overflow at the end and long runs.
        for n in [1usize, 2, 3, 10, 1000] {
            let mut b = IndexBuilder::new();
            for i in 0..n {
                b.add_domain((i % 3) as ListId, host(&format!("d{i}.test")));
            }
            let index = b.build().unwrap_or_else(|e| panic!("{e}"));
            for i in 0..n {
                let got: Vec<ListId> = index
                    .matches_host(&host(&format!("w.d{i}.test")))
                    .iter()
                    .collect();
                assert_eq!(got, [(i % 3) as ListId]);
                assert!(index.matches_host(&host(&format!("e{i}.test"))).is_empty());
            }
        }
    }

    #[test]
    fn wide_set_ids() {
        // More than 65536 distinct list sets forces 32-bit set ids.
        let mut b = IndexBuilder::new();
        let n = 70_000u32;
        for i in 0..n {
            let name = host(&format!("s{i}.test"));
            b.add_domain((i % 65_000) as ListId, &name);
            b.add_domain(((i / 65_000) + 65_001) as ListId, &name);
        }
        let index = b.build().unwrap_or_else(|e| panic!("{e}"));
        for i in (0..n).step_by(997) {
            let got: Vec<ListId> = index
                .matches_host(&host(&format!("s{i}.test")))
                .iter()
                .collect();
            assert_eq!(
                got,
                [(i % 65_000) as ListId, ((i / 65_000) + 65_001) as ListId]
            );
        }
    }
}
