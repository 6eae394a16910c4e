//! Output for a person's terminal: recorded URLs, search terms and alert evidence are
//! attacker-controlled, and an escape sequence in them could rewrite the screen, set
//! the window title or worse. [`TerminalSafe`] passes text through with every control
//! character except line feed and tab written as a visible escape (`\x1b`, `\u{9b}`).

use std::io::{self, Write};

/// A writer that shows control characters instead of sending them: C0 controls other
/// than `\n` and `\t`, DEL, and the C1 controls U+0080..U+009F (two bytes in UTF-8,
/// possibly split across writes).
pub struct TerminalSafe<W: Write> {
    inner: W,
    /// A 0xC2 byte seen at the end of the last write: the start of a two-byte character.
    pending_c2: bool,
}

impl<W: Write> TerminalSafe<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending_c2: false,
        }
    }

    /// The wrapped writer, after writing a dangling 0xC2 byte on.
    pub fn into_inner(mut self) -> io::Result<W> {
        if std::mem::take(&mut self.pending_c2) {
            self.inner.write_all(&[0xC2])?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for TerminalSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut clean = Vec::with_capacity(buf.len());
        for &byte in buf {
            if std::mem::take(&mut self.pending_c2) {
                if (0x80..=0x9F).contains(&byte) {
                    clean.extend_from_slice(format!("\\u{{{byte:x}}}").as_bytes());
                    continue;
                }
                clean.push(0xC2);
            }
            match byte {
                b'\n' | b'\t' => clean.push(byte),
                0x00..=0x1F | 0x7F => clean.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
                0xC2 => self.pending_c2 = true,
                _ => clean.push(byte),
            }
        }
        self.inner.write_all(&clean)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn shown(chunks: &[&[u8]]) -> Vec<u8> {
        let mut safe = TerminalSafe::new(Vec::new());
        for chunk in chunks {
            safe.write_all(chunk).unwrap();
        }
        safe.into_inner().unwrap()
    }

    #[test]
    fn escape_sequences_are_shown_not_sent() {
        assert_eq!(
            shown(&[b"red \x1b[31mtext\x1b]0;title\x07 end\r\n"]),
            b"red \\x1b[31mtext\\x1b]0;title\\x07 end\\x0d\n"
        );
        assert_eq!(shown(&[b"a\tb\nc\x7f"]), b"a\tb\nc\\x7f");
    }

    #[test]
    fn c1_controls_are_shown_even_split_across_writes() {
        // U+009B is the one-byte CSI of C1; U+00E9 and U+00A3 pass.
        assert_eq!(
            shown(&["x\u{9b}31m \u{e9}".as_bytes()]),
            "x\\u{9b}31m \u{e9}".as_bytes()
        );
        assert_eq!(shown(&[b"x\xC2", b"\x9b31m"]), b"x\\u{9b}31m");
        assert_eq!(
            shown(&[b"caf\xC3\xA9 \xC2", b"\xA3"]),
            "caf\u{e9} \u{a3}".as_bytes()
        );
        // A dangling first byte is passed on at the end.
        assert_eq!(shown(&[b"end\xC2"]), b"end\xC2");
    }
}
