//! The response cache: a request identical to one answered before (same endpoint,
//! same backend model, same messages or prompt, tools, format, options and think) is
//! answered from memory without calling the backend. Off unless `cache.models` names
//! the model. Only complete, successful answers are kept; errors and cut-off streams
//! never are.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::backend::request::ToolCall;
use crate::backend::{Chunk, ChunkStream, Completion, Delta, Logprob};
use crate::config::CacheConfig;

/// SHA-256 of the normalised request.
pub type Key = [u8; 32];

/// A stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub content: String,
    pub thinking: String,
    pub tool_calls: Vec<ToolCall>,
    /// Kept for a request that asked for them (its key says so).
    pub logprobs: Vec<Logprob>,
    pub done: Completion,
}

impl Entry {
    fn bytes(&self) -> usize {
        // Tool calls are small next to the texts; a rough size keeps the bound honest.
        let logprobs: usize = self
            .logprobs
            .iter()
            .map(|l| 64 + l.token.len() * 2 + l.top_logprobs.len() * 64)
            .sum();
        self.content.len() + self.thinking.len() + self.tool_calls.len() * 256 + logprobs + 128
    }

    /// The answer as a backend would stream it: the whole text, then the end. The
    /// original's token counts are kept; its timings are not (this answer took none).
    pub fn into_chunks(self) -> ChunkStream {
        let done = Completion {
            done_reason: self.done.done_reason,
            prompt_tokens: self.done.prompt_tokens,
            completion_tokens: self.done.completion_tokens,
            ..Default::default()
        };
        let chunks = [
            Chunk {
                delta: Delta {
                    content: self.content,
                    thinking: self.thinking,
                    tool_calls: self.tool_calls,
                    logprobs: self.logprobs,
                },
                ..Default::default()
            },
            Chunk {
                done: Some(done),
                ..Default::default()
            },
        ];
        Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
    }
}

struct Stored {
    entry: Entry,
    expires: Instant,
}

pub struct ResponseCache {
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<Key, Stored>,
    bytes: usize,
    max_bytes: usize,
}

impl ResponseCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> ResponseCache {
        ResponseCache {
            inner: Mutex::new(Inner {
                entries: LruCache::new(NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN)),
                bytes: 0,
                max_bytes,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored answer, unless it expired (then it goes).
    pub fn get(&self, key: &Key, now: Instant) -> Option<Entry> {
        let mut inner = self.lock();
        let expired = match inner.entries.get(key) {
            None => return None,
            Some(stored) if stored.expires > now => return Some(stored.entry.clone()),
            Some(_) => true,
        };
        if expired {
            if let Some(gone) = inner.entries.pop(key) {
                inner.bytes -= gone.entry.bytes();
            }
        }
        None
    }

    /// Stores an answer for `ttl`, evicting the least recently used ones beyond the
    /// bounds; an answer bigger than the whole cache is not stored.
    pub fn put(&self, key: Key, entry: Entry, ttl: Duration, now: Instant) {
        let mut inner = self.lock();
        let size = entry.bytes();
        if size > inner.max_bytes {
            return;
        }
        let stored = Stored {
            entry,
            expires: now + ttl,
        };
        if let Some((_, old)) = inner.entries.push(key, stored) {
            inner.bytes -= old.entry.bytes();
        }
        inner.bytes += size;
        while inner.bytes > inner.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, old)) => inner.bytes -= old.entry.bytes(),
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `cache` applies to a request for `model` with these `options`: the model is
/// listed, and (with `when: deterministic`) the answer cannot vary: temperature 0 or a
/// seed.
pub fn applies(cache: &CacheConfig, model: &str, options: Option<&Map<String, Value>>) -> bool {
    let listed = cache
        .models
        .iter()
        .any(|pattern| wildmatch::WildMatch::new(&pattern.to_lowercase()).matches(&model.to_lowercase()));
    if !listed {
        return false;
    }
    if !cache.only_deterministic {
        return true;
    }
    let option = |name: &str| options.and_then(|o| o.get(name)).filter(|v| !v.is_null());
    option("seed").is_some() || option("temperature").and_then(Value::as_f64) == Some(0.0)
}

/// The key of a request: its endpoint, the backend and model it goes to, and every
/// field that changes the answer (`model`, `stream` and `keep_alive` do not), with
/// object keys sorted so the order a client writes them in does not matter.
pub fn key(endpoint: &str, backend: &str, backend_model: &str, request: &Value) -> Key {
    let mut request = request.clone();
    if let Value::Object(fields) = &mut request {
        for ignored in ["model", "stream", "keep_alive"] {
            fields.remove(ignored);
        }
    }
    let mut hash = Sha256::new();
    for part in [endpoint, backend, backend_model] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update(canonical(&request).as_bytes());
    hash.finalize().into()
}

fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(fields) => {
                let mut keys: Vec<&String> = fields.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&fields[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(text: &str) -> Entry {
        Entry {
            content: text.into(),
            thinking: String::new(),
            tool_calls: Vec::new(),
            logprobs: Vec::new(),
            done: Completion::default(),
        }
    }

    #[test]
    fn keys_ignore_model_stream_keep_alive_and_key_order() {
        let a = json!({"model": "a", "stream": true, "keep_alive": "5m",
                       "messages": [{"role": "user", "content": "hi"}], "options": {"seed": 1, "top_k": 3}});
        let b = json!({"options": {"top_k": 3, "seed": 1}, "messages": [{"content": "hi", "role": "user"}],
                       "model": "b", "stream": false});
        assert_eq!(key("/api/chat", "local", "m", &a), key("/api/chat", "local", "m", &b));
        let other_option = json!({"messages": [{"role": "user", "content": "hi"}], "options": {"seed": 2, "top_k": 3}});
        assert_ne!(
            key("/api/chat", "local", "m", &a),
            key("/api/chat", "local", "m", &other_option)
        );
        assert_ne!(key("/api/chat", "local", "m", &a), key("/api/chat", "local", "m2", &a));
        assert_ne!(
            key("/api/chat", "local", "m", &a),
            key("/api/generate", "local", "m", &a)
        );
    }

    #[test]
    fn entries_expire_and_the_least_recently_used_go_first() {
        let cache = ResponseCache::new(2, 1 << 20);
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        cache.put([1; 32], entry("one"), ttl, now);
        cache.put([2; 32], entry("two"), ttl, now);
        assert_eq!(cache.get(&[1; 32], now), Some(entry("one")));
        cache.put([3; 32], entry("three"), ttl, now);
        assert_eq!(cache.get(&[2; 32], now), None, "least recently used");
        assert_eq!(cache.get(&[1; 32], now + Duration::from_secs(11)), None, "expired");
        assert_eq!(cache.len(), 1);
        // A byte bound as well: two entries of ~140 bytes do not fit in 200.
        let small = ResponseCache::new(100, 200);
        small.put([1; 32], entry("a"), ttl, now);
        small.put([2; 32], entry("b"), ttl, now);
        assert_eq!((small.get(&[1; 32], now), small.len()), (None, 1));
        small.put([3; 32], entry(&"x".repeat(500)), ttl, now);
        assert_eq!(small.get(&[3; 32], now), None, "bigger than the whole cache");
    }

    #[test]
    fn only_listed_models_and_deterministic_requests() {
        let mut cache = CacheConfig {
            models: vec!["tiny-*".into()],
            ..CacheConfig::default()
        };
        let seeded = json!({"seed": 7}).as_object().cloned();
        let cold = json!({"temperature": 0}).as_object().cloned();
        let warm = json!({"temperature": 0.7}).as_object().cloned();
        assert!(applies(&cache, "Tiny-Chat", seeded.as_ref()));
        assert!(applies(&cache, "tiny-chat", cold.as_ref()));
        assert!(!applies(&cache, "tiny-chat", warm.as_ref()));
        assert!(!applies(&cache, "tiny-chat", None));
        assert!(!applies(&cache, "other", seeded.as_ref()));
        cache.only_deterministic = false;
        assert!(applies(&cache, "tiny-chat", None));
    }
}
