//! Ollama's `keep_alive` for a backend that loads and unloads models on request
//! (llama-server's router mode): how long a model stays loaded after the last request
//! that used it. Each backend keeps a [`Book`] of the models it holds loaded: requests
//! take a [`Lease`] while they run; when the last lease of a model ends, its keep-alive
//! starts, and one timer per model unloads it when that runs out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ChunkStream;

/// Ollama's default, when a request does not say.
pub const DEFAULT: Duration = Duration::from_secs(5 * 60);

/// How long a model stays loaded once idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// `0`: unloaded as soon as it is idle.
    Unload,
    For(Duration),
    /// A negative duration: never unloaded by ollabridge.
    Forever,
}

impl Default for KeepAlive {
    fn default() -> KeepAlive {
        KeepAlive::For(DEFAULT)
    }
}

/// Ollama's `keep_alive`: a number of seconds, or a Go duration string ("5m", "1h30m",
/// "0.5s", "-1m"); absent or null is the default; negative is forever, zero unloads.
pub fn parse(value: Option<&Value>) -> Result<KeepAlive, String> {
    let invalid = || {
        format!(
            "keep_alive: invalid duration {} (use e.g. \"5m\", \"30s\", 300, 0 or -1)",
            value.unwrap_or(&Value::Null)
        )
    };
    let seconds = match value {
        None | Some(Value::Null) => return Ok(KeepAlive::default()),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(invalid)?,
        Some(Value::String(s)) => go_duration_seconds(s).ok_or_else(invalid)?,
        Some(_) => return Err(invalid()),
    };
    Ok(if seconds < 0.0 {
        KeepAlive::Forever
    } else if seconds == 0.0 {
        KeepAlive::Unload
    } else {
        // Saturates: a keep-alive past any real run is as good as forever.
        KeepAlive::For(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
    })
}

/// Go's `time.ParseDuration`, in seconds: an optional sign, then one or more decimal
/// numbers each with a unit (ns, us, µs, ms, s, m, h); "0" alone needs no unit.
fn go_duration_seconds(text: &str) -> Option<f64> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if !number.bytes().any(|b| b.is_ascii_digit()) || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = next;
    }
    Some(if negative { -total } else { total })
}

/// When a model idle since `idle_since` is unloaded; `None`: never.
pub fn expiry(idle_since: SystemTime, keep_alive: KeepAlive) -> Option<SystemTime> {
    match keep_alive {
        KeepAlive::Unload => Some(idle_since),
        KeepAlive::For(d) => idle_since.checked_add(d),
        KeepAlive::Forever => None,
    }
}

/// Unloads a backend's model; given by the backend, which holds the HTTP client.
pub type Unloader = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;

/// The models one backend holds loaded for ollabridge's clients. Kept by backend name
/// across config reloads (see [`Books`]), so a reload neither loses a timer nor starts a
/// second one.
pub struct Book {
    models: Mutex<HashMap<String, Held>>,
    /// The backend's current unloader (a reload brings a new client).
    unloader: Mutex<Option<Unloader>>,
    stop: CancellationToken,
}

struct Held {
    /// Requests using the model now; its keep-alive runs only when none do.
    in_use: usize,
    /// The latest request's keep-alive.
    keep_alive: KeepAlive,
    /// While idle: when it is unloaded (`None`: never), on the timer's clock and the wall's.
    deadline: Option<Instant>,
    expires_at: Option<SystemTime>,
    /// Whether the model's timer task runs (at most one).
    timer: bool,
}

impl Book {
    fn new(stop: CancellationToken) -> Book {
        Book {
            models: Mutex::default(),
            unloader: Mutex::default(),
            stop,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn attach(&self, unloader: Unloader) {
        *self.unloader.lock().unwrap_or_else(PoisonError::into_inner) = Some(unloader);
    }

    /// A request begins using `model`; the second value is whether the book did not
    /// hold the model yet (it may still have to be loaded).
    pub fn begin(self: &Arc<Book>, model: &str, keep_alive: KeepAlive) -> (Lease, bool) {
        let mut models = self.lock();
        let new = !models.contains_key(model);
        let held = models.entry(model.to_owned()).or_insert(Held {
            in_use: 0,
            keep_alive,
            deadline: None,
            expires_at: None,
            timer: false,
        });
        held.in_use += 1;
        held.keep_alive = keep_alive;
        held.deadline = None;
        let lease = Lease {
            book: self.clone(),
            model: Some(model.to_owned()),
        };
        (lease, new)
    }

    /// `model` is loaded and idle now: its keep-alive starts (a load request).
    pub fn hold(self: &Arc<Book>, model: &str, keep_alive: KeepAlive) {
        drop(self.begin(model, keep_alive).0);
    }

    /// Whether the model is in use now; if not, it is dropped from the book (it is being
    /// unloaded). In use, it is unloaded when its last request ends.
    pub fn unload_when_idle(&self, model: &str) -> bool {
        let mut models = self.lock();
        match models.get_mut(model) {
            Some(held) if held.in_use > 0 => {
                held.keep_alive = KeepAlive::Unload;
                true
            }
            _ => {
                models.remove(model);
                false
            }
        }
    }

    /// When each model held is unloaded, by name (`None`: never); one in use counts its
    /// keep-alive from now.
    pub fn expiries(&self, now: SystemTime) -> HashMap<String, Option<SystemTime>> {
        self.lock()
            .iter()
            .map(|(name, held)| {
                let at = match held.in_use {
                    0 => held.expires_at,
                    _ => expiry(now, held.keep_alive),
                };
                (name.clone(), at)
            })
            .collect()
    }

    fn release(self: &Arc<Book>, model: &str) {
        let mut models = self.lock();
        let Some(held) = models.get_mut(model) else {
            return;
        };
        held.in_use = held.in_use.saturating_sub(1);
        if held.in_use > 0 {
            return;
        }
        let now = Instant::now();
        held.expires_at = expiry(SystemTime::now(), held.keep_alive);
        held.deadline = match held.keep_alive {
            KeepAlive::Unload => Some(now),
            KeepAlive::For(d) => now.checked_add(d),
            KeepAlive::Forever => None,
        };
        if held.deadline.is_some() && !held.timer {
            held.timer = true;
            let book = self.clone();
            let model = model.to_owned();
            tokio::spawn(async move {
                let stop = book.stop.clone();
                stop.run_until_cancelled(book.expire(model)).await;
            });
        }
    }

    /// The model's timer: sleeps until its deadline, again while requests push it on,
    /// and unloads the model once the deadline passes with none using it.
    async fn expire(self: Arc<Book>, model: String) {
        loop {
            let deadline = {
                let mut models = self.lock();
                let Some(held) = models.get_mut(&model) else {
                    return;
                };
                match held.deadline {
                    Some(deadline) if held.in_use == 0 && deadline <= Instant::now() => {
                        models.remove(&model);
                        break;
                    }
                    Some(deadline) if held.in_use == 0 => deadline,
                    // In use again, or kept forever: the next release starts a timer.
                    _ => {
                        held.timer = false;
                        return;
                    }
                }
            };
            tokio::time::sleep_until(deadline).await;
        }
        let unloader = self.unloader.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(unload) = unloader {
            unload(model).await;
        }
    }
}

/// One request's use of a model: its keep-alive starts when the last lease ends.
pub struct Lease {
    book: Arc<Book>,
    /// `None` once forgotten.
    model: Option<String>,
}

impl Lease {
    /// The model could not be loaded: the book forgets it rather than time it out.
    pub fn forget(mut self) {
        if let Some(model) = self.model.take() {
            self.book.lock().remove(&model);
        }
    }

    /// The answer's chunks, holding the lease until the stream ends or is dropped; the
    /// final chunk reports `load` (the wait for a load this request caused) as its load time.
    pub fn hold(self, chunks: ChunkStream, load: Duration) -> ChunkStream {
        let load_ns = u64::try_from(load.as_nanos()).unwrap_or(u64::MAX);
        chunks
            .map(move |mut item| {
                let _held = &self;
                if let Ok(chunk) = &mut item
                    && let Some(done) = &mut chunk.done
                    && load_ns > 0
                {
                    done.load_ns = Some(load_ns);
                }
                item
            })
            .boxed()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(model) = &self.model {
            self.book.release(model);
        }
    }
}

/// Every backend's book, by backend name; outlives config reloads. Stopping it (at
/// shutdown) cancels every timer.
#[derive(Default)]
pub struct Books {
    books: Mutex<HashMap<String, Arc<Book>>>,
    stop: CancellationToken,
}

impl Books {
    pub fn get(&self, backend: &str) -> Arc<Book> {
        self.books
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(backend.to_owned())
            .or_insert_with(|| Arc::new(Book::new(self.stop.clone())))
            .clone()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(value: Value) -> Result<KeepAlive, String> {
        parse(Some(&value))
    }

    #[test]
    fn keep_alive_reads_as_ollama_does() {
        let secs = |s: u64| Ok(KeepAlive::For(Duration::from_secs(s)));
        assert_eq!(parse(None), secs(300));
        assert_eq!(parsed(Value::Null), secs(300));
        assert_eq!(parsed(json!("5m")), secs(300));
        assert_eq!(parsed(json!("30s")), secs(30));
        assert_eq!(parsed(json!("1h30m")), secs(5400));
        assert_eq!(parsed(json!("1.5s")), Ok(KeepAlive::For(Duration::from_millis(1500))));
        assert_eq!(parsed(json!("250ms")), Ok(KeepAlive::For(Duration::from_millis(250))));
        assert_eq!(parsed(json!(300)), secs(300));
        assert_eq!(parsed(json!(2.5)), Ok(KeepAlive::For(Duration::from_millis(2500))));
        for zero in [json!(0), json!(0.0), json!("0"), json!("0s"), json!("0m")] {
            assert_eq!(parsed(zero.clone()), Ok(KeepAlive::Unload), "{zero}");
        }
        for forever in [json!(-1), json!(-0.5), json!("-1m"), json!("-5s")] {
            assert_eq!(parsed(forever.clone()), Ok(KeepAlive::Forever), "{forever}");
        }
        assert_eq!(parsed(json!(1e300)), Ok(KeepAlive::For(Duration::MAX)));
    }

    #[test]
    fn a_keep_alive_that_is_not_a_duration_is_refused_by_name() {
        for bad in [
            json!("5"),
            json!("soon"),
            json!("5 m"),
            json!("m"),
            json!(""),
            json!("1..5s"),
            json!(true),
            json!([1]),
        ] {
            let e = parsed(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(
                e,
                format!("keep_alive: invalid duration {bad} (use e.g. \"5m\", \"30s\", 300, 0 or -1)")
            );
        }
    }

    /// A book whose unloads are recorded.
    fn book() -> (Arc<Book>, Arc<Mutex<Vec<String>>>, Books) {
        let books = Books::default();
        let book = books.get("local");
        let unloaded = Arc::new(Mutex::new(Vec::new()));
        let seen = unloaded.clone();
        book.attach(Arc::new(move |model| {
            seen.lock().unwrap().push(model);
            Box::pin(async {})
        }));
        (book, unloaded, books)
    }

    /// Lets the timer tasks run up to the paused clock's now.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_is_unloaded_when_its_keep_alive_runs_out_after_the_last_request() {
        let (book, unloaded, _books) = book();
        let ka = KeepAlive::For(Duration::from_secs(30));
        let (first, new) = book.begin("m", ka);
        assert!(new);
        let (second, new) = book.begin("m", ka);
        assert!(!new);
        drop(first);
        tokio::time::advance(Duration::from_secs(60)).await;
        settle().await;
        assert!(unloaded.lock().unwrap().is_empty(), "still in use");
        drop(second);
        tokio::time::advance(Duration::from_secs(29)).await;
        settle().await;
        assert!(unloaded.lock().unwrap().is_empty());
        // A request within the keep-alive pushes the deadline on.
        drop(book.begin("m", ka));
        tokio::time::advance(Duration::from_secs(29)).await;
        settle().await;
        assert!(unloaded.lock().unwrap().is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(*unloaded.lock().unwrap(), ["m"]);
        assert!(book.expiries(SystemTime::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_zero_unloads_when_idle_and_forever_never() {
        let (book, unloaded, _books) = book();
        drop(book.begin("now", KeepAlive::Unload));
        book.hold("kept", KeepAlive::Forever);
        settle().await;
        assert_eq!(*unloaded.lock().unwrap(), ["now"]);
        tokio::time::advance(Duration::from_secs(1_000_000)).await;
        settle().await;
        assert_eq!(*unloaded.lock().unwrap(), ["now"]);
        assert_eq!(
            book.expiries(SystemTime::now()),
            HashMap::from([("kept".to_owned(), None)])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unload_asked_while_in_use_waits_for_the_last_request() {
        let (book, unloaded, _books) = book();
        let (lease, _) = book.begin("m", KeepAlive::Forever);
        assert!(book.unload_when_idle("m"));
        settle().await;
        assert!(unloaded.lock().unwrap().is_empty());
        drop(lease);
        settle().await;
        assert_eq!(*unloaded.lock().unwrap(), ["m"]);
        // Idle: dropped from the book at once, for the caller to unload.
        book.hold("idle", KeepAlive::Forever);
        assert!(!book.unload_when_idle("idle"));
        assert!(book.expiries(SystemTime::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_cancels_the_timers_and_a_forgotten_lease_sets_none() {
        let (book, unloaded, books) = book();
        drop(book.begin("m", KeepAlive::For(Duration::from_secs(5))));
        let (failed, _) = book.begin("never-loaded", KeepAlive::For(Duration::from_secs(1)));
        failed.forget();
        books.stop();
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        assert!(unloaded.lock().unwrap().is_empty());
        assert!(!book.expiries(SystemTime::now()).contains_key("never-loaded"));
    }
}
