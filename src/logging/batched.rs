//! The binary's log output (stdout), written in batches: a log line goes into a buffer, and
//! a thread writes out what has gathered 50 ms after the first line, so a busy
//! server makes one `write(2)` for many lines rather than one per request (that syscall was
//! most of the per-request log line's cost: ~10 of ~30 µs CPU, measured at 8k req/s).
//! Idle, the thread sleeps on a condition variable. Dropping the [`Flusher`] writes
//! whatever is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long lines gather after the first one before they are written. Long enough that
/// a modest rate (~100 requests/s) shares the thread's wake-up and sleep among several
/// lines: at 5 ms each line had its own, ~12 % of ollabridge's CPU at that rate.
pub const GATHER: Duration = Duration::from_millis(50);
/// Beyond this many buffered bytes (stdout not keeping up), a line's writer writes the
/// buffer out itself, as an unbuffered writer would, instead of buffering without bound.
const MAX_BUFFERED: usize = 1 << 20;

struct Shared<W> {
    state: Mutex<State<W>>,
    wake: Condvar,
}

struct State<W> {
    buffer: Vec<u8>,
    closed: bool,
    out: Option<W>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `MakeWriter` handed to `tracing_subscriber`: cheap to clone.
pub struct Batched<W> {
    shared: Arc<Shared<W>>,
}

impl<W> Clone for Batched<W> {
    fn clone(&self) -> Self {
        Batched {
            shared: self.shared.clone(),
        }
    }
}

/// Writes what is left when dropped, then stops the thread.
pub struct Flusher<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

/// Buffers lines for `out`; a thread writes them `gather` after the first of a batch.
pub fn batched<W: Write + Send + 'static>(out: W, gather: Duration) -> (Batched<W>, Flusher<W>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Vec::new(),
            closed: false,
            out: Some(out),
        }),
        wake: Condvar::new(),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || flush_loop(&shared, gather))
            .ok()
    };
    (Batched { shared: shared.clone() }, Flusher { shared, thread })
}

fn flush_loop<W: Write>(shared: &Shared<W>, gather: Duration) {
    let mut spare = Vec::new();
    loop {
        let mut state = lock(&shared.state);
        while state.buffer.is_empty() && !state.closed {
            state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if !state.closed {
            // Let more lines gather.
            drop(state);
            std::thread::sleep(gather);
            state = lock(&shared.state);
        }
        std::mem::swap(&mut state.buffer, &mut spare);
        let closed = state.closed;
        let mut out = state.out.take();
        drop(state);
        if let Some(out) = out.as_mut() {
            // Nowhere to report a failure to write the log.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
        }
        spare.clear();
        let mut state = lock(&shared.state);
        state.out = out;
        if closed && state.buffer.is_empty() {
            return;
        }
    }
}

impl<W: Write + Send + 'static> Drop for Flusher<W> {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
        match self.thread.take() {
            Some(thread) => {
                let _ = thread.join();
            }
            // No thread could be started: write out here.
            None => {
                let mut state = lock(&self.shared.state);
                let buffer = std::mem::take(&mut state.buffer);
                if let Some(out) = state.out.as_mut() {
                    let _ = out.write_all(&buffer).and_then(|()| out.flush());
                }
            }
        }
    }
}

impl<W: Write + Send + 'static> Write for Batched<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut state = lock(&self.shared.state);
        let was_empty = state.buffer.is_empty();
        state.buffer.extend_from_slice(bytes);
        if state.buffer.len() > MAX_BUFFERED || state.closed {
            // Out of step (or shutting down): write here, holding the lock, as a plain
            // writer would block.
            let buffer = std::mem::take(&mut state.buffer);
            if let Some(out) = state.out.as_mut() {
                return out.write_all(&buffer).and_then(|()| out.flush());
            }
            // The thread is writing: put it back, it comes round again.
            state.buffer = buffer;
            return Ok(());
        }
        drop(state);
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> tracing_subscriber::fmt::MakeWriter<'a> for Batched<W> {
    type Writer = Batched<W>;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records each `write` call it gets.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_written_together_come_out_in_one_write_and_all_at_drop() {
        let calls = Calls::default();
        let (mut writer, flusher) = batched(calls.clone(), Duration::from_millis(200));
        for i in 0..100 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(flusher);
        let calls = lock(&calls.0).clone();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(calls.concat(), expected.as_bytes());
        assert_eq!(calls.len(), 1, "one write for the batch");
    }

    #[test]
    fn a_line_is_written_soon_without_a_drop() {
        let calls = Calls::default();
        let (mut writer, _flusher) = batched(calls.clone(), Duration::from_millis(1));
        writer.write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&calls.0).concat() != b"hello\n" {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn lines_after_the_flusher_is_gone_are_written_directly() {
        let calls = Calls::default();
        let (mut writer, flusher) = batched(calls.clone(), Duration::from_millis(1));
        drop(flusher);
        writer.write_all(b"late\n").unwrap();
        assert_eq!(lock(&calls.0).concat(), b"late\n");
    }
}
