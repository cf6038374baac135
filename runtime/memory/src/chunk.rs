//! Token-aware chunking with overlap that respects Markdown structure: a
//! chunk never spans two sections, paragraphs and code blocks stay whole when
//! they fit, and each chunk carries its heading path, position and a content
//! hash (so re-ingesting unchanged text updates instead of duplicating).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Largest chunk, in tokens (cl100k_base).
    pub max_tokens: usize,
    /// Tokens repeated from the end of a section's previous chunk.
    pub overlap: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self { max_tokens: 256, overlap: 32 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub text: String,
    /// Headings above the chunk, outermost first, joined by " > ".
    pub title: String,
    /// Index of the chunk within its document.
    pub position: usize,
    pub tokens: usize,
    /// SHA-256 of the text, hex.
    pub content_hash: String,
}

fn tokens(text: &str) -> Vec<u32> {
    tiktoken_rs::cl100k_base_singleton().encode_with_special_tokens(text)
}

fn decode(t: &[u32]) -> String {
    tiktoken_rs::cl100k_base_singleton().decode(t).unwrap_or_default()
}

/// Sections: (heading path, blocks), where a block is a paragraph, list or code fence.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![(String::new(), vec![])];
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut block = String::new();
    let mut in_fence = false;
    let flush = |block: &mut String, out: &mut Vec<(String, Vec<String>)>| {
        let b = block.trim_end().to_string();
        if !b.trim().is_empty()
            && let Some(last) = out.last_mut()
        {
            last.1.push(b);
        }
        block.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            if !in_fence {
                flush(&mut block, &mut out);
            }
            in_fence = !in_fence;
            block.push_str(line);
            block.push('\n');
            if !in_fence {
                flush(&mut block, &mut out);
            }
            continue;
        }
        if in_fence {
            block.push_str(line);
            block.push('\n');
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&level) && trimmed[level..].starts_with(' ') {
            flush(&mut block, &mut out);
            headings.retain(|(l, _)| *l < level);
            headings.push((level, trimmed[level..].trim().to_string()));
            let path = headings.iter().map(|(_, h)| h.as_str()).collect::<Vec<_>>().join(" > ");
            out.push((path, vec![]));
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut block, &mut out);
        } else {
            block.push_str(line);
            block.push('\n');
        }
    }
    flush(&mut block, &mut out);
    out.retain(|(_, blocks)| !blocks.is_empty());
    out
}

/// Splits `text` into chunks of at most `max_tokens`, section by section.
pub fn chunk_text(text: &str, opts: ChunkOptions) -> Vec<Chunk> {
    let max = opts.max_tokens.max(16);
    let overlap = opts.overlap.min(max / 2);
    let mut chunks: Vec<(String, String)> = Vec::new();
    for (title, blocks) in sections(text) {
        // Pieces no larger than `max`: whole blocks, or token windows of a long block.
        let mut pieces: Vec<Vec<u32>> = Vec::new();
        for b in blocks {
            let t = tokens(&b);
            if t.len() <= max {
                pieces.push(t);
            } else {
                // Overlapping windows: consecutive pieces share `overlap` tokens.
                let step = max - overlap;
                let mut start = 0;
                while start < t.len() {
                    pieces.push(t[start..(start + max).min(t.len())].to_vec());
                    if start + max >= t.len() {
                        break;
                    }
                    start += step;
                }
            }
        }
        let mut current: Vec<u32> = Vec::new();
        let separator = tokens("\n\n");
        for piece in pieces {
            let joined = current.len() + separator.len() + piece.len();
            if !current.is_empty() && joined > max {
                chunks.push((title.clone(), decode(&current)));
                let keep = current.len().saturating_sub(overlap);
                current = current[keep..].to_vec();
                if current.len() + separator.len() + piece.len() > max {
                    current.clear();
                }
            }
            if !current.is_empty() {
                current.extend(&separator);
            }
            current.extend(piece);
        }
        if !current.is_empty() {
            chunks.push((title, decode(&current)));
        }
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(position, (title, text))| {
            let text = text.trim().to_string();
            Chunk {
                tokens: tokens(&text).len(),
                content_hash: format!("{:x}", Sha256::digest(text.as_bytes())),
                text,
                title,
                position,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Guide\n\nIntro paragraph.\n\n## Install\n\nRun the installer.\n\n```sh\ncargo install x\n```\n\n## Use\n\nCall it.\n";

    #[test]
    fn chunks_stay_within_sections_and_carry_their_headings() {
        let c = chunk_text(DOC, ChunkOptions { max_tokens: 64, overlap: 8 });
        let titles: Vec<&str> = c.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["Guide", "Guide > Install", "Guide > Use"]);
        assert!(c[1].text.contains("Run the installer.") && c[1].text.contains("cargo install x"));
        assert_eq!(c.iter().map(|c| c.position).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(c[0].content_hash.len(), 64);
    }

    #[test]
    fn long_sections_split_under_the_limit_with_overlap() {
        let para = |i: usize| format!("Paragraph {i} talks about durable execution and checkpoints in some detail.");
        let text = (0..40).map(para).collect::<Vec<_>>().join("\n\n");
        let c = chunk_text(&text, ChunkOptions { max_tokens: 60, overlap: 10 });
        assert!(c.len() > 5);
        assert!(c.iter().all(|c| c.tokens <= 60), "{:?}", c.iter().map(|c| c.tokens).collect::<Vec<_>>());
        // Overlap: each chunk begins with the end of the one before it.
        let tail: String = c[0].text.chars().rev().take(12).collect::<String>().chars().rev().collect();
        assert!(c[1].text.contains(tail.trim()), "{:?} / {:?}", c[0].text, c[1].text);
        let one_block = (0..400).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let c = chunk_text(&one_block, ChunkOptions { max_tokens: 100, overlap: 20 });
        assert!(
            c.len() >= 5 && c.iter().all(|c| c.tokens <= 101),
            "{:?}",
            c.iter().map(|c| c.tokens).collect::<Vec<_>>()
        );
        let last_word = c[0].text.split_whitespace().last().unwrap();
        assert!(c[1].text.contains(last_word), "a long block's windows overlap");
    }

    #[test]
    fn the_same_text_gives_the_same_hashes() {
        let a = chunk_text(DOC, ChunkOptions::default());
        let b = chunk_text(DOC, ChunkOptions::default());
        assert_eq!(a, b);
        assert!(chunk_text("", ChunkOptions::default()).is_empty());
    }
}
