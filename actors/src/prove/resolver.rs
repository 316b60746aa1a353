//! DID resolution with a bounded cache: `did:plc` from the PLC directory, `did:web` from
//! `/.well-known/did.json`, each document reduced to its PDS endpoint and `#atproto` key.
//!
//! The cache holds at most `did_cache_size` identities, each for at most `did_cache_ttl`,
//! evicting the oldest insert first. Identity events (`<prefix>identity`: a handle change, a
//! key rotation, a PDS move all emit one) invalidate the DID's entry; so does a signature that
//! fails with a cached key (the worker re-resolves once, fresh, before calling it invalid).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use super::did::{DidError, Identity, document_url, parse_document};
use super::http::{FetchError, Polite};

/// Why a DID could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Document(#[from] DidError),
    #[error("fetching the DID document: {0}")]
    Fetch(FetchError),
}

impl ResolveError {
    /// `did_<reason>`: `did_http_404`, `did_timeout`, `did_doc_no_pds` …
    pub fn reason(&self) -> String {
        match self {
            ResolveError::Document(e) => e.reason().to_owned(),
            ResolveError::Fetch(e) => format!("did_{}", e.reason()),
        }
    }
}

struct Cached {
    identity: Arc<Identity>,
    at: Instant,
    /// Insert number, to tell the live entry from stale ones in the eviction queue.
    seq: u64,
}

type Pending = Shared<BoxFuture<'static, Result<Arc<Identity>, ResolveError>>>;

#[derive(Default)]
struct Cache {
    map: HashMap<String, Cached>,
    order: VecDeque<(String, u64)>,
    seq: u64,
    /// Resolutions in flight, joined by every caller asking for the same DID meanwhile.
    /// Under the same lock as `map`, so a resolution is either cached or in flight.
    inflight: HashMap<String, Pending>,
    /// Bumped by every invalidation: a fetch that started before one is not cached.
    generation: u64,
}

/// Counters of the cache, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub invalidations: u64,
    pub fetches: u64,
}

pub struct Resolver {
    http: Arc<Polite>,
    plc: String,
    web_scheme: String,
    ttl: Duration,
    size: usize,
    cache: Mutex<Cache>,
    stats: Mutex<CacheStats>,
}

impl Resolver {
    pub fn new(
        http: Arc<Polite>,
        plc: &str,
        web_scheme: &str,
        size: usize,
        ttl: Duration,
    ) -> Resolver {
        Resolver {
            http,
            plc: plc.to_owned(),
            web_scheme: web_scheme.to_owned(),
            ttl,
            size: size.max(1),
            cache: Mutex::new(Cache::default()),
            stats: Mutex::new(CacheStats::default()),
        }
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut CacheStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The identity of `did`, from the cache unless `fresh`; the flag says whether it came
    /// from the cache. Concurrent resolutions of one DID share one fetch.
    pub async fn resolve(
        self: &Arc<Self>,
        did: &str,
        fresh: bool,
    ) -> Result<(Arc<Identity>, bool), ResolveError> {
        let pending = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if !fresh && let Some(id) = self.cached(&mut cache, did) {
                drop(cache);
                self.count(|s| s.hits += 1);
                return Ok((id, true));
            }
            match cache.inflight.get(did) {
                Some(p) => p.clone(),
                None => {
                    let me = self.clone();
                    let key = did.to_owned();
                    let generation = cache.generation;
                    let p = async move {
                        let r = me.fetch(&key).await;
                        let mut cache = me.cache.lock().unwrap_or_else(|e| e.into_inner());
                        cache.inflight.remove(&key);
                        if let Ok(id) = &r
                            && cache.generation == generation
                        {
                            me.insert(&mut cache, id.clone());
                        }
                        r
                    }
                    .boxed()
                    .shared();
                    cache.inflight.insert(did.to_owned(), p.clone());
                    p
                }
            }
        };
        self.count(|s| s.misses += 1);
        pending.await.map(|id| (id, false))
    }

    async fn fetch(&self, did: &str) -> Result<Arc<Identity>, ResolveError> {
        let url = document_url(did, &self.plc, &self.web_scheme)?;
        self.count(|s| s.fetches += 1);
        let body = self.http.get(&url).await.map_err(ResolveError::Fetch)?;
        Ok(Arc::new(parse_document(did, body.as_slice())?))
    }

    fn cached(&self, cache: &mut Cache, did: &str) -> Option<Arc<Identity>> {
        match cache.map.get(did) {
            Some(c) if c.at.elapsed() < self.ttl => Some(c.identity.clone()),
            Some(_) => {
                cache.map.remove(did);
                None
            }
            None => None,
        }
    }

    fn insert(&self, cache: &mut Cache, identity: Arc<Identity>) {
        cache.seq += 1;
        let seq = cache.seq;
        let did = identity.did.clone();
        cache.order.push_back((did.clone(), seq));
        cache.map.insert(
            did,
            Cached {
                identity,
                at: Instant::now(),
                seq,
            },
        );
        while cache.map.len() > self.size || cache.order.len() > self.size.saturating_mul(2) {
            let Some((old, seq)) = cache.order.pop_front() else {
                break;
            };
            if cache.map.get(&old).is_some_and(|c| c.seq == seq) {
                cache.map.remove(&old);
            }
        }
    }

    /// Forgets `did` (an identity event arrived for it).
    pub fn invalidate(&self, did: &str) {
        let removed = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.generation += 1;
            cache.map.remove(did).is_some()
        };
        if removed {
            self.count(|s| s.invalidations += 1);
            metrics::counter!("jetstream_ingestor_prove_did_invalidations_total").increment(1);
        }
    }

    /// How many identities are cached.
    pub fn len(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
