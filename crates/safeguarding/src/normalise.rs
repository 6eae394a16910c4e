//! Text normalisation for phrase matching: what a search box or a URL says, folded so
//! that spelling games do not hide a phrase. The same function is applied to the
//! phrases and to the text, so both sides agree.
//!
//! Steps: percent-decoding (`%20`, and `+` as a space) when asked; Unicode
//! compatibility decomposition (NFKD: full-width letters, ligatures, superscripts) with
//! the combining marks dropped (`suïcide` → `suicide`); lower case; the basic leetspeak
//! digits and symbols (`0 1 3 4 5 7 @ $` → `o i e a s t a s`); the letters NFKD
//! keeps whole (`ß ł ø đ æ ı` → `ss l o d ae i`); every run of anything
//! that is not a letter or digit becomes one space. The result starts and ends with a
//! space, so a phrase written ` kill myself ` matches on word boundaries only.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Folds `text` for matching (see the module documentation).
pub fn normalise(text: &str) -> String {
    let mut folded = Folded {
        out: String::with_capacity(text.len() + 2),
        after_space: true,
    };
    folded.out.push(' ');
    if text.is_ascii() {
        // NFKD leaves ASCII as it is and it has no combining marks: most URLs and
        // searches skip the decomposition and the Unicode tables.
        for &byte in text.as_bytes() {
            folded.push_ascii(byte.to_ascii_lowercase());
        }
    } else {
        for c in text.nfkd().filter(|c| !is_combining_mark(*c)) {
            for c in c.to_lowercase() {
                folded.push(c);
            }
        }
    }
    if !folded.after_space {
        folded.out.push(' ');
    }
    folded.out
}

/// The folded text as it is built.
struct Folded {
    out: String,
    after_space: bool,
}

impl Folded {
    /// Adds one decomposed, lower-cased character.
    fn push(&mut self, c: char) {
        // Letters NFKD keeps whole, folded as people type them without the key.
        match c {
            'ß' => {
                self.push_plain('s');
                self.push_plain('s');
            }
            'æ' => {
                self.push_plain('a');
                self.push_plain('e');
            }
            'ł' => self.push_plain('l'),
            'ø' => self.push_plain('o'),
            'đ' => self.push_plain('d'),
            'ı' => self.push_plain('i'),
            other => self.push_plain(other),
        }
    }

    /// [`Folded::push_plain`] for one lower-cased ASCII byte, without decoding
    /// characters: the path of nearly every address and search.
    #[inline]
    fn push_ascii(&mut self, byte: u8) {
        let byte = match byte {
            b'0' => b'o',
            b'1' => b'i',
            b'3' => b'e',
            b'4' | b'@' => b'a',
            b'5' | b'$' => b's',
            b'7' => b't',
            other => other,
        };
        if byte.is_ascii_alphanumeric() {
            self.out.push(char::from(byte));
            self.after_space = false;
        } else if !self.after_space {
            self.out.push(' ');
            self.after_space = true;
        }
    }

    /// Adds one lower-cased character that needs no further folding:
    /// leetspeak digits and symbols become letters, other non-alphanumerics a space.
    /// Not recursive, so it inlines into the per-character loops.
    #[inline]
    fn push_plain(&mut self, c: char) {
        let c = match c {
            '0' => 'o',
            '1' => 'i',
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' => 't',
            other => other,
        };
        if c.is_alphanumeric() {
            self.out.push(c);
            self.after_space = false;
        } else if !self.after_space {
            self.out.push(' ');
            self.after_space = true;
        }
    }
}

/// Decodes `%XX` escapes and `+` (a space in query strings); invalid escapes and
/// invalid UTF-8 are kept as they are (lossily).
pub fn percent_decode(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_accents_widths_leetspeak_and_separators() {
        assert_eq!(normalise("How to KILL   myself?!"), " how to kill myself ");
        assert_eq!(normalise("su\u{ef}cide"), " suicide ");
        assert_eq!(normalise("ｓｕｉｃｉｄｅ"), " suicide ");
        assert_eq!(normalise("k1ll_mys3lf"), " kill myself ");
        assert_eq!(normalise("$elf-h4rm"), " self harm ");
        assert_eq!(normalise(""), " ");
        assert_eq!(
            normalise("Zabić SIĘ, Straße, łódź"),
            " zabic sie strasse lodz "
        );
        assert_eq!(normalise("хочу умереть"), " хочу умереть ");
        assert_eq!(
            normalise("<script>alert(1)</script>"),
            " script alert i script "
        );
    }

    #[test]
    fn percent_decoding_keeps_what_it_cannot_decode() {
        assert_eq!(
            percent_decode("/search?q=kill%20my+self"),
            "/search?q=kill my self"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
    }
}
