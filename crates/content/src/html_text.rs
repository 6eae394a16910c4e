//! The text a person reads on a page, taken from UTF-8 markup as it streams: tags,
//! comments, scripts and styles are skipped; character references (`&amp;`,
//! `&#233;`, `&#x27;`) are decoded; block-level tags break words and inline ones
//! (`<b>`, `<span>`, `<a>` ...) do not, so `ki<b>ll</b>` reads as a browser shows it.
//!
//! A state machine with fixed-size state (a tag name of at most 8 bytes, a reference
//! of at most 12): any input, however long or broken, costs constant memory, and a
//! chunk boundary can fall anywhere. Plain text and JSON go through the same machine
//! in their own modes. The states that most bytes are in (text, inside a tag, in a
//! script or style body, in a comment) jump to the next byte that can change them
//! with `memchr` and hand runs of ASCII text to the sink whole; the rare states
//! (a tag's name, `<!`, a reference) go byte by byte. Both give the same text as the
//! byte-at-a-time machine (`feed_bytewise`, kept for the tests that check it).

/// Where extracted text goes.
pub(crate) trait TextSink {
    /// One ASCII byte of text.
    fn ascii(&mut self, byte: u8);
    /// A run of ASCII bytes of text (every byte below 0x80).
    fn ascii_run(&mut self, run: &[u8]) {
        for &byte in run {
            self.ascii(byte);
        }
    }
    /// One non-ASCII character of text.
    fn ch(&mut self, c: char);
    /// A word break.
    fn brk(&mut self);
}

/// What kind of text the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// `text/html`, `application/xhtml+xml`.
    Html,
    /// `text/plain`.
    Plain,
    /// `application/json` and `+json` types: escapes are word breaks.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// After `<`.
    TagOpen,
    /// In a tag's name (`end`: `</name`).
    TagName {
        end: bool,
    },
    /// In a tag after its name; `quote` is the open attribute quote (0: none);
    /// `raw`: 1 for `<script`, 2 for `<style` (their bodies are skipped), else 0.
    InTag {
        quote: u8,
        raw: u8,
    },
    /// After `<!`: `dashes` of `--` seen so far.
    Bang {
        dashes: u8,
    },
    /// In `<!-- -->`: consecutive `-` seen.
    Comment {
        dashes: u8,
    },
    /// In a `<script>` or `<style>` body: how much of `</script` / `</style` matched.
    RawText {
        style: bool,
        matched: u8,
    },
    /// After `&`.
    Reference,
    /// After `\` in JSON.
    JsonEscape,
}

/// Inline tags, which do not break words.
const INLINE: &[&[u8]] = &[
    b"a", b"abbr", b"b", b"bdi", b"bdo", b"cite", b"code", b"data", b"em", b"font", b"i", b"kbd",
    b"mark", b"q", b"s", b"samp", b"small", b"span", b"strong", b"sub", b"sup", b"time", b"u",
    b"var", b"wbr",
];

/// The extraction state between chunks.
#[derive(Debug, Clone)]
pub(crate) struct HtmlText {
    markup: Markup,
    state: State,
    name: [u8; 8],
    name_len: u8,
    reference: [u8; 12],
    reference_len: u8,
    utf8: [u8; 4],
    utf8_len: u8,
    utf8_need: u8,
}

impl HtmlText {
    pub(crate) fn new(markup: Markup) -> Self {
        Self {
            markup,
            state: State::Text,
            name: [0; 8],
            name_len: 0,
            reference: [0; 12],
            reference_len: 0,
            utf8: [0; 4],
            utf8_len: 0,
            utf8_need: 0,
        }
    }

    /// Feeds UTF-8 text (a chunk may end inside a character).
    pub(crate) fn feed(&mut self, text: &[u8], sink: &mut impl TextSink) {
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            i += match self.state {
                State::Text => self.text_run(rest, sink),
                State::InTag { quote: 0, raw } => match memchr::memchr3(b'>', b'"', b'\'', rest) {
                    Some(at) => {
                        self.in_tag(rest[at], 0, raw);
                        at + 1
                    }
                    None => rest.len(),
                },
                State::InTag { quote, raw } => match memchr::memchr(quote, rest) {
                    Some(at) => {
                        self.state = State::InTag { quote: 0, raw };
                        at + 1
                    }
                    None => rest.len(),
                },
                // Only `<` can start the closing tag.
                State::RawText { matched: 0, .. } => match memchr::memchr(b'<', rest) {
                    Some(0) => usize::from(self.markup_byte(rest[0], sink)),
                    Some(at) => at,
                    None => rest.len(),
                },
                State::Comment { dashes } => match memchr::memchr2(b'-', b'>', rest) {
                    Some(0) => {
                        self.markup_byte(rest[0], sink);
                        1
                    }
                    Some(at) => {
                        // The bytes skipped end any run of dashes.
                        self.state = State::Comment { dashes: 0 };
                        at
                    }
                    None => {
                        if dashes != 0 {
                            self.state = State::Comment { dashes: 0 };
                        }
                        rest.len()
                    }
                },
                _ => usize::from(self.markup_byte(rest[0], sink)),
            };
        }
    }

    /// Text up to the next byte that changes state; returns the bytes consumed.
    #[inline]
    fn text_run(&mut self, rest: &[u8], sink: &mut impl TextSink) -> usize {
        let end = match self.markup {
            Markup::Html => memchr::memchr2(b'<', b'&', rest),
            Markup::Json => memchr::memchr(b'\\', rest),
            Markup::Plain => None,
        };
        let Some(end) = end else {
            self.text_bytes(rest, sink);
            return rest.len();
        };
        self.text_bytes(&rest[..end], sink);
        match rest[end] {
            b'<' => self.state = State::TagOpen,
            b'&' => {
                self.reference_len = 0;
                self.state = State::Reference;
            }
            _ => {
                sink.brk();
                self.state = State::JsonEscape;
            }
        }
        end + 1
    }

    /// Text bytes with no markup in them: ASCII runs whole, other bytes one by one.
    #[inline]
    fn text_bytes(&mut self, mut text: &[u8], sink: &mut impl TextSink) {
        while !text.is_empty() {
            let ascii = ascii_prefix(text);
            if ascii > 0 {
                if self.utf8_len != 0 {
                    // A character cut short: a replacement character, a break.
                    self.utf8_len = 0;
                    sink.brk();
                }
                sink.ascii_run(&text[..ascii]);
            }
            let other = text[ascii..]
                .iter()
                .position(u8::is_ascii)
                .map_or(text.len(), |n| ascii + n);
            for &byte in &text[ascii..other] {
                self.utf8_byte(byte, sink);
            }
            text = &text[other..];
        }
    }

    /// The byte-at-a-time machine [`HtmlText::feed`] must agree with.
    #[cfg(test)]
    pub(crate) fn feed_bytewise(&mut self, text: &[u8], sink: &mut impl TextSink) {
        let mut i = 0;
        while i < text.len() {
            let byte = text[i];
            i += 1;
            if self.state == State::Text {
                match byte {
                    b'<' if self.markup == Markup::Html => self.state = State::TagOpen,
                    b'&' if self.markup == Markup::Html => {
                        self.reference_len = 0;
                        self.state = State::Reference;
                    }
                    b'\\' if self.markup == Markup::Json => {
                        sink.brk();
                        self.state = State::JsonEscape;
                    }
                    0..0x80 => {
                        if self.utf8_len != 0 {
                            self.utf8_len = 0;
                            sink.brk();
                        }
                        sink.ascii(byte)
                    }
                    _ => self.utf8_byte(byte, sink),
                }
                continue;
            }
            if !self.markup_byte(byte, sink) {
                i -= 1;
            }
        }
    }

    /// Collects the bytes of one multi-byte character.
    #[inline]
    fn utf8_byte(&mut self, byte: u8, sink: &mut impl TextSink) {
        if byte >= 0xC0 {
            self.utf8[0] = byte;
            self.utf8_len = 1;
            self.utf8_need = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            return;
        }
        if self.utf8_len == 0 || usize::from(self.utf8_len) >= self.utf8.len() {
            self.utf8_len = 0;
            sink.brk();
            return;
        }
        self.utf8[usize::from(self.utf8_len)] = byte;
        self.utf8_len += 1;
        if self.utf8_len == self.utf8_need {
            let bytes = &self.utf8[..usize::from(self.utf8_len)];
            match std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.chars().next())
            {
                Some(c) => sink.ch(c),
                None => sink.brk(),
            }
            self.utf8_len = 0;
        }
    }

    /// One byte outside plain text; false when it must be read again as text.
    fn markup_byte(&mut self, byte: u8, sink: &mut impl TextSink) -> bool {
        match self.state {
            State::Text => {}
            State::TagOpen => return self.tag_open(byte, sink),
            State::TagName { end } => self.tag_name(byte, end, sink),
            State::InTag { quote, raw } => self.in_tag(byte, quote, raw),
            State::Bang { dashes } => {
                self.state = match (byte, dashes) {
                    (b'-', 0) => State::Bang { dashes: 1 },
                    (b'-', _) => State::Comment { dashes: 0 },
                    (b'>', _) => State::Text,
                    _ => State::InTag { quote: 0, raw: 0 },
                };
            }
            State::Comment { dashes } => {
                self.state = match byte {
                    b'-' => State::Comment {
                        dashes: dashes.saturating_add(1),
                    },
                    b'>' if dashes >= 2 => State::Text,
                    _ => State::Comment { dashes: 0 },
                };
            }
            State::RawText { style, matched } => self.raw_text(byte, style, matched),
            State::Reference => return self.reference(byte, sink),
            State::JsonEscape => self.state = State::Text,
        }
        true
    }

    fn tag_open(&mut self, byte: u8, sink: &mut impl TextSink) -> bool {
        self.name_len = 0;
        self.state = match byte {
            b'!' => State::Bang { dashes: 0 },
            b'/' => State::TagName { end: true },
            b'?' => State::InTag { quote: 0, raw: 0 },
            b if b.is_ascii_alphabetic() => {
                self.push_name(b);
                State::TagName { end: false }
            }
            _ => {
                // `a < b`: not a tag.
                sink.brk();
                self.state = State::Text;
                return false;
            }
        };
        true
    }

    fn push_name(&mut self, byte: u8) {
        if usize::from(self.name_len) < self.name.len() {
            self.name[usize::from(self.name_len)] = byte.to_ascii_lowercase();
        }
        self.name_len = self.name_len.saturating_add(1);
    }

    fn tag_name(&mut self, byte: u8, end: bool, sink: &mut impl TextSink) {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b':' {
            self.push_name(byte);
            return;
        }
        let len = usize::from(self.name_len);
        let name = &self.name[..len.min(self.name.len())];
        if len > self.name.len() || !INLINE.contains(&name) {
            sink.brk();
        }
        let raw = !end && (name == b"script" || name == b"style");
        let style = name == b"style";
        self.state = State::InTag { quote: 0, raw: 0 };
        if byte == b'>' {
            self.state = if raw {
                State::RawText { style, matched: 0 }
            } else {
                State::Text
            };
        } else if raw {
            self.state = State::InTag {
                quote: 0,
                raw: if style { 2 } else { 1 },
            };
        }
    }

    fn in_tag(&mut self, byte: u8, quote: u8, raw: u8) {
        if quote != 0 {
            if byte == quote {
                self.state = State::InTag { quote: 0, raw };
            }
            return;
        }
        match (byte, raw) {
            (b'"' | b'\'', _) => self.state = State::InTag { quote: byte, raw },
            (b'>', 0) => self.state = State::Text,
            (b'>', _) => {
                self.state = State::RawText {
                    style: raw == 2,
                    matched: 0,
                }
            }
            _ => {}
        }
    }

    fn raw_text(&mut self, byte: u8, style: bool, matched: u8) {
        let close: &[u8] = if style { b"</style" } else { b"</script" };
        let matched = usize::from(matched);
        let next = if byte.to_ascii_lowercase() == close[matched] {
            matched + 1
        } else if byte == b'<' {
            1
        } else {
            0
        };
        self.state = if next == close.len() {
            State::InTag { quote: 0, raw: 0 }
        } else {
            State::RawText {
                style,
                matched: next as u8,
            }
        };
    }

    /// A byte after `&`: collects the name or number up to `;`.
    fn reference(&mut self, byte: u8, sink: &mut impl TextSink) -> bool {
        let len = usize::from(self.reference_len);
        if (byte.is_ascii_alphanumeric() || byte == b'#') && len < self.reference.len() {
            self.reference[len] = byte;
            self.reference_len += 1;
            return true;
        }
        self.state = State::Text;
        let name = &self.reference[..len];
        if byte == b';'
            && let Some(c) = decode_reference(name)
        {
            if c.is_ascii() {
                sink.ascii(c as u8);
            } else {
                sink.ch(c);
            }
            return true;
        }
        // Not a reference: the `&` breaks the word, the rest is text.
        sink.brk();
        for &b in name {
            sink.ascii(b);
        }
        false
    }
}

/// The length of the ASCII run `text` starts with, eight bytes at a time.
#[inline]
fn ascii_prefix(text: &[u8]) -> usize {
    let mut words = text.chunks_exact(8);
    let mut n = 0;
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let high = u64::from_le_bytes(bytes) & 0x8080_8080_8080_8080;
        if high != 0 {
            return n + (high.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + words
        .remainder()
        .iter()
        .position(|b| !b.is_ascii())
        .unwrap_or(words.remainder().len())
}

/// The character a reference stands for (numeric, or a common named one).
fn decode_reference(name: &[u8]) -> Option<char> {
    if let Some(number) = name.strip_prefix(b"#") {
        let text = std::str::from_utf8(number).ok()?;
        let value = match text.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => text.parse().ok()?,
        };
        return char::from_u32(value);
    }
    Some(match name {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        b"nbsp" => ' ',
        b"shy" => '\u{ad}',
        b"eacute" => 'é',
        b"egrave" => 'è',
        b"aacute" => 'á',
        b"agrave" => 'à',
        b"iacute" => 'í',
        b"oacute" => 'ó',
        b"uacute" => 'ú',
        b"ntilde" => 'ñ',
        b"ccedil" => 'ç',
        b"uuml" => 'ü',
        b"ouml" => 'ö',
        b"auml" => 'ä',
        b"szlig" => 'ß',
        b"rsquo" | b"lsquo" => '\'',
        b"ndash" | b"mdash" => '-',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(String);
    impl TextSink for Collect {
        fn ascii(&mut self, byte: u8) {
            self.0.push(char::from(byte));
        }
        fn ch(&mut self, c: char) {
            self.0.push(c);
        }
        fn brk(&mut self) {
            self.0.push('|');
        }
    }

    fn text(markup: Markup, chunks: &[&str]) -> String {
        let mut html = HtmlText::new(markup);
        let mut sink = Collect(String::new());
        for chunk in chunks {
            html.feed(chunk.as_bytes(), &mut sink);
        }
        sink.0
    }

    #[test]
    fn tags_scripts_styles_and_comments_are_skipped() {
        let page = "<html><head><style>p{x:'</b>'}</style><script type=\"a>b\">kill myself</script><i title=\"x>y\">z</i></head><body><p class='x>y'>Ki<b>ll</b> caf&eacute; &amp; &#x27;t&#39; a &nosuch; b<!-- hidden -- -> still -->c</p></body>";
        assert_eq!(
            text(Markup::Html, &[page]),
            "||||z|||Kill café & 't' a |nosuch; bc||"
        );
    }

    #[test]
    fn any_chunk_boundary_gives_the_same_text() {
        let page = "<p>Hello w&ouml;rld <script>x</script>zo\u{e9} <b>bold</b></p>end";
        let whole = text(Markup::Html, &[page]);
        for split in 0..page.len() {
            let (a, b) = page.as_bytes().split_at(split);
            let mut html = HtmlText::new(Markup::Html);
            let mut sink = Collect(String::new());
            html.feed(a, &mut sink);
            html.feed(b, &mut sink);
            assert_eq!(sink.0, whole, "split at {split}");
        }
    }

    fn bytewise(markup: Markup, page: &[u8]) -> String {
        let mut html = HtmlText::new(markup);
        let mut sink = Collect(String::new());
        html.feed_bytewise(page, &mut sink);
        sink.0
    }

    const TOKENS: [&str; 30] = [
        "<b>",
        "</b>",
        "<p>",
        "<P class=x>",
        "<script>",
        "</script>",
        "</SCRIPT ",
        "</scr",
        "<style>",
        "</style>",
        "<!--",
        "-->",
        "--",
        "-",
        "<!",
        "<?",
        "&amp;",
        "&#233;",
        "&#x",
        "&",
        ";",
        "<",
        ">",
        "\"",
        "'",
        " ",
        "\u{e9}",
        "\u{df}\u{1f600}",
        "\\",
        "word",
    ];

    proptest::proptest! {
        /// The memchr paths give the text of the byte-at-a-time machine, however the
        /// page is cut (UTF-8 cut mid-character and stray continuation bytes included).
        #[test]
        fn the_fast_paths_agree_with_the_bytewise_machine(
            picks in proptest::collection::vec(0..TOKENS.len() + 3, 0..150),
            size in 1usize..50,
        ) {
            let mut page = Vec::new();
            for pick in picks {
                match TOKENS.get(pick) {
                    Some(token) => page.extend_from_slice(token.as_bytes()),
                    None => page.extend_from_slice(&[[0x80u8, b'a'], [0xC3, 0xA9], [0xE2, b'<']][pick - TOKENS.len()]),
                }
            }
            for markup in [Markup::Html, Markup::Plain, Markup::Json] {
                let mut html = HtmlText::new(markup);
                let mut sink = Collect(String::new());
                for chunk in page.chunks(size) {
                    html.feed(chunk, &mut sink);
                }
                proptest::prop_assert_eq!(&sink.0, &bytewise(markup, &page));
            }
        }
    }

    #[test]
    fn plain_and_json_are_not_markup() {
        assert_eq!(text(Markup::Plain, &["a <b> &amp;"]), "a <b> &amp;");
        assert_eq!(
            text(Markup::Json, &["{\"a\":\"x\\ny\"}"]),
            "{\"a\":\"x|y\"}"
        );
    }
}
