//! Cuts an SSE byte stream into whole events, keeping each event's bytes exactly as they
//! came (the `/v1` relay forwards them unchanged) and its data readable without a copy
//! (the backend client translates it). Pure: no I/O. The rules are WHATWG's: lines end in
//! CRLF, LF or CR, `data` lines join with LF, one space after the colon is dropped, `:`
//! starts a comment, a blank line ends the event, a leading BOM is skipped.
//!
//! Not `eventsource-stream` (0.2.3), though it is well kept: its `parse_event` runs its
//! line parser over the whole unparsed buffer every time bytes arrive and `split_off`s the
//! rest after each line, so an event that arrives in k pieces costs O(size × k) — an 8 MB
//! event took 6 s of CPU, a 40 MB one 311 s — and it has no bound on an event's size.
//! Here each byte is searched for a line end once (`scanned` only moves forward), and an
//! event longer than the limit ends the stream.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// The largest event accepted, like the Ollama backend's line limit: one chunk of a
/// streamed answer is a few hundred bytes; 16 MiB still holds a whole long answer sent
/// as one event.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's bytes, up to and including the blank line that ends it.
    pub raw: Bytes,
    /// The `event` field; empty for a plain message.
    pub name: String,
    data: Data,
}

/// An event's data: most events have one `data` line, read in place in `raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    /// A block without data (comments, keep-alives).
    None,
    /// One line of valid UTF-8, at this range of `raw`.
    Line(Range<usize>),
    /// Several lines joined, or one that was not UTF-8.
    Joined(String),
}

impl SseEvent {
    /// The `data` lines joined; `None` for a block without data.
    pub fn data(&self) -> Option<&str> {
        match &self.data {
            Data::None => None,
            // The range was checked to be UTF-8 when its line was read.
            Data::Line(range) => std::str::from_utf8(&self.raw[range.clone()]).ok(),
            Data::Joined(data) => Some(data),
        }
    }
}

/// An event grew past the limit: the stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTooLarge {
    pub limit: usize,
}

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an SSE event longer than the limit of {} bytes", self.limit)
    }
}

#[derive(Debug)]
pub struct SseSplitter {
    /// Bytes not handed out yet: the event being read, from its first byte, and the
    /// events after it that came in the same push.
    buffer: BytesMut,
    /// How far `buffer` has been searched for line ends.
    scanned: usize,
    /// Where the unfinished line starts in `buffer`.
    line_start: usize,
    /// The last line ended in a CR at the end of the bytes so far: an LF right after
    /// it belongs to that line end.
    after_cr: bool,
    /// The first line was read (only it may start with a BOM).
    started: bool,
    name: String,
    data: Data,
    limit: usize,
    /// Bytes looked at in the search for line ends, for the linearity test.
    #[cfg(test)]
    examined: usize,
}

impl Default for SseSplitter {
    fn default() -> Self {
        SseSplitter::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseSplitter {
    fn with_limit(limit: usize) -> SseSplitter {
        SseSplitter {
            buffer: BytesMut::new(),
            scanned: 0,
            line_start: 0,
            after_cr: false,
            started: false,
            name: String::new(),
            data: Data::None,
            limit,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Takes the next bytes; [`SseSplitter::next_event`] then returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole event of the bytes pushed so far, or `None` until more come.
    /// After an error the stream cannot be read on.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
        loop {
            if self.after_cr && self.scanned < self.buffer.len() {
                self.after_cr = false;
                if self.buffer[self.scanned] == b'\n' {
                    // The CR already ended its line (and maybe its event): the LF goes
                    // with whatever follows, so the bytes forwarded stay the bytes received.
                    self.scanned += 1;
                    self.line_start = self.scanned;
                }
            }
            let unread = &self.buffer[self.scanned..];
            let Some(offset) = unread.iter().position(|b| matches!(b, b'\n' | b'\r')) else {
                #[cfg(test)]
                {
                    self.examined += unread.len();
                }
                self.scanned = self.buffer.len();
                // All of `buffer` is the unfinished event now.
                return match self.buffer.len() > self.limit {
                    true => Err(self.too_large()),
                    false => Ok(None),
                };
            };
            #[cfg(test)]
            {
                self.examined += offset + 1;
            }
            let end = self.scanned + offset;
            let mut next = end + 1;
            if self.buffer[end] == b'\r' {
                match self.buffer.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let mut line = self.line_start..end;
            self.scanned = next;
            self.line_start = next;
            if !self.started {
                self.started = true;
                if self.buffer[line.clone()].starts_with("\u{feff}".as_bytes()) {
                    line.start += 3;
                }
            }
            if !line.is_empty() {
                self.field(line);
                continue;
            }
            if next > self.limit {
                return Err(self.too_large());
            }
            self.scanned = 0;
            self.line_start = 0;
            return Ok(Some(SseEvent {
                raw: self.buffer.split_to(next).freeze(),
                name: std::mem::take(&mut self.name),
                data: std::mem::replace(&mut self.data, Data::None),
            }));
        }
    }

    /// The stream ended: an unfinished event's bytes, which SSE readers discard.
    pub fn rest(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        self.line_start = 0;
        (!self.buffer.is_empty()).then(|| self.buffer.split().freeze())
    }

    fn too_large(&self) -> EventTooLarge {
        EventTooLarge { limit: self.limit }
    }

    /// One line of the event being read (`line` is its range in `buffer`, without the end).
    fn field(&mut self, line: Range<usize>) {
        let text = &self.buffer[line.clone()];
        if text[0] == b':' {
            return;
        }
        let (field, value) = match text.iter().position(|b| *b == b':') {
            Some(colon) => {
                let skip = usize::from(text.get(colon + 1) == Some(&b' '));
                (&text[..colon], line.start + colon + 1 + skip..line.end)
            }
            None => (text, line.end..line.end),
        };
        match field {
            b"data" => {
                let bytes = &self.buffer[value.clone()];
                let text = String::from_utf8_lossy(bytes);
                self.data = match std::mem::replace(&mut self.data, Data::None) {
                    Data::None if matches!(text, std::borrow::Cow::Borrowed(_)) => Data::Line(value),
                    Data::None => Data::Joined(text.into_owned()),
                    Data::Line(first) => {
                        // Checked to be UTF-8 when read.
                        let first = String::from_utf8_lossy(&self.buffer[first]);
                        Data::Joined(format!("{first}\n{text}"))
                    }
                    Data::Joined(mut data) => {
                        data.push('\n');
                        data.push_str(&text);
                        Data::Joined(data)
                    }
                };
            }
            b"event" => self.name = String::from_utf8_lossy(&self.buffer[value]).into_owned(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as (raw, name, data).
    type Seen = (String, String, Option<String>);

    fn seen(event: &SseEvent) -> Seen {
        (
            String::from_utf8(event.raw.to_vec()).unwrap(),
            event.name.clone(),
            event.data().map(str::to_owned),
        )
    }

    fn expect(raw: &str, name: &str, data: Option<&str>) -> Seen {
        (raw.to_owned(), name.to_owned(), data.map(str::to_owned))
    }

    /// Every event of `text` and the bytes left over, with `text` pushed in pieces of `n`.
    fn split(text: &[u8], n: usize) -> (Vec<SseEvent>, Option<Bytes>) {
        let mut splitter = SseSplitter::default();
        let mut events = Vec::new();
        for piece in text.chunks(n) {
            splitter.push(piece);
            while let Some(event) = splitter.next_event().unwrap() {
                events.push(event);
            }
        }
        (events, splitter.rest())
    }

    #[test]
    fn events_keep_their_bytes_wherever_the_stream_is_cut() {
        let text = "data: {\"a\":1}\n\n: keep-alive\n\nevent: error\ndata: x\ndata:y\n\ndata: [DONE]\n\n";
        for n in 1..=text.len() {
            let (events, rest) = split(text.as_bytes(), n);
            assert_eq!(
                events.iter().map(seen).collect::<Vec<_>>(),
                [
                    expect("data: {\"a\":1}\n\n", "", Some("{\"a\":1}")),
                    expect(": keep-alive\n\n", "", None),
                    expect("event: error\ndata: x\ndata:y\n\n", "error", Some("x\ny")),
                    expect("data: [DONE]\n\n", "", Some("[DONE]")),
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
            let (events, rest) = split(text.as_bytes(), n);
            let data: Vec<_> = events.iter().map(|e| e.data().unwrap().to_owned()).collect();
            assert_eq!(data, ["a", "b", "c"], "pieces of {n}");
            let mut forwarded: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
            forwarded.extend(rest.unwrap().to_vec());
            assert_eq!(forwarded, text.as_bytes(), "pieces of {n}: nothing lost or added");
        }
    }

    #[test]
    fn field_forms_a_bom_and_bytes_that_are_not_utf8() {
        let text = b"\xEF\xBB\xBFdata:  two spaces\n\ndata\n\ndata:\ndata\n\nid: 1\nretry: 5\n\ndata: \xFFok\n\n";
        for n in 1..=text.len() {
            let (events, rest) = split(text, n);
            let data: Vec<_> = events.iter().map(|e| e.data().map(str::to_owned)).collect();
            let expected = [Some(" two spaces"), Some(""), Some("\n"), None, Some("\u{FFFD}ok")];
            assert_eq!(data, expected.map(|d| d.map(str::to_owned)), "pieces of {n}");
            assert_eq!(rest, None);
        }
    }

    #[test]
    fn an_event_over_the_limit_is_an_error_however_it_comes() {
        let limit = 64;
        let fits = format!("data: {}\n\n", "x".repeat(limit - 8));
        assert_eq!(fits.len(), limit);
        let over = format!("data: {}\n\n", "x".repeat(limit - 7));
        for n in [1, 5, limit, 1000] {
            let mut splitter = SseSplitter::with_limit(limit);
            let mut events = Vec::new();
            let mut error = None;
            for piece in [fits.as_bytes(), over.as_bytes()].concat().chunks(n) {
                splitter.push(piece);
                loop {
                    match splitter.next_event() {
                        Ok(Some(event)) => events.push(event),
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                if error.is_some() {
                    break;
                }
            }
            let fitting = expect(&fits, "", Some(&"x".repeat(limit - 8)));
            assert_eq!(events.iter().map(seen).collect::<Vec<_>>(), [fitting], "pieces of {n}");
            assert_eq!(error, Some(EventTooLarge { limit }), "pieces of {n}");
        }
        // An endless line is refused as soon as it passes the limit, not at its end.
        let mut splitter = SseSplitter::with_limit(limit);
        splitter.push(&[b'x'; 64]);
        assert_eq!(splitter.next_event(), Ok(None));
        splitter.push(b"x");
        assert_eq!(splitter.next_event(), Err(EventTooLarge { limit }));
        assert_eq!(
            EventTooLarge { limit: MAX_EVENT_BYTES }.to_string(),
            "an SSE event longer than the limit of 16777216 bytes"
        );
    }

    /// A 32 MiB event in 1 KiB pieces: every byte is searched for a line end once, so the
    /// work grows with the size, not with size × pieces as in `eventsource-stream`.
    #[test]
    fn a_large_event_in_small_pieces_is_read_once() {
        let size = 32 << 20;
        let mut splitter = SseSplitter::with_limit(64 << 20);
        let mut event = Vec::with_capacity(size + 8);
        event.extend_from_slice(b"data: ");
        event.resize(size, b'x');
        event.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        let mut events = Vec::new();
        for piece in event.chunks(1024) {
            splitter.push(piece);
            while let Some(event) = splitter.next_event().unwrap() {
                events.push(event);
            }
        }
        assert_eq!(splitter.examined, event.len());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].raw.len(), size + 2);
        assert_eq!(events[0].data().map(str::len), Some(size - 6));
        assert_eq!(events[1].data(), Some("[DONE]"));
    }
}
