//! A BM25 lexical index: the sparse side of hybrid retrieval, which finds the
//! passage that uses the query's exact terms (names, flags, error codes) where
//! dense embeddings blur them.

use std::collections::HashMap;

const K1: f32 = 1.2;
const B: f32 = 0.75;
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "i", "in", "is", "it", "of",
    "on", "or", "that", "the", "this", "to", "what", "when", "where", "which", "with", "you", "your", "can", "my",
];

/// Lowercased words and numbers, without stop words, with a light plural strip.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '_' && c != '-')
        .map(|w| w.trim_matches('-').to_lowercase())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.as_str()))
        .map(|w| if w.len() > 4 && w.ends_with('s') && !w.ends_with("ss") { w[..w.len() - 1].to_string() } else { w })
        .collect()
}

#[derive(Debug, Default, Clone)]
pub struct Bm25 {
    /// term -> (document, term frequency)
    postings: HashMap<String, Vec<(usize, u32)>>,
    lengths: Vec<u32>,
    total_length: u64,
}

impl Bm25 {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a document; its id is the order of addition.
    pub fn add(&mut self, text: &str) -> usize {
        let id = self.lengths.len();
        let words = terms(text);
        let mut counts: HashMap<String, u32> = HashMap::new();
        for w in &words {
            *counts.entry(w.clone()).or_default() += 1;
        }
        for (w, n) in counts {
            self.postings.entry(w).or_default().push((id, n));
        }
        self.lengths.push(words.len() as u32);
        self.total_length += words.len() as u64;
        id
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The `k` best documents for `query`, best first, with their scores.
    pub fn search(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let n = self.lengths.len() as f32;
        if n == 0.0 {
            return vec![];
        }
        let avg = self.total_length as f32 / n;
        let mut scores: HashMap<usize, f32> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for term in terms(query) {
            if !seen.insert(term.clone()) {
                continue;
            }
            let Some(list) = self.postings.get(&term) else { continue };
            let df = list.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(doc, tf) in list {
                let tf = tf as f32;
                let len = self.lengths[doc] as f32;
                let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg));
                *scores.entry(doc).or_default() += s;
            }
        }
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_terms_rank_first_and_rare_terms_weigh_more() {
        let mut idx = Bm25::new();
        idx.add("Checkpoints are written after every superstep.");
        idx.add("The approval node pauses a run until a reviewer decides.");
        idx.add("Redis caches the latest checkpoint of a thread.");
        idx.add("A run is a run is a run.");
        let hits = idx.search("how does a reviewer approve a paused run", 3);
        assert_eq!(hits[0].0, 1, "{hits:?}");
        let hits = idx.search("redis checkpoint cache", 2);
        assert_eq!(hits[0].0, 2, "{hits:?}");
        assert!(idx.search("nothing matches this", 3).is_empty());
        assert_eq!(terms("The Checkpoints, of SUPERSTEPS!"), ["checkpoint", "superstep"]);
    }
}
