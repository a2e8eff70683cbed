//! The JSON Lines file format (spec §2 "Lines"): split on `\n`, a trailing `\r` dropped,
//! blank lines skipped but counted.

use super::{Event, EventError, decode_json};
use std::io::{self, BufRead};

/// One non-blank line: its 1-based number and what it decoded to.
pub type NumberedEvent = (u64, Result<Event, EventError>);

/// Streams events from a reader, one line at a time, so memory does not grow with the file.
pub struct JsonLines<R> {
    reader: R,
    line: u64,
    buffer: Vec<u8>,
}

impl<R: BufRead> JsonLines<R> {
    pub fn new(reader: R) -> Self {
        JsonLines { reader, line: 0, buffer: Vec::new() }
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = io::Result<NumberedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buffer.clear();
            match self.reader.read_until(b'\n', &mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            self.line += 1;
            let mut text = self.buffer.as_slice();
            text = text.strip_suffix(b"\n").unwrap_or(text);
            text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Ok((self.line, decode_json(text))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_physical_line() {
        let input = b"\n  \t\r\nnot json\r\n{}\n\nlast";
        let lines: Vec<u64> = JsonLines::new(&input[..]).map(|r| r.unwrap().0).collect();
        assert_eq!(lines, vec![3, 4, 6]);
    }
}
