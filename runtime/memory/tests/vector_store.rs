//! One suite, every backend: the embedded SQLite store always, Qdrant when
//! `QDRANT_URL` points at a server (otherwise each Qdrant test says it
//! skipped). Deterministic: feature-hashing vectors, no model.

use std::sync::Arc;

use crewgraph_memory::{
    Document, EmbeddedStore, Filter, HashingEmbedder, Memory, MemoryError, QdrantStore, Record, SearchMode,
    SearchRequest, VectorStore,
};
use serde_json::json;

const DOCS: &[(&str, &str)] = &[
    (
        "docs/install.md",
        "# Installing\n\nDownload the archive and unpack it into /opt/widget.\n\n## Upgrading\n\nStop the service, replace the binary, then run the migration command before starting again.",
    ),
    (
        "docs/billing.md",
        "# Billing\n\nInvoices are issued on the first day of each month.\n\n## Refunds\n\nA refund is paid back to the original card within ten business days of approval.",
    ),
    (
        "docs/security.md",
        "# Security\n\nPasswords are hashed with argon2 and never logged.\n\n## Tokens\n\nAPI tokens expire after ninety days and can be revoked from the settings page.",
    ),
];

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

async fn memory_on(store: Arc<dyn VectorStore>) -> Memory {
    Memory::new(store, Arc::new(HashingEmbedder::new(64)))
}

async fn ingest_all(m: &Memory, collection: &str, tenant: &str) {
    for (source, text) in DOCS {
        let mut doc = Document::new(*source, *text);
        doc.metadata.insert("area".into(), json!(source.trim_start_matches("docs/").trim_end_matches(".md")));
        m.ingest(collection, tenant, &doc).await.unwrap();
    }
}

async fn collections_refuse_other_models_and_dimensions(store: Arc<dyn VectorStore>) {
    let name = unique("dims");
    let info = store.create_collection(&name, 64, "hashing-64").await.unwrap();
    assert_eq!((info.dimension, info.model.as_str()), (64, "hashing-64"));
    assert_eq!(store.create_collection(&name, 64, "hashing-64").await.unwrap(), info, "idempotent");
    let e = store.create_collection(&name, 64, "other-model").await.unwrap_err();
    assert!(matches!(e, MemoryError::ModelMismatch { .. }), "{e}");
    let e = store.create_collection(&name, 384, "hashing-64").await.unwrap_err();
    assert!(e.to_string().contains("64-dimensional"), "{e}");
    // A vector of another dimension is refused whole: nothing of the batch is stored.
    let record = |v: Vec<f32>, hash: &str| Record {
        id: Record::point_id(&name, "t", "a.md", hash, 0),
        title: String::new(),
        position: 0,
        tokens: 3,
        content_hash: hash.into(),
        text: "some text".into(),
        metadata: Default::default(),
        vector: Some(v),
    };
    let e = store
        .replace_source(&name, "t", "a.md", vec![record(vec![0.1; 64], "h1"), record(vec![0.1; 384], "h2")])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("got a 384-dimensional vector"), "{e}");
    assert_eq!(store.count(&name, None).await.unwrap(), 0);
    let m = Memory::new(store.clone(), Arc::new(HashingEmbedder::new(32)));
    let e = m.ingest(&name, "t", &Document::new("b.md", "text")).await.unwrap_err();
    assert!(matches!(e, MemoryError::ModelMismatch { .. }), "{e}");
    assert!(store.drop_collection(&name).await.unwrap());
    assert!(!store.drop_collection(&name).await.unwrap());
    assert!(store.collection(&name).await.unwrap().is_none());
}

async fn right_section_comes_first(store: Arc<dyn VectorStore>) {
    let m = memory_on(store).await;
    let c = unique("docs");
    ingest_all(&m, &c, "acme").await;
    for (question, source, phrase) in [
        ("how long until a refund reaches my card", "docs/billing.md", "ten business days"),
        ("when do api tokens expire", "docs/security.md", "ninety days"),
        ("steps to upgrade: replace the binary", "docs/install.md", "migration command"),
    ] {
        for mode in [SearchMode::Hybrid, SearchMode::Dense, SearchMode::Sparse] {
            let hits =
                m.search(&c, &SearchRequest { mode, ..SearchRequest::new(question, 3) }.tenant("acme")).await.unwrap();
            assert!(!hits.is_empty(), "{question} ({mode:?}): nothing found");
            assert_eq!(hits[0].source, source, "{question} ({mode:?})");
            assert!(hits[0].text.contains(phrase), "{question} ({mode:?}): {}", hits[0].text);
        }
    }
}

async fn reingesting_updates_instead_of_duplicating(store: Arc<dyn VectorStore>) {
    let m = memory_on(store.clone()).await;
    let c = unique("reingest");
    ingest_all(&m, &c, "acme").await;
    let size = store.count(&c, Some("acme")).await.unwrap();
    assert!(size >= 6, "{size}");
    ingest_all(&m, &c, "acme").await;
    assert_eq!(store.count(&c, Some("acme")).await.unwrap(), size, "same folder twice: same size");
    // Editing one section replaces that section's chunk only.
    let edited = DOCS[1].1.replace("ten business days", "five business days");
    let change = m.ingest(&c, "acme", &Document::new(DOCS[1].0, edited)).await.unwrap();
    assert_eq!((change.added, change.removed), (1, 1), "{change:?}");
    assert_eq!(store.count(&c, Some("acme")).await.unwrap(), size);
    let hits = m.search(&c, &SearchRequest::new("refund business days", 1).tenant("acme")).await.unwrap();
    assert!(hits[0].text.contains("five business days"), "{}", hits[0].text);
    // Deleting a source removes all of its chunks.
    let removed = m.delete_source(&c, "acme", "docs/billing.md").await.unwrap();
    assert_eq!(removed, 2);
    assert_eq!(store.count(&c, Some("acme")).await.unwrap(), size - 2);
    let hits = m.search(&c, &SearchRequest::new("refund invoices billing", 5).tenant("acme")).await.unwrap();
    assert!(hits.iter().all(|h| h.source != "docs/billing.md"), "{hits:?}");
}

async fn tenants_never_see_each_other(store: Arc<dyn VectorStore>) {
    let m = memory_on(store.clone()).await;
    let c = unique("tenants");
    ingest_all(&m, &c, "tenant-a").await;
    m.ingest(&c, "tenant-b", &Document::new("b/notes.md", "# Notes\n\nTenant B keeps its refund notes here."))
        .await
        .unwrap();
    for mode in [SearchMode::Hybrid, SearchMode::Dense, SearchMode::Sparse] {
        let hits = m
            .search(&c, &SearchRequest { mode, ..SearchRequest::new("refund card days", 10) }.tenant("tenant-b"))
            .await
            .unwrap();
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| h.source == "b/notes.md"), "{mode:?}: {hits:?}");
        let hits = m
            .search(&c, &SearchRequest { mode, ..SearchRequest::new("refund notes", 10) }.tenant("tenant-a"))
            .await
            .unwrap();
        assert!(hits.iter().all(|h| h.source.starts_with("docs/")), "{mode:?}: {hits:?}");
    }
    assert_eq!(store.count(&c, Some("tenant-b")).await.unwrap(), 1);
    // Same source name, other tenant: separate documents.
    assert_eq!(m.delete_source(&c, "tenant-b", "docs/billing.md").await.unwrap(), 0);
    assert!(store.count(&c, Some("tenant-a")).await.unwrap() > 1);
}

async fn filters_threshold_mmr_and_budget(store: Arc<dyn VectorStore>) {
    let m = memory_on(store).await;
    let c = unique("filters");
    ingest_all(&m, &c, "acme").await;
    let mut r = SearchRequest::new("days", 10).tenant("acme");
    r.filter = Filter::from_json(&json!({"area": "security"})).unwrap();
    let hits = m.search(&c, &r).await.unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h.source == "docs/security.md"), "{hits:?}");
    r.filter = Filter::from_json(&json!({"area": ["security", "billing"]})).unwrap();
    let hits = m.search(&c, &r).await.unwrap();
    assert!(hits.iter().any(|h| h.source == "docs/billing.md") && hits.iter().any(|h| h.source == "docs/security.md"));
    assert!(hits.iter().all(|h| h.source != "docs/install.md"));
    r.filter = Filter::from_json(&json!({"source": "docs/install.md"})).unwrap();
    assert!(m.search(&c, &r).await.unwrap().iter().all(|h| h.source == "docs/install.md"));
    assert!(Filter::from_json(&json!({"a b": 1})).is_err());
    assert!(Filter::from_json(&json!({"a": {"$gt": 1}})).is_err());

    let mut r = SearchRequest::new("refund card approval", 10).tenant("acme");
    r.score_threshold = Some(0.99);
    assert!(m.search(&c, &r).await.unwrap().is_empty(), "nothing is that similar");
    r.score_threshold = Some(0.05);
    let some = m.search(&c, &r).await.unwrap();
    assert!(!some.is_empty() && some.iter().all(|h| h.similarity.unwrap() >= 0.05));

    let mut r = SearchRequest::new("days", 3).tenant("acme");
    r.token_budget = Some(25);
    let hits = m.search(&c, &r).await.unwrap();
    assert!(hits.iter().map(|h| h.tokens).sum::<usize>() <= 25, "{hits:?}");
    r.token_budget = None;
    r.mmr_lambda = Some(0.3);
    let diverse = m.search(&c, &r).await.unwrap();
    assert_eq!(diverse.len(), 3);
}

async fn missing_collection_is_a_clear_error(store: Arc<dyn VectorStore>) {
    let m = memory_on(store).await;
    let e = m.search("no-such-collection", &SearchRequest::new("x", 3)).await.unwrap_err();
    assert_eq!(e.to_string(), "no collection named `no-such-collection`");
    assert!(m.ensure_collection("bad name!").await.unwrap_err().to_string().contains("invalid collection name"));
}

trait Tenant {
    fn tenant(self, t: &str) -> Self;
}

impl Tenant for SearchRequest {
    fn tenant(mut self, t: &str) -> Self {
        self.tenant = t.to_string();
        self
    }
}

async fn embedded() -> Arc<dyn VectorStore> {
    Arc::new(EmbeddedStore::in_memory().await.unwrap())
}

async fn qdrant() -> Option<Arc<dyn VectorStore>> {
    match std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => Some(Arc::new(QdrantStore::connect(&url).await.unwrap())),
        None => {
            eprintln!("skipped: QDRANT_URL is not set, so the Qdrant backend is not tested");
            None
        }
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod embedded_store {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::embedded().await).await;
            })*
        }
        mod qdrant_store {
            $(#[tokio::test]
            async fn $name() {
                if let Some(store) = super::qdrant().await {
                    super::$name(store).await;
                }
            })*
        }
    };
}

suite!(
    collections_refuse_other_models_and_dimensions,
    right_section_comes_first,
    reingesting_updates_instead_of_duplicating,
    tenants_never_see_each_other,
    filters_threshold_mmr_and_budget,
    missing_collection_is_a_clear_error,
);

#[tokio::test]
async fn embedded_store_persists_across_reopen() {
    let dir = std::env::temp_dir().join(unique("crewgraph-mem"));
    let path = dir.join("memory.db");
    {
        let m = memory_on(Arc::new(EmbeddedStore::open(&path).await.unwrap())).await;
        ingest_all(&m, "kept", "acme").await;
    }
    let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::open(&path).await.unwrap());
    let m = memory_on(store.clone()).await;
    let hits = m.search("kept", &SearchRequest::new("api tokens expire", 1).tenant("acme")).await.unwrap();
    assert_eq!(hits[0].source, "docs/security.md");
    std::fs::remove_dir_all(&dir).unwrap();
}
