//! Documents from files: plain text, Markdown, HTML (tags stripped, headings
//! kept as Markdown headings so chunking still sees sections) and PDF text.
//! An empty or binary file is an error naming the file, never a silent skip.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::MemoryError;

/// A document to ingest: where it came from, its text and its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file path as given (or a caller's name for text handed over directly).
    pub source: String,
    pub text: String,
    pub metadata: Map<String, Value>,
}

impl Document {
    pub fn new(source: impl Into<String>, text: impl Into<String>) -> Self {
        Self { source: source.into(), text: text.into(), metadata: Map::new() }
    }
}

fn doc_err(path: &Path, message: impl Into<String>) -> MemoryError {
    MemoryError::Document { path: path.display().to_string(), message: message.into() }
}

/// Every file under `paths` (files as given, folders walked recursively in
/// name order). Entries whose name starts with `.` are not walked into
/// (`.git`, `.crewgraph`); a path that does not exist is an error.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, MemoryError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| doc_err(path, e.to_string()))?;
        if meta.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), MemoryError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| doc_err(dir, e.to_string()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| doc_err(dir, e.to_string()))?;
    entries.sort();
    for path in entries {
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads one file into a document with `source`, `format` and (when the
/// text has one) `title` metadata.
pub fn read_document(path: &Path) -> Result<Document, MemoryError> {
    let bytes = std::fs::read(path).map_err(|e| doc_err(path, e.to_string()))?;
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    let (format, text) = match ext.as_str() {
        "pdf" => ("pdf", pdf_text(path, &bytes)?),
        _ => {
            let text = utf8_text(path, &bytes)?;
            match ext.as_str() {
                "html" | "htm" => ("html", html_text(&text)),
                "md" | "markdown" | "mdx" => ("markdown", text),
                _ => ("text", text),
            }
        }
    };
    if text.trim().is_empty() {
        return Err(doc_err(path, "empty file: no text to ingest"));
    }
    let mut doc = Document::new(path.display().to_string(), text);
    doc.metadata.insert("format".into(), Value::String(format.into()));
    if let Some(title) = first_heading(&doc.text) {
        doc.metadata.insert("title".into(), Value::String(title));
    }
    Ok(doc)
}

fn utf8_text(path: &Path, bytes: &[u8]) -> Result<String, MemoryError> {
    let binary =
        || doc_err(path, "binary file, not text (crewgraph ingests UTF-8 text, Markdown, HTML and PDF)".to_string());
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return Err(binary());
    }
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| binary())?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

fn pdf_text(path: &Path, bytes: &[u8]) -> Result<String, MemoryError> {
    if !bytes.starts_with(b"%PDF") {
        return Err(doc_err(path, "not a PDF file (no %PDF header)"));
    }
    let text = pdf_extract::extract_text_from_mem(bytes)
        .map_err(|e| doc_err(path, format!("cannot extract text from PDF: {e}")))?;
    if text.trim().is_empty() {
        return Err(doc_err(path, "PDF holds no extractable text (scanned images need OCR first)"));
    }
    Ok(text)
}

fn first_heading(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Visible text of an HTML page, as Markdown-ish lines: `<h1>`..`<h6>` become
/// `#` headings, block elements become paragraph breaks, `<pre>` keeps its
/// line breaks, scripts, styles and navigation are dropped. Of a page with a
/// `<main>` element, only the main content is kept.
pub fn html_text(html: &str) -> String {
    let body = match (html.find("<main"), html.rfind("</main>")) {
        (Some(start), Some(end)) if start < end => &html[start..end],
        _ => html,
    };
    let mut out = String::with_capacity(body.len() / 2);
    let mut skip_depth: Option<String> = None;
    let mut in_pre = false;
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        if skip_depth.is_none() {
            push_text(&mut out, &rest[..lt], in_pre);
        }
        let Some(gt) = rest[lt..].find('>') else { break };
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(skipped) = &skip_depth {
            if closing && &name == skipped {
                skip_depth = None;
            }
            continue;
        }
        match name.as_str() {
            "script" | "style" | "nav" | "noscript" | "svg" | "template" if !closing => skip_depth = Some(name),
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" if !closing => {
                let level = name[1..].parse::<usize>().unwrap_or(1);
                out.push_str("\n\n");
                out.push_str(&"#".repeat(level));
                out.push(' ');
            }
            "pre" => {
                in_pre = !closing;
                out.push_str(if closing { "\n```\n\n" } else { "\n\n```\n" });
            }
            "p" | "div" | "section" | "article" | "ul" | "ol" | "table" | "blockquote" | "h1" | "h2" | "h3" | "h4"
            | "h5" | "h6" | "header" | "footer" | "dl" => out.push_str("\n\n"),
            "li" if !closing => out.push_str("\n- "),
            "br" | "tr" | "dt" | "dd" => out.push('\n'),
            "td" | "th" => out.push(' '),
            _ => {}
        }
    }
    if skip_depth.is_none() {
        push_text(&mut out, rest, in_pre);
    }
    // Collapse runs of blank lines left by nested blocks.
    let mut collapsed = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank == 1 {
                collapsed.push('\n');
            }
        } else {
            blank = 0;
            collapsed.push_str(line.trim_end());
            collapsed.push('\n');
        }
    }
    collapsed.trim().to_string()
}

fn push_text(out: &mut String, raw: &str, in_pre: bool) {
    let text = decode_entities(raw);
    if in_pre {
        out.push_str(&text);
        return;
    }
    let mut last_space = out.ends_with(char::is_whitespace);
    for c in text.chars() {
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else {
            out.push(c);
            last_space = false;
        }
    }
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let entity = &rest[1..e];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_keeps_headings_and_drops_scripts() {
        let html = r#"<html><head><style>p{}</style></head><body><nav>menu</nav>
            <main><h1 id="x">Build <code>cache</code></h1><p>Cargo stores   build output
            in <em>target</em> &amp; reuses it.</p><script>var a = "<p>";</script>
            <pre><code>cargo build
cargo test</code></pre><ul><li>one</li><li>two</li></ul></main></body></html>"#;
        let text = html_text(html);
        assert!(text.starts_with("# Build cache\n"), "{text}");
        assert!(text.contains("Cargo stores build output in target & reuses it."), "{text}");
        assert!(text.contains("```\ncargo build\ncargo test\n```"), "{text}");
        assert!(text.contains("- one\n- two"), "{text}");
        assert!(!text.contains("menu") && !text.contains("var a"), "{text}");
    }

    /// A one-page PDF with `text` in Helvetica, offsets and all.
    fn tiny_pdf(text: &str) -> Vec<u8> {
        let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
            format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
        ];
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
        for off in offsets {
            out.extend(format!("{off:010} 00000 n \n").as_bytes());
        }
        out.extend(
            format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
        );
        out
    }

    #[test]
    fn pdf_text_is_extracted() {
        let dir = std::env::temp_dir().join(format!("crewgraph-pdf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("refunds.pdf");
        std::fs::write(&path, tiny_pdf("Refunds are paid within ten days.")).unwrap();
        let doc = read_document(&path).unwrap();
        assert!(doc.text.contains("Refunds are paid within ten days."), "{:?}", doc.text);
        assert_eq!(doc.metadata["format"], "pdf");
        let blank = dir.join("blank.pdf");
        std::fs::write(&blank, tiny_pdf("")).unwrap();
        assert!(read_document(&blank).unwrap_err().to_string().contains("no extractable text"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entities_decode() {
        assert_eq!(decode_entities("a &lt;b&gt; &#39;c&#x27; &unknown; & d"), "a <b> 'c' &unknown; & d");
    }

    #[test]
    fn empty_and_binary_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("crewgraph-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.md");
        std::fs::write(&empty, "  \n\n").unwrap();
        let binary = dir.join("image.png");
        std::fs::write(&binary, [0x89, b'P', b'N', b'G', 0, 0, 1]).unwrap();
        let latin1 = dir.join("notes.txt");
        std::fs::write(&latin1, [b'c', b'a', 0xe9, b'!']).unwrap();
        let fake_pdf = dir.join("fake.pdf");
        std::fs::write(&fake_pdf, "hello").unwrap();
        assert!(read_document(&empty).unwrap_err().to_string().contains("empty.md: empty file"));
        assert!(read_document(&binary).unwrap_err().to_string().contains("image.png: binary file"));
        assert!(read_document(&latin1).unwrap_err().to_string().contains("notes.txt: binary file"));
        assert!(read_document(&fake_pdf).unwrap_err().to_string().contains("fake.pdf: not a PDF"));
        let files = collect_files(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(files.len(), 4);
        assert!(collect_files(&[dir.join("missing")]).unwrap_err().to_string().contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
