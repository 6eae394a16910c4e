//! One response body scanned as it streams: content decoding (gzip, deflate, br,
//! zstd) → charset decoding to UTF-8 (the declared charset, a UTF-16 byte-order mark,
//! UTF-8 otherwise) → the readable text ([`crate::html_text`]) → folding
//! ([`crate::fold`]) → one DFA step per folded byte ([`crate::phrase_set`]).
//!
//! Memory per scan is fixed: the decoders' windows, an 8 KiB charset buffer, a bit
//! per pattern and the entries found; nothing grows with the body. Decoded bytes are
//! counted against [`ScanLimits::max_decoded`]; past it (a decompression bomb, an
//! endless body) the scan stops with what it found so far. A body that cannot be
//! decoded stops the scan the same way. The scanner only reads: the bytes passed to
//! the client are the caller's and never change.

use std::io::{self, Write};
use std::sync::Arc;

use aho_corasick::Anchored;
use aho_corasick::automaton::{Automaton, StateID};
use encoding_rs::{Encoding, UTF_8, UTF_16LE};

use crate::fold::Folder;
use crate::html_text::{HtmlText, Markup, TextSink};
use crate::phrase_set::{CategoryId, PhraseSet};

/// Bounds on one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Decoded bytes scanned at most (after decompression).
    pub max_decoded: u64,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_decoded: 32 * 1024 * 1024,
        }
    }
}

/// Why a scan stopped before the end of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// More decoded bytes than [`ScanLimits::max_decoded`].
    DecodedLimit,
    /// The compressed body is corrupt.
    Undecodable,
}

/// A response's `Content-Encoding`, when the scanner can undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// None (`identity` or no header).
    Identity,
    /// `gzip`, `x-gzip`.
    Gzip,
    /// `deflate` (zlib-wrapped, or raw as some servers send it).
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Coding {
    /// The coding of a `Content-Encoding` value; `None` for one the scanner cannot
    /// undo (several codings, or an unknown one): such a body is not scanned.
    pub fn from_header(value: Option<&str>) -> Option<Coding> {
        let value = value.map(str::trim).unwrap_or("");
        Some(match value.to_ascii_lowercase().as_str() {
            "" | "identity" => Coding::Identity,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => return None,
        })
    }
}

/// What a `Content-Type` says about scanning: the markup and the declared charset;
/// `None` for types that are not scanned (images, video, scripts, downloads).
pub fn content_type(value: Option<&str>) -> Option<(Markup, Option<&'static Encoding>)> {
    let value = value?;
    let mut params = value.split(';');
    let mime = params.next()?.trim().to_ascii_lowercase();
    let markup = match mime.as_str() {
        "text/html" | "application/xhtml+xml" => Markup::Html,
        "text/plain" => Markup::Plain,
        "application/json" => Markup::Json,
        m if m.ends_with("+json") => Markup::Json,
        _ => return None,
    };
    let charset = params.find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| Encoding::for_label(value.trim().trim_matches('"').as_bytes()))
            .flatten()
    });
    Some((markup, charset))
}

/// One response body being scanned.
pub struct Scan {
    coder: Coder,
}

enum Coder {
    Identity(TextStage),
    /// `deflate` before its first byte says zlib or raw.
    DeflateUndecided(TextStage),
    Gzip(Box<flate2::write::GzDecoder<TextStage>>),
    Zlib(Box<flate2::write::ZlibDecoder<TextStage>>),
    RawDeflate(Box<flate2::write::DeflateDecoder<TextStage>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<TextStage>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, TextStage>>),
}

impl Scan {
    /// Starts a scan of a body with `coding`, `markup` and the declared `charset`.
    pub fn new(
        set: Arc<PhraseSet>,
        coding: Coding,
        markup: Markup,
        charset: Option<&'static Encoding>,
        limits: ScanLimits,
    ) -> Scan {
        let stage = TextStage::new(set, markup, charset, limits);
        let coder = match coding {
            Coding::Identity => Coder::Identity(stage),
            Coding::Deflate => Coder::DeflateUndecided(stage),
            Coding::Gzip => Coder::Gzip(Box::new(flate2::write::GzDecoder::new(stage))),
            Coding::Brotli => Coder::Brotli(Box::new(
                brotli_decompressor::DecompressorWriter::new(stage, 4096),
            )),
            Coding::Zstd => match zstd::stream::write::Decoder::new(stage) {
                Ok(decoder) => Coder::Zstd(Box::new(decoder)),
                // zstd could not allocate its context: scan nothing.
                Err(_) => Coder::Identity(TextStage::stopped(Stopped::Undecodable)),
            },
        };
        Scan { coder }
    }

    /// Feeds the next bytes of the body as they came from the origin.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.stage().stopped.is_some() {
            return;
        }
        if let Coder::DeflateUndecided(stage) = &mut self.coder {
            let stage = std::mem::replace(stage, TextStage::stopped(Stopped::Undecodable));
            self.coder = if is_zlib_header(bytes[0]) {
                Coder::Zlib(Box::new(flate2::write::ZlibDecoder::new(stage)))
            } else {
                Coder::RawDeflate(Box::new(flate2::write::DeflateDecoder::new(stage)))
            };
        }
        let written = match &mut self.coder {
            Coder::Identity(stage) => stage.write_all(bytes),
            Coder::Gzip(d) => d.write_all(bytes),
            Coder::Zlib(d) => d.write_all(bytes),
            Coder::RawDeflate(d) => d.write_all(bytes),
            Coder::Brotli(d) => d.write_all(bytes),
            Coder::Zstd(d) => d.write_all(bytes),
            Coder::DeflateUndecided(_) => Ok(()),
        };
        if written.is_err() {
            self.stage_mut().stop(Stopped::Undecodable);
        }
    }

    /// The body ended: flushes the decoders and the last word.
    pub fn finish(&mut self) {
        if self.stage().stopped.is_none() {
            let flushed = match &mut self.coder {
                Coder::Gzip(d) => d.try_finish(),
                Coder::Zlib(d) => d.try_finish(),
                Coder::RawDeflate(d) => d.try_finish(),
                Coder::Brotli(d) => d.flush(),
                Coder::Zstd(d) => d.flush(),
                _ => Ok(()),
            };
            if flushed.is_err() {
                self.stage_mut().stop(Stopped::Undecodable);
            }
        }
        self.stage_mut().end();
    }

    /// Why the scan stopped early, if it did.
    pub fn stopped(&self) -> Option<Stopped> {
        self.stage().stopped
    }

    /// Decoded bytes scanned so far.
    pub fn decoded_bytes(&self) -> u64 {
        self.stage().decoded
    }

    /// The score so far, counting only the categories `counts` accepts.
    pub fn finding(&self, counts: impl Fn(CategoryId) -> bool) -> Finding {
        let stage = self.stage();
        match &stage.set {
            Some(set) => stage.matcher.finding(set, counts),
            None => Finding::default(),
        }
    }

    fn stage(&self) -> &TextStage {
        match &self.coder {
            Coder::Identity(s) | Coder::DeflateUndecided(s) => s,
            Coder::Gzip(d) => d.get_ref(),
            Coder::Zlib(d) => d.get_ref(),
            Coder::RawDeflate(d) => d.get_ref(),
            Coder::Brotli(d) => d.get_ref(),
            Coder::Zstd(d) => d.get_ref(),
        }
    }

    fn stage_mut(&mut self) -> &mut TextStage {
        match &mut self.coder {
            Coder::Identity(s) | Coder::DeflateUndecided(s) => s,
            Coder::Gzip(d) => d.get_mut(),
            Coder::Zlib(d) => d.get_mut(),
            Coder::RawDeflate(d) => d.get_mut(),
            Coder::Brotli(d) => d.get_mut(),
            Coder::Zstd(d) => d.get_mut(),
        }
    }
}

/// A zlib stream's first byte: compression method 8 with a window of at most 32 KiB.
fn is_zlib_header(byte: u8) -> bool {
    byte & 0x0f == 8 && byte >> 4 <= 7
}

/// The score of a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finding {
    /// Sum of the weights of the counted entries found.
    pub score: i64,
    /// Per category with a nonzero score, highest first.
    pub categories: Vec<(String, i64)>,
    /// The five highest-weight entries found, highest first.
    pub phrases: Vec<(String, i32)>,
}

/// The decoded side: charset, text, folding and matching.
struct TextStage {
    set: Option<Arc<PhraseSet>>,
    /// Folded text waiting for the automaton (at most a few times [`TEXT_SLICE`]).
    folded: Vec<u8>,
    charset: Charset,
    html: HtmlText,
    folder: Folder,
    matcher: Matcher,
    decoded: u64,
    limits: ScanLimits,
    stopped: Option<Stopped>,
}

enum Charset {
    /// UTF-8 unless the first two bytes are a UTF-16 byte-order mark.
    Sniffing {
        first: Option<u8>,
    },
    Utf8,
    Decoding(Box<encoding_rs::Decoder>),
}

impl TextStage {
    fn new(
        set: Arc<PhraseSet>,
        markup: Markup,
        charset: Option<&'static Encoding>,
        limits: ScanLimits,
    ) -> Self {
        let charset = match charset {
            Some(encoding) if encoding != UTF_8 => {
                Charset::Decoding(Box::new(encoding.new_decoder()))
            }
            _ => Charset::Sniffing { first: None },
        };
        let mut stage = Self {
            matcher: Matcher::new(&set),
            set: Some(set),
            folded: Vec::with_capacity(TEXT_SLICE + 64),
            charset,
            html: HtmlText::new(markup),
            folder: Folder::new(),
            decoded: 0,
            limits,
            stopped: None,
        };
        // The folded text starts with a space, so a phrase can start a word at once.
        stage.emit_space();
        stage
    }

    fn stopped(why: Stopped) -> Self {
        Self {
            set: None,
            folded: Vec::new(),
            charset: Charset::Utf8,
            html: HtmlText::new(Markup::Plain),
            folder: Folder::new(),
            matcher: Matcher::default(),
            decoded: 0,
            limits: ScanLimits::default(),
            stopped: Some(why),
        }
    }

    fn stop(&mut self, why: Stopped) {
        if self.stopped.is_none() {
            self.stopped = Some(why);
        }
    }

    fn emit_space(&mut self) {
        if let Some(set) = &self.set {
            self.matcher.run(set, b" ");
        }
    }

    /// The body's end: the last word ends (a phrase may end the page).
    fn end(&mut self) {
        if self.stopped.is_none() {
            match &mut self.charset {
                Charset::Sniffing { first: Some(b) } => {
                    let b = *b;
                    self.charset = Charset::Utf8;
                    self.text(&[b]);
                }
                Charset::Decoding(decoder) => {
                    let mut decoder = std::mem::replace(decoder, Box::new(UTF_8.new_decoder()));
                    self.decode(&mut decoder, &[], true);
                }
                _ => {}
            }
        }
        let Some(set) = self.set.as_deref() else {
            return;
        };
        self.folder.space(&mut |b| self.folded.push(b));
        self.matcher.run(set, &self.folded);
        self.folded.clear();
    }

    /// Decoded bytes in: charset decoding, then text.
    fn bytes(&mut self, bytes: &[u8]) {
        match &mut self.charset {
            Charset::Utf8 => self.text(bytes),
            Charset::Decoding(decoder) => {
                let mut decoder = std::mem::replace(decoder, Box::new(UTF_8.new_decoder()));
                self.decode(&mut decoder, bytes, false);
                self.charset = Charset::Decoding(decoder);
            }
            Charset::Sniffing { first } => {
                let mut head = [0u8; 2];
                let (head, rest) = match *first {
                    Some(b) => {
                        head[0] = b;
                        head[1] = bytes[0];
                        (&head[..], &bytes[1..])
                    }
                    None if bytes.len() == 1 => {
                        *first = Some(bytes[0]);
                        return;
                    }
                    None => (&bytes[..2], &bytes[2..]),
                };
                if head == [0xFF, 0xFE] || head == [0xFE, 0xFF] {
                    // UTF-16 with its byte-order mark: the decoder reads the mark.
                    let mut decoder = Box::new(UTF_16LE.new_decoder());
                    self.decode(&mut decoder, head, false);
                    self.decode(&mut decoder, rest, false);
                    self.charset = Charset::Decoding(decoder);
                } else {
                    self.charset = Charset::Utf8;
                    self.text(head);
                    self.text(rest);
                }
            }
        }
    }

    fn decode(&mut self, decoder: &mut encoding_rs::Decoder, mut input: &[u8], last: bool) {
        let mut out = [0u8; 8192];
        loop {
            let (result, read, written, _) = decoder.decode_to_utf8(input, &mut out, last);
            self.text(&out[..written]);
            input = &input[read..];
            if result == encoding_rs::CoderResult::InputEmpty {
                break;
            }
        }
    }

    /// UTF-8 text in: markup and folding into the buffer, then matching.
    fn text(&mut self, text: &[u8]) {
        let Some(set) = self.set.as_deref() else {
            return;
        };
        for slice in text.chunks(TEXT_SLICE) {
            let mut sink = FoldSink {
                folder: &mut self.folder,
                out: &mut self.folded,
            };
            self.html.feed(slice, &mut sink);
            self.matcher.run(set, &self.folded);
            self.folded.clear();
        }
    }
}

impl Write for TextStage {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.stopped.is_some() {
            return Err(io::Error::other("scan stopped"));
        }
        let room = self.limits.max_decoded.saturating_sub(self.decoded);
        let take = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.decoded += take as u64;
        if take > 0 {
            self.bytes(&buf[..take]);
        }
        if take < buf.len() {
            self.stop(Stopped::DecodedLimit);
            return Err(io::Error::other("decoded limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Text to folded bytes in a buffer, which the automaton then runs over in one tight
/// loop (the state stays in a register; see [`Matcher::run`]).
struct FoldSink<'a> {
    folder: &'a mut Folder,
    out: &'a mut Vec<u8>,
}

impl TextSink for FoldSink<'_> {
    #[inline(always)]
    fn ascii(&mut self, byte: u8) {
        let out = &mut *self.out;
        self.folder.ascii(byte, &mut |b| out.push(b));
    }

    fn ch(&mut self, c: char) {
        let out = &mut *self.out;
        self.folder.char(c, &mut |b| out.push(b));
    }

    fn brk(&mut self) {
        let out = &mut *self.out;
        self.folder.space(&mut |b| out.push(b));
    }
}

/// Text is folded and matched this many bytes at a time, which bounds the buffer.
const TEXT_SLICE: usize = 8 * 1024;

/// The automaton's state and what it found.
#[derive(Default)]
struct Matcher {
    state: Option<StateID>,
    /// One bit per pattern: seen on this page.
    seen: Vec<u64>,
    /// Combinations with some parts seen: (entry, parts seen).
    partial: Vec<(u32, u16)>,
    /// Entries complete on this page (each once).
    found: Vec<u32>,
}

impl Matcher {
    fn new(set: &PhraseSet) -> Self {
        Self {
            state: Some(set.start),
            seen: vec![0; set.patterns().div_ceil(64)],
            partial: Vec::new(),
            found: Vec::new(),
        }
    }

    /// Steps the automaton over folded bytes.
    fn run(&mut self, set: &PhraseSet, folded: &[u8]) {
        let Some(mut sid) = self.state else { return };
        let dfa = &set.dfa;
        for &byte in folded {
            sid = dfa.next_state(Anchored::No, sid, byte);
            if dfa.is_special(sid) && dfa.is_match(sid) {
                self.matched(set, sid);
            }
        }
        self.state = Some(sid);
    }

    #[cold]
    fn matched(&mut self, set: &PhraseSet, sid: StateID) {
        for i in 0..set.dfa.match_len(sid) {
            let pattern = set.dfa.match_pattern(sid, i).as_usize();
            let (word, bit) = (pattern / 64, 1u64 << (pattern % 64));
            if self.seen[word] & bit != 0 {
                continue;
            }
            self.seen[word] |= bit;
            for &entry in &set.uses[pattern].entries {
                let parts = set.entries[entry as usize].parts;
                if parts <= 1 {
                    self.found.push(entry);
                    continue;
                }
                let count = match self.partial.iter_mut().find(|(e, _)| *e == entry) {
                    Some((_, count)) => {
                        *count += 1;
                        *count
                    }
                    None => {
                        self.partial.push((entry, 1));
                        1
                    }
                };
                if count == parts {
                    self.found.push(entry);
                }
            }
        }
    }

    fn finding(&self, set: &PhraseSet, counts: impl Fn(CategoryId) -> bool) -> Finding {
        let mut finding = Finding::default();
        let mut found: Vec<&crate::phrase_set::Entry> = self
            .found
            .iter()
            .map(|&e| &set.entries[e as usize])
            .filter(|entry| counts(entry.category))
            .collect();
        let mut per_category: Vec<(CategoryId, i64)> = Vec::new();
        for entry in &found {
            finding.score += i64::from(entry.weight);
            match per_category.iter_mut().find(|(c, _)| *c == entry.category) {
                Some((_, score)) => *score += i64::from(entry.weight),
                None => per_category.push((entry.category, i64::from(entry.weight))),
            }
        }
        per_category.retain(|(_, score)| *score != 0);
        per_category.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        finding.categories = per_category
            .into_iter()
            .map(|(c, score)| (set.categories()[usize::from(c)].clone(), score))
            .collect();
        found.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.text.cmp(&b.text)));
        finding.phrases = found
            .iter()
            .take(5)
            .map(|entry| (entry.text.clone(), entry.weight))
            .collect();
        finding
    }
}
