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
    /// The start of a line not yet ended.
    buffer: Vec<u8>,
    assembler: Assembler,
    /// A `\r` ended the last chunk; a `\n` starting the next belongs to it.
    pending_cr: bool,
}

/// The event being assembled from its lines.
#[derive(Debug, Default)]
struct Assembler {
    event: Event,
    has_data: bool,
    /// The last event's name buffer, reused for the next.
    spare_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event grew past {MAX_EVENT_BYTES} bytes without ending")]
pub struct TooLarge;

impl From<TooLarge> for String {
    fn from(error: TooLarge) -> String {
        error.to_string()
    }
}

impl Parser {
    pub fn new() -> Self {
        Parser::default()
    }

    /// Adds bytes and appends every event they complete to `events`.
    pub fn push(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<(), TooLarge> {
        self.feed(bytes, &mut |event: &Event| {
            events.push(event.clone());
            Ok::<(), TooLarge>(())
        })
    }

    /// Adds bytes and hands every event they complete to `on_event`, without allocating per
    /// event; stops at the first error.
    pub fn feed<E: From<TooLarge>>(
        &mut self,
        mut bytes: &[u8],
        on_event: &mut impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.pending_cr {
            self.pending_cr = false;
            if bytes.first() == Some(&b'\n') {
                bytes = &bytes[1..];
            }
        }
        if self.buffer.is_empty() {
            // The common case: lines are read straight from the chunk, only a tail is kept.
            let rest = self.lines(bytes, on_event)?;
            self.buffer.extend_from_slice(&bytes[rest..]);
        } else {
            self.buffer.extend_from_slice(bytes);
            let buffer = std::mem::take(&mut self.buffer);
            let rest = self.lines(&buffer, on_event);
            self.buffer = buffer;
            self.buffer.drain(..rest?);
        }
        if self.buffer.len() + self.assembler.event.data.len() > MAX_EVENT_BYTES {
            return Err(TooLarge.into());
        }
        Ok(())
    }

    /// Handles every whole line of `bytes`; returns where the unfinished tail starts.
    fn lines<E>(
        &mut self,
        bytes: &[u8],
        on_event: &mut impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut start = 0;
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &bytes[start..]) {
            let end = start + offset;
            let mut next = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            self.assembler.line(&bytes[start..end], on_event)?;
            start = next;
        }
        Ok(start)
    }

    /// At the end of the stream: an event not closed by a blank line is still delivered
    /// (some servers end without one).
    pub fn finish(&mut self, events: &mut Vec<Event>) {
        let _ = self.close(&mut |event: &Event| {
            events.push(event.clone());
            Ok::<(), TooLarge>(())
        });
    }

    /// [`finish`](Self::finish) handing the last event to `on_event`.
    pub fn close<E>(
        &mut self,
        on_event: &mut impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.buffer.is_empty() {
            let line = std::mem::take(&mut self.buffer);
            self.assembler.line(&line, on_event)?;
        }
        self.assembler.dispatch(on_event)
    }
}

impl Assembler {
    fn line<E>(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(&Event) -> Result<(), E>,
    ) -> Result<(), E> {
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line[0] == b':' {
            return Ok(());
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
            b"event" => {
                let mut name = self.spare_name.take().unwrap_or_default();
                name.clear();
                match std::str::from_utf8(value) {
                    Ok(value) => name.push_str(value),
                    Err(_) => name.push_str(&String::from_utf8_lossy(value)),
                }
                self.event.event = Some(name);
            }
            _ => {}
        }
        Ok(())
    }

    /// Hands the assembled event over and starts the next, keeping the buffers.
    fn dispatch<E>(&mut self, on_event: &mut impl FnMut(&Event) -> Result<(), E>) -> Result<(), E> {
        let result = if self.has_data || self.event.event.is_some() {
            on_event(&self.event)
        } else {
            Ok(())
        };
        self.event.data.clear();
        if let Some(name) = self.event.event.take() {
            self.spare_name = Some(name);
        }
        self.has_data = false;
        result
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
