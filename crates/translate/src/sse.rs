//! An incremental parser for `text/event-stream` (the WHATWG server-sent events format):
//! feed it bytes as they arrive, take complete events out.

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
}

/// Largest event the parser holds before giving up on a stream: a provider that never ends an
/// event must not grow memory without bound.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Parser {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already scanned for line ends.
    scanned: usize,
    event: Event,
    has_data: bool,
    /// A `\r` ended the last chunk; a `\n` starting the next belongs to it.
    pending_cr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event grew past {MAX_EVENT_BYTES} bytes without ending")]
pub struct TooLarge;

impl Parser {
    pub fn new() -> Self {
        Parser::default()
    }

    /// Adds bytes and appends every event they complete to `events`.
    pub fn push(&mut self, mut bytes: &[u8], events: &mut Vec<Event>) -> Result<(), TooLarge> {
        if self.pending_cr {
            self.pending_cr = false;
            if bytes.first() == Some(&b'\n') {
                bytes = &bytes[1..];
            }
        }
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        let mut at = self.scanned;
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &self.buffer[at..]) {
            let end = at + offset;
            let mut next = end + 1;
            if self.buffer[end] == b'\r' {
                match self.buffer.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            let line = self.buffer[start..end].to_vec();
            self.line(&line, events);
            start = next;
            at = next;
        }
        self.buffer.drain(..start.min(self.buffer.len()));
        self.scanned = self.buffer.len();
        if self.buffer.len() + self.event.data.len() > MAX_EVENT_BYTES {
            return Err(TooLarge);
        }
        Ok(())
    }

    /// At the end of the stream: an event not closed by a blank line is still delivered
    /// (some servers end without one).
    pub fn finish(&mut self, events: &mut Vec<Event>) {
        if !self.buffer.is_empty() {
            let line = std::mem::take(&mut self.buffer);
            self.line(&line, events);
        }
        self.dispatch(events);
        self.scanned = 0;
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.event.data.push(b'\n');
                }
                self.event.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        if self.has_data || self.event.event.is_some() {
            events.push(std::mem::take(&mut self.event));
        }
        self.event = Event::default();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<Event> {
        let mut parser = Parser::new();
        let mut events = Vec::new();
        for chunk in input.chunks(piece) {
            parser.push(chunk, &mut events).unwrap();
        }
        parser.finish(&mut events);
        events
    }

    #[test]
    fn events_survive_any_split() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\n: comment\r\ndata: x\r\ndata: y\r\n\r\ndata: z\r\rdata: [DONE]\n\n";
        let expected = vec![
            Event {
                event: Some("message_start".into()),
                data: b"{\"a\":1}".to_vec(),
            },
            Event {
                event: None,
                data: b"x\ny".to_vec(),
            },
            Event {
                event: None,
                data: b"z".to_vec(),
            },
            Event {
                event: None,
                data: b"[DONE]".to_vec(),
            },
        ];
        for piece in 1..input.len() {
            assert_eq!(
                parse_in_pieces(input, piece),
                expected,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn an_unterminated_last_event_is_delivered() {
        assert_eq!(
            parse_in_pieces(b"data: tail", 3),
            vec![Event {
                event: None,
                data: b"tail".to_vec()
            }]
        );
    }
}
