//! The bytes of one backend exchange as they went over the wire, kept for the log row
//! when `database.store_bodies` is on. Shared between the backend client, which fills
//! it while the answer streams, and the recorder, which takes it when the answer ends.

use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone)]
pub struct Capture(Arc<Mutex<Captured>>);

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capture")
    }
}

struct Captured {
    limit: usize,
    request: Option<String>,
    response: Vec<u8>,
    /// Every response byte seen, kept or not.
    response_total: usize,
}

impl Capture {
    /// Keeps at most `limit` bytes of the response: a long stream must not grow memory.
    pub fn new(limit: usize) -> Capture {
        Capture(Arc::new(Mutex::new(Captured {
            limit,
            request: None,
            response: Vec::new(),
            response_total: 0,
        })))
    }

    /// A request sent: the exchange starts over, so a retry (a chat cut to fit its
    /// context) leaves the row the one that was answered, not the refused one's answer too.
    pub fn request(&self, body: &[u8]) {
        self.lock(|c| {
            c.request = Some(String::from_utf8_lossy(body).into_owned());
            c.response.clear();
            c.response_total = 0;
        });
    }

    pub fn response(&self, bytes: &[u8]) {
        self.lock(|c| {
            c.response_total += bytes.len();
            let room = c.limit.saturating_sub(c.response.len());
            c.response.extend_from_slice(&bytes[..bytes.len().min(room)]);
        });
    }

    /// The request and response bodies; a cut response says so at its end.
    pub fn take(&self) -> (Option<String>, Option<String>) {
        self.lock(|c| {
            let response = (c.response_total > 0).then(|| {
                let mut text = String::from_utf8_lossy(&c.response).into_owned();
                crate::text::cut_noting(&mut text, c.limit, c.response_total);
                text
            });
            (c.request.take(), response)
        })
    }

    fn lock<T>(&self, f: impl FnOnce(&mut Captured) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain bytes behind: still usable.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::Capture;

    #[test]
    fn keeps_the_request_and_at_most_limit_response_bytes() {
        let capture = Capture::new(34);
        assert_eq!(capture.take(), (None, None));
        capture.request(br#"{"model":"m"}"#);
        capture.response(b"data: ");
        capture.response(&[b'x'; 34]);
        // 34 bytes in all, the note included, so the log's own cap leaves it as it is.
        assert_eq!(
            capture.take(),
            (
                Some(r#"{"model":"m"}"#.to_owned()),
                Some("dat…[truncated, 40 bytes in all]".to_owned())
            )
        );
        let whole = Capture::new(64);
        whole.response(b"ok");
        assert_eq!(whole.take(), (None, Some("ok".to_owned())));
    }

    /// A context-overflow retry: its 400 is not kept before the answer to the retry.
    #[test]
    fn a_request_sent_again_keeps_only_its_own_answer() {
        let capture = Capture::new(64);
        capture.request(b"try 1");
        capture.response(b"400: too long");
        capture.request(b"try 2");
        capture.response(b"data: ok");
        assert_eq!(capture.take(), (Some("try 2".to_owned()), Some("data: ok".to_owned())));
    }
}
