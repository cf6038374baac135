//! BM25-style sparse vectors for stores that rank terms themselves (Qdrant
//! applies the IDF part with its `idf` modifier): each term of a document is
//! weighted by BM25's saturated term frequency, each query term by 1.

use std::collections::BTreeMap;

use crate::bm25::terms;

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Documents are chunks of at most a few hundred tokens: a fixed average
/// length keeps weights independent of what else the collection holds.
const AVERAGE_TERMS: f32 = 120.0;

/// Stable 32-bit id of a term (FNV-1a), the same in every process.
pub fn term_id(term: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in term.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The sparse vector of a chunk: (term id, weight), ids ascending.
pub fn document_vector(text: &str) -> Vec<(u32, f32)> {
    let words = terms(text);
    let length = words.len() as f32;
    let mut counts: BTreeMap<u32, f32> = BTreeMap::new();
    for w in &words {
        *counts.entry(term_id(w)).or_default() += 1.0;
    }
    let norm = K1 * (1.0 - B + B * length / AVERAGE_TERMS);
    counts.into_iter().map(|(id, tf)| (id, tf * (K1 + 1.0) / (tf + norm))).collect()
}

/// The sparse vector of a query: each distinct term once.
pub fn query_vector(text: &str) -> Vec<(u32, f32)> {
    let ids: BTreeMap<u32, f32> = terms(text).iter().map(|t| (term_id(t), 1.0)).collect();
    ids.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_terms_saturate() {
        let v = document_vector("cargo cargo cargo cargo build");
        let cargo = v.iter().find(|(id, _)| *id == term_id("cargo")).unwrap().1;
        let build = v.iter().find(|(id, _)| *id == term_id("build")).unwrap().1;
        assert!(cargo > build && cargo < 4.0 * build, "{cargo} {build}");
        assert_eq!(query_vector("cargo build cargo").len(), 2);
        assert!(query_vector("the of").is_empty());
    }
}
