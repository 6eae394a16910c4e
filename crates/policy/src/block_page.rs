//! `[block_page]`: what the school puts on the page a blocked person sees — a message
//! of its own, its logo, and the language shown when the browser asks for none that
//! SafeGate has. The logo is read when the policy is compiled and kept as a `data:`
//! URL, so the page needs no second request (a blocked page cannot count on reaching
//! anything but itself) and a logo that changes reloads the policy like a list.

use std::path::Path;

use base64::Engine;
use serde::Deserialize;

/// Languages the block page is written in (`block_page.language`); the proxy has one
/// words file for each.
pub const BLOCK_PAGE_LANGUAGES: &[&str] = &["en", "cy"];

/// Largest logo file, in bytes (it is sent inside every block page).
pub const MAX_LOGO_BYTES: u64 = 64 * 1024;

/// Longest school message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// `[block_page]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlockPageFile {
    /// A short message from the school, shown under the explanation.
    #[serde(default)]
    pub message: String,
    /// The school's logo: a PNG, JPEG, GIF, WebP or SVG file, relative to the policy
    /// file, at most 64 KiB; empty for none.
    #[serde(default)]
    pub logo: String,
    /// The school-wide language (`en` or `cy`) when the browser asks for neither.
    #[serde(default)]
    pub language: String,
}

/// The compiled `[block_page]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPageSettings {
    /// The school's message; empty for none.
    pub message: String,
    /// The logo as a `data:` URL; empty for none.
    pub logo_data_url: String,
    /// The school-wide language code, one of [`BLOCK_PAGE_LANGUAGES`].
    pub language: String,
}

impl Default for BlockPageSettings {
    fn default() -> Self {
        Self {
            message: String::new(),
            logo_data_url: String::new(),
            language: "en".to_owned(),
        }
    }
}

/// The MIME type of a logo file, by its extension.
fn logo_type(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        _ => return None,
    })
}

/// Compiles `[block_page]` (the logo relative to `base`); every problem goes to
/// `problem` with its key, and the setting in trouble is left out.
pub(crate) fn compile(
    file: &BlockPageFile,
    base: &Path,
    mut problem: impl FnMut(&str, String),
) -> (BlockPageSettings, Option<std::path::PathBuf>) {
    let mut settings = BlockPageSettings::default();
    let message = file.message.trim();
    if message.chars().count() > MAX_MESSAGE_CHARS
        || message.chars().any(|c| c.is_control() && c != '\n')
    {
        problem(
            "block_page.message",
            format!("the message must be plain text of at most {MAX_MESSAGE_CHARS} characters"),
        );
    } else {
        message.clone_into(&mut settings.message);
    }
    let language = file.language.trim();
    if language.is_empty() {
    } else if BLOCK_PAGE_LANGUAGES.contains(&language) {
        language.clone_into(&mut settings.language);
    } else {
        problem(
            "block_page.language",
            format!(
                "`{language}` is not one of the block page's languages ({})",
                BLOCK_PAGE_LANGUAGES.join(", ")
            ),
        );
    }
    let logo = file.logo.trim();
    if logo.is_empty() {
        return (settings, None);
    }
    let path = base.join(logo);
    match read_logo(&path) {
        Ok(url) => settings.logo_data_url = url,
        Err(why) => problem("block_page.logo", format!("{}: {why}", path.display())),
    }
    (settings, Some(path))
}

/// The logo file as a `data:` URL, or why not.
fn read_logo(path: &Path) -> Result<String, String> {
    let Some(mime) = logo_type(path) else {
        return Err("the logo must be a .png, .jpg, .gif, .webp or .svg file".to_owned());
    };
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .len();
    if size > MAX_LOGO_BYTES {
        return Err(format!(
            "the logo is {size} bytes; at most {MAX_LOGO_BYTES} are allowed"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(format!("data:{mime};base64,{encoded}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn compiled(file: &BlockPageFile, base: &Path) -> (BlockPageSettings, Vec<String>) {
        let mut problems = Vec::new();
        let (settings, _) = compile(file, base, |key, why| {
            problems.push(format!("{key}: {why}"))
        });
        (settings, problems)
    }

    #[test]
    fn message_language_and_logo() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("logo.svg"),
            "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        )
        .unwrap();
        let file = BlockPageFile {
            message: " Ask Mrs Jones in the library. ".to_owned(),
            logo: "logo.svg".to_owned(),
            language: "cy".to_owned(),
        };
        let (settings, problems) = compiled(&file, dir.path());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.message, "Ask Mrs Jones in the library.");
        assert_eq!(settings.language, "cy");
        assert!(
            settings
                .logo_data_url
                .starts_with("data:image/svg+xml;base64,")
        );
        let (defaults, problems) = compiled(&BlockPageFile::default(), dir.path());
        assert!(problems.is_empty());
        assert_eq!(defaults, BlockPageSettings::default());
    }

    #[test]
    fn every_problem_is_named_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.png"), vec![0u8; 70 * 1024]).unwrap();
        std::fs::write(dir.path().join("logo.exe"), b"MZ").unwrap();
        for (logo, needle) in [
            ("big.png", "at most 65536"),
            ("logo.exe", ".png"),
            ("missing.png", "cannot read"),
        ] {
            let file = BlockPageFile {
                message: "x".repeat(501),
                logo: logo.to_owned(),
                language: "fr".to_owned(),
            };
            let (settings, problems) = compiled(&file, dir.path());
            assert_eq!(problems.len(), 3, "{problems:?}");
            assert!(
                problems[0].starts_with("block_page.message"),
                "{problems:?}"
            );
            assert!(
                problems[1].starts_with("block_page.language"),
                "{problems:?}"
            );
            assert!(problems[2].contains(needle), "{problems:?}");
            assert_eq!(settings, BlockPageSettings::default());
        }
    }
}
