//! Combining ranked lists: reciprocal rank fusion (dense + lexical), and
//! maximal marginal relevance for diverse results.

use std::collections::HashMap;
use std::hash::Hash;

/// Reciprocal rank fusion: each list adds `1 / (k + rank)` for every item it
/// ranks (rank from 1). Scale-free, so cosine similarities and BM25 scores mix.
pub fn reciprocal_rank_fusion<T: Clone + Eq + Hash + Ord>(lists: &[Vec<T>], k: f32) -> Vec<(T, f32)> {
    let mut scores: HashMap<T, f32> = HashMap::new();
    for list in lists {
        for (rank, item) in list.iter().enumerate() {
            *scores.entry(item.clone()).or_default() += 1.0 / (k + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(T, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    fused
}

/// Cosine similarity; 0 for a zero vector.
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

/// Maximal marginal relevance: picks `k` of `candidates` (index, relevance,
/// vector) trading relevance against similarity to what is already picked;
/// `lambda` 1.0 is pure relevance.
pub fn mmr(candidates: &[(usize, f32, Vec<f32>)], k: usize, lambda: f32) -> Vec<usize> {
    let mut picked: Vec<usize> = Vec::new();
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    while picked.len() < k && !left.is_empty() {
        let best = left
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let (_, rel, v) = &candidates[i];
                let redundancy =
                    picked.iter().map(|&j| cosine(v, &candidates[j].2)).fold(f32::NEG_INFINITY, f32::max).max(0.0);
                (pos, lambda * rel - (1.0 - lambda) * redundancy)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(pos, _)| pos);
        let Some(pos) = best else { break };
        picked.push(left.remove(pos));
    }
    picked.into_iter().map(|i| candidates[i].0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_items_both_lists_rank() {
        let dense = vec!["a", "b", "c"];
        let sparse = vec!["c", "d", "a"];
        let fused = reciprocal_rank_fusion(&[dense, sparse], 60.0);
        let order: Vec<&str> = fused.iter().map(|(x, _)| *x).collect();
        assert_eq!(&order[..2], ["a", "c"]);
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn mmr_skips_near_duplicates() {
        let c = vec![(10, 0.9, vec![1.0, 0.0]), (11, 0.89, vec![0.99, 0.01]), (12, 0.7, vec![0.0, 1.0])];
        assert_eq!(mmr(&c, 2, 1.0), [10, 11]);
        assert_eq!(mmr(&c, 2, 0.5), [10, 12]);
    }
}
