//! Cuts an SSE byte stream into whole events while keeping each event's bytes exactly as
//! they came, so they can be forwarded unchanged (or one left out) and read on the side.
//! The backend client's parser (`eventsource-stream`) yields parsed events only, which is
//! why the pass-through needs this one; the rules are the same (WHATWG): lines end in
//! CRLF, LF or CR, `data` lines join with LF, one space after the colon is dropped, `:`
//! starts a comment, a blank line ends the event.

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's bytes, up to and including the blank line that ends it.
    pub raw: Bytes,
    /// The `event` field; empty for a plain message.
    pub name: String,
    /// The `data` lines joined; `None` for a block without data (comments, keep-alives).
    pub data: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseSplitter {
    /// The bytes of the event being read.
    pending: Vec<u8>,
    /// Where the unfinished line starts in `pending`.
    line_start: usize,
    /// The last byte read was a CR: an LF right after it ends the same line.
    after_cr: bool,
    name: String,
    data: Option<String>,
}

impl SseSplitter {
    /// Takes the next bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                // The CR already ended its line (and maybe its event): the LF goes with
                // whatever follows, so the bytes forwarded stay the bytes received.
                self.pending.push(b'\n');
                self.line_start = self.pending.len();
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
            let terminator = if crlf { 2 } else { 1 };
            self.pending.extend_from_slice(&rest[..end + terminator]);
            let line = self.pending[self.line_start..self.pending.len() - terminator].to_vec();
            self.line_start = self.pending.len();
            self.after_cr = rest[end] == b'\r' && !crlf && end + 1 == rest.len();
            rest = &rest[end + terminator..];
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.pending.extend_from_slice(rest);
        events
    }

    /// The stream ended: an unfinished event's bytes, which SSE readers discard.
    pub fn rest(&mut self) -> Option<Bytes> {
        self.line_start = 0;
        (!self.pending.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.pending)))
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            self.line_start = 0;
            return Some(SseEvent {
                raw: Bytes::from(std::mem::take(&mut self.pending)),
                name: std::mem::take(&mut self.name),
                data: self.data.take(),
            });
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.name = value.into_owned(),
            _ => {}
        }
        None
    }
}

/// The chunk `stream_options.include_usage` adds at the end: `usage` and no choices.
pub fn is_usage_only(data: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        choices: Option<Vec<IgnoredAny>>,
        #[serde(default)]
        usage: Option<IgnoredAny>,
    }
    // Cheap test first: every other chunk of the stream goes through here too.
    data.contains("\"usage\"")
        && serde_json::from_str::<Probe>(data)
            .is_ok_and(|p| p.choices.is_some_and(|c| c.is_empty()) && p.usage.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(raw: &str, data: Option<&str>) -> SseEvent {
        SseEvent {
            raw: Bytes::copy_from_slice(raw.as_bytes()),
            name: String::new(),
            data: data.map(str::to_owned),
        }
    }

    /// Every event of `text` and the bytes left over, with `text` pushed in pieces of `n`.
    fn split(text: &str, n: usize) -> (Vec<SseEvent>, Option<Bytes>) {
        let mut splitter = SseSplitter::default();
        let mut events = Vec::new();
        for piece in text.as_bytes().chunks(n) {
            events.extend(splitter.push(piece));
        }
        (events, splitter.rest())
    }

    #[test]
    fn events_keep_their_bytes_wherever_the_stream_is_cut() {
        let text = "data: {\"a\":1}\n\n: keep-alive\n\nevent: error\ndata: x\ndata:y\n\ndata: [DONE]\n\n";
        for n in [1, 2, 3, 7, text.len()] {
            let (events, rest) = split(text, n);
            let mut error = event("event: error\ndata: x\ndata:y\n\n", Some("x\ny"));
            error.name = "error".into();
            assert_eq!(
                events,
                [
                    event("data: {\"a\":1}\n\n", Some("{\"a\":1}")),
                    event(": keep-alive\n\n", None),
                    error,
                    event("data: [DONE]\n\n", Some("[DONE]")),
                ],
                "pieces of {n}"
            );
            assert_eq!(rest, None);
        }
    }

    #[test]
    fn crlf_and_cr_line_ends() {
        let text = "data: a\r\n\r\ndata: b\r\rdata: c\n\ndata: cut";
        for n in 1..=text.len() {
            let (events, rest) = split(text, n);
            let data: Vec<_> = events.iter().map(|e| e.data.clone().unwrap()).collect();
            assert_eq!(data, ["a", "b", "c"], "pieces of {n}");
            let mut forwarded: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
            forwarded.extend(rest.unwrap().to_vec());
            assert_eq!(forwarded, text.as_bytes(), "pieces of {n}: nothing lost or added");
        }
    }

    #[test]
    fn usage_only_chunks_are_told_apart() {
        assert!(is_usage_only(
            r#"{"choices":[],"usage":{"prompt_tokens":1},"timings":{}}"#
        ));
        assert!(!is_usage_only(
            r#"{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only(r#"{"choices":[],"usage":null}"#));
        assert!(!is_usage_only(r#"{"choices":[{"delta":{"content":"usage"}}]}"#));
        assert!(!is_usage_only("[DONE]"));
    }
}
