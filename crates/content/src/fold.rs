//! Text folding for the page scanner, one character at a time: the same folding the
//! safeguarding alerts apply to searches and addresses (`safegate_safeguarding`'s
//! `normalise`), so one phrase spelt one way matches pages, searches and URLs alike.
//!
//! Steps per character: Unicode compatibility decomposition (NFKD) with combining
//! marks dropped (`suïcide` → `suicide`, full-width letters to ASCII); lower case;
//! the letters NFKD keeps whole (`ß æ ł ø đ ı` → `ss ae l o d i`); the leetspeak digits
//! and symbols (`0 1 3 4 5 7 @ $` → `o i e a s t a s`); every run of anything that
//! is neither letter nor digit becomes one space. ASCII goes through a 256-entry table
//! without touching the Unicode tables: that is the path of nearly every byte of a page.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// What one ASCII byte folds to: a byte of the folded text, or 0 for a separator.
const ASCII_FOLD: [u8; 256] = ascii_table();

const fn ascii_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0usize;
    while b < 128 {
        let byte = b as u8;
        table[b] = match byte {
            b'0' => b'o',
            b'1' => b'i',
            b'3' => b'e',
            b'4' | b'@' => b'a',
            b'5' | b'$' => b's',
            b'7' => b't',
            b'a'..=b'z' | b'2' | b'6' | b'8' | b'9' => byte,
            b'A'..=b'Z' => byte + 32,
            _ => 0,
        };
        b += 1;
    }
    table
}

/// [`ASCII_FOLD`] with a space for the separators, for the branch-free run loop.
const ASCII_OUT: [u8; 256] = {
    let mut table = ASCII_FOLD;
    let mut b = 0usize;
    while b < 256 {
        if table[b] == 0 {
            table[b] = b' ';
        }
        b += 1;
    }
    table
};

/// Two spaces in a row in mapped text: where [`Folder::ascii_run`] squeezes.
static DOUBLE_SPACE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"  "));

/// The number of spaces `bytes` starts with.
#[inline]
fn leading_spaces(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| b == b' ').count()
}

/// The folding state between characters: whether the last byte out was a space.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Folder {
    after_space: bool,
}

impl Folder {
    /// A folder whose output so far ends in a space (the caller sends the first one).
    pub(crate) fn new() -> Self {
        Self { after_space: true }
    }

    /// Folds one ASCII byte into `out`.
    #[inline(always)]
    pub(crate) fn ascii(&mut self, byte: u8, out: &mut impl FnMut(u8)) {
        let folded = ASCII_FOLD[usize::from(byte)];
        if folded != 0 {
            out(folded);
            self.after_space = false;
        } else if !self.after_space {
            out(b' ');
            self.after_space = true;
        }
    }

    /// Folds a run of ASCII bytes onto `out`, as [`Folder::ascii`] on each would, in
    /// two passes that do not branch on every byte: each byte mapped to its folded
    /// form or a space by table, then the runs of spaces (found with `memmem`, one
    /// every sentence or so) squeezed to one.
    #[inline]
    pub(crate) fn ascii_run(&mut self, run: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend(run.iter().map(|&byte| ASCII_OUT[usize::from(byte)]));
        let end = out.len();
        let mut read = start;
        if self.after_space {
            read += leading_spaces(&out[start..]);
        }
        let mut write = start;
        while read < end {
            let keep = match DOUBLE_SPACE.find(&out[read..end]) {
                // Keep up to and with the first space of the pair.
                Some(at) => read + at + 1,
                None => end,
            };
            if write != read {
                out.copy_within(read..keep, write);
            }
            write += keep - read;
            read = keep + leading_spaces(&out[keep..end]);
        }
        if write > start {
            self.after_space = out[write - 1] == b' ';
        }
        out.truncate(write);
    }

    /// A word break (a tag, an unknown entity).
    #[inline]
    pub(crate) fn space(&mut self, out: &mut impl FnMut(u8)) {
        if !self.after_space {
            out(b' ');
            self.after_space = true;
        }
    }

    /// Folds one character of any script into `out`.
    pub(crate) fn char(&mut self, c: char, out: &mut impl FnMut(u8)) {
        if c.is_ascii() {
            self.ascii(c as u8, out);
            return;
        }
        decompose_compatible(c, |d| {
            if is_combining_mark(d) {
                return;
            }
            for lower in d.to_lowercase() {
                match lower {
                    'ß' => {
                        self.plain('s', out);
                        self.plain('s', out);
                    }
                    'æ' => {
                        self.plain('a', out);
                        self.plain('e', out);
                    }
                    'ł' => self.plain('l', out),
                    'ø' => self.plain('o', out),
                    'đ' => self.plain('d', out),
                    'ı' => self.plain('i', out),
                    other => self.plain(other, out),
                }
            }
        });
    }

    /// A lower-cased, decomposed character: a letter or digit goes out as UTF-8.
    fn plain(&mut self, c: char, out: &mut impl FnMut(u8)) {
        if c.is_ascii() {
            self.ascii(c as u8, out);
        } else if c.is_alphanumeric() {
            let mut buf = [0u8; 4];
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                out(b);
            }
            self.after_space = false;
        } else {
            self.space(out);
        }
    }
}

/// Folds a whole text (a phrase of a list) with no space added at either end.
pub fn fold_text(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let mut folder = Folder::new();
    for c in text.chars() {
        folder.char(c, &mut |b| bytes.push(b));
    }
    // Only whole characters were pushed, so the bytes are UTF-8.
    let folded = String::from_utf8_lossy(&bytes);
    folded.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The branch-free run folds as the per-byte path does, across runs.
        #[test]
        fn ascii_runs_fold_as_bytes_do(text in "[ -~\t\n]{0,200}", cut in 0usize..200) {
            let bytes = text.as_bytes();
            let cut = cut.min(bytes.len());
            let mut one = Folder::new();
            let mut expected = Vec::new();
            for &b in bytes {
                one.ascii(b, &mut |f| expected.push(f));
            }
            let mut runs = Folder::new();
            let mut out = Vec::new();
            runs.ascii_run(&bytes[..cut], &mut out);
            runs.ascii_run(&bytes[cut..], &mut out);
            proptest::prop_assert_eq!(out, expected);
            proptest::prop_assert_eq!(runs.after_space, one.after_space);
        }
    }

    #[test]
    fn folds_like_the_alert_normalisation() {
        assert_eq!(fold_text("How to KILL   myself?!"), "how to kill myself");
        assert_eq!(fold_text("su\u{ef}cide"), "suicide");
        assert_eq!(fold_text("ｓｕｉｃｉｄｅ"), "suicide");
        assert_eq!(fold_text("k1ll_mys3lf"), "kill myself");
        assert_eq!(fold_text("$elf-h4rm"), "self harm");
        assert_eq!(
            fold_text("Zabić SIĘ, Straße, łódź"),
            "zabic sie strasse lodz"
        );
        assert_eq!(fold_text("хочу умереть"), "хочу умереть");
    }
}
