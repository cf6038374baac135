//! The embedded vector store: SQLite with FTS5 for the lexical side and a
//! 1-bit vector index for the dense side, in one file under `.crewgraph/`
//! (the same file as the embedded checkpoints when those are SQLite too).
//!
//! Each chunk is a row of `memory_chunks` (text, payload, float32 vector and
//! its sign bits); each collection adds an FTS5 table keyed by the chunk's
//! rowid. A dense query scans the sign bits of the tenant's chunks by
//! Hamming distance (48 bytes per chunk for 384 dimensions, held in memory
//! and reloaded when the collection's generation changes), then re-ranks the
//! best candidates by exact cosine similarity on the float vectors.
//!
//! sqlite-vec's `vec0` was measured first: its top-k selection costs
//! O(chunk size x k) per 1,024 vectors, 46 ms p50 over 100k chunks for the
//! 160 candidates re-ranking needs, against 10 ms wanted.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::bm25;
use crate::error::MemoryError;
use crate::fusion::cosine;
use crate::store::{
    CollectionInfo, Filter, Hit, Record, SourceChange, VectorStore, check_collection_name, check_dimension,
};

const BACKEND: &str = "embedded";
/// Candidates taken from the 1-bit scan per result wanted, before exact re-ranking.
const OVERSAMPLE: usize = 16;
/// Fewest candidates re-ranked, whatever the limit.
const MIN_CANDIDATES: usize = 160;
/// BM25 weight of a chunk's heading path against its text (1.0): a heading names
/// what its whole section is about, as BM25F weighs title fields.
const TITLE_WEIGHT: f32 = 2.0;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS memory_collections (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        dimension INTEGER NOT NULL,
        model TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE IF NOT EXISTS memory_chunks (
        id INTEGER PRIMARY KEY,
        point_id TEXT NOT NULL UNIQUE,
        collection_id INTEGER NOT NULL REFERENCES memory_collections(id) ON DELETE CASCADE,
        tenant TEXT NOT NULL,
        source TEXT NOT NULL,
        title TEXT NOT NULL,
        position INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        content_hash TEXT NOT NULL,
        text TEXT NOT NULL,
        metadata TEXT NOT NULL,
        embedding BLOB NOT NULL,
        bits BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS memory_chunks_by_source ON memory_chunks (collection_id, tenant, source)",
];

const HIT_COLUMNS: &str = "c.id, c.point_id, c.source, c.title, c.position, c.tokens, c.text, c.metadata, c.embedding";

pub struct EmbeddedStore {
    pool: SqlitePool,
    /// Sign bits per (collection, tenant), valid for one collection generation.
    indexes: Mutex<HashMap<(i64, String), Arc<BitIndex>>>,
}

/// The sign bits of one tenant's chunks in one collection.
struct BitIndex {
    generation: i64,
    ids: Vec<i64>,
    /// `words` u64 per chunk, chunk after chunk.
    bits: Vec<u64>,
    words: usize,
}

/// Sign bits of a vector, packed into u64 words (bit i set when v[i] > 0).
fn sign_bits(v: &[f32]) -> Vec<u64> {
    let mut out = vec![0u64; v.len().div_ceil(64)];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

fn words_blob(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_words(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
}

/// Hamming distance of `query` to every row, with its row number.
#[inline(always)]
fn distances(bits: &[u64], words: usize, query: &[u64]) -> Vec<(u32, usize)> {
    bits.chunks_exact(words.max(1))
        .enumerate()
        .map(|(i, row)| (row.iter().zip(query).map(|(a, b)| (a ^ b).count_ones()).sum(), i))
        .collect()
}

/// `distances` compiled with the POPCNT instruction where the CPU has it
/// (three times faster than the portable bit-twiddling count).
fn distances_fast(bits: &[u64], words: usize, query: &[u64]) -> Vec<(u32, usize)> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "popcnt")]
        fn with_popcnt(bits: &[u64], words: usize, query: &[u64]) -> Vec<(u32, usize)> {
            distances(bits, words, query)
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU was just checked to have POPCNT.
            return unsafe { with_popcnt(bits, words, query) };
        }
    }
    distances(bits, words, query)
}

impl BitIndex {
    /// The `k` rows closest to `query` by Hamming distance.
    fn nearest(&self, query: &[u64], k: usize) -> Vec<i64> {
        let mut scored = distances_fast(&self.bits, self.words, query);
        if scored.len() > k {
            scored.select_nth_unstable(k);
            scored.truncate(k);
        }
        scored.into_iter().map(|(_, i)| self.ids[i]).collect()
    }
}

#[derive(Clone, Copy)]
struct Tables {
    id: i64,
}

impl Tables {
    fn fts(self) -> String {
        format!("memory_fts_{}", self.id)
    }
}

fn f32_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The query's terms as an FTS5 expression: any of them, each quoted so no
/// user text is read as FTS5 syntax.
fn fts_query(text: &str) -> Option<String> {
    let mut seen = HashSet::new();
    let terms: Vec<String> = bm25::terms(text)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

/// `AND ...` conditions for a filter, with their bind values in order.
fn filter_sql(filter: &Filter) -> (String, Vec<Value>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    for (key, values) in filter.alternatives() {
        let column = match key {
            "source" => "c.source".to_string(),
            "title" => "c.title".to_string(),
            _ => {
                binds.push(Value::String(format!("$.\"{key}\"")));
                "json_extract(c.metadata, ?)".to_string()
            }
        };
        let placeholders = vec!["?"; values.len()].join(", ");
        sql.push_str(&format!(" AND {column} IN ({placeholders})"));
        binds.extend(values.iter().cloned());
    }
    (sql, binds)
}

fn bind_value<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    v: &Value,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    match v {
        Value::String(s) => q.bind(s.clone()),
        Value::Bool(b) => q.bind(*b),
        Value::Number(n) if n.is_i64() => q.bind(n.as_i64()),
        Value::Number(n) => q.bind(n.as_f64()),
        other => q.bind(other.to_string()),
    }
}

fn info_from_row(r: &SqliteRow) -> CollectionInfo {
    CollectionInfo { name: r.get("name"), dimension: r.get::<i64, _>("dimension") as usize, model: r.get("model") }
}

fn hit_from_row(row: &SqliteRow, score: f32) -> Result<Hit, MemoryError> {
    let err = |e: sqlx::Error| MemoryError::store(BACKEND, e);
    let point_id: String = row.try_get("point_id").map_err(err)?;
    let metadata: String = row.try_get("metadata").map_err(err)?;
    let embedding: Vec<u8> = row.try_get("embedding").map_err(err)?;
    Ok(Hit {
        id: Uuid::parse_str(&point_id).map_err(|e| MemoryError::store(BACKEND, e))?,
        source: row.try_get("source").map_err(err)?,
        title: row.try_get("title").map_err(err)?,
        position: row.try_get::<i64, _>("position").map_err(err)? as usize,
        tokens: row.try_get::<i64, _>("tokens").map_err(err)? as usize,
        text: row.try_get("text").map_err(err)?,
        metadata: serde_json::from_str::<Map<String, Value>>(&metadata).unwrap_or_default(),
        score,
        vector: blob_f32(&embedding),
    })
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in the SQLite file at `path`.
    pub async fn open(path: &Path) -> Result<Self, MemoryError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| MemoryError::store(BACKEND, format!("cannot create {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new().filename(path);
        Self::connect_with(opts, 4).await
    }

    /// A store that lives only as long as the process, for tests and `memory:`.
    pub async fn in_memory() -> Result<Self, MemoryError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(|e| MemoryError::store(BACKEND, e))?;
        Self::connect_with(opts, 1).await
    }

    async fn connect_with(opts: SqliteConnectOptions, connections: u32) -> Result<Self, MemoryError> {
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(opts)
            .await
            .map_err(|e| MemoryError::store(BACKEND, e))?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&pool).await.map_err(|e| MemoryError::store(BACKEND, e))?;
        }
        Ok(Self { pool, indexes: Mutex::new(HashMap::new()) })
    }

    /// The tenant's bit index, reloaded if the collection changed since it was built.
    async fn bit_index(&self, tables: Tables, tenant: &str) -> Result<Arc<BitIndex>, MemoryError> {
        let err = |e: sqlx::Error| MemoryError::store(BACKEND, e);
        let generation: i64 = sqlx::query_scalar("SELECT generation FROM memory_collections WHERE id = ?")
            .bind(tables.id)
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        let key = (tables.id, tenant.to_string());
        if let Some(index) = self.indexes.lock().ok().and_then(|m| m.get(&key).cloned())
            && index.generation == generation
        {
            return Ok(index);
        }
        // One read transaction: the rows and the generation they belong to.
        let mut tx = self.pool.begin().await.map_err(err)?;
        let generation: i64 = sqlx::query_scalar("SELECT generation FROM memory_collections WHERE id = ?")
            .bind(tables.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
        let rows = sqlx::query("SELECT id, bits FROM memory_chunks WHERE collection_id = ? AND tenant = ?")
            .bind(tables.id)
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        let mut index = BitIndex { generation, ids: Vec::with_capacity(rows.len()), bits: Vec::new(), words: 0 };
        for row in rows {
            let words = blob_words(row.get::<&[u8], _>("bits"));
            index.words = words.len();
            index.ids.push(row.get("id"));
            index.bits.extend(words);
        }
        let index = Arc::new(index);
        if let Ok(mut m) = self.indexes.lock() {
            m.insert(key, index.clone());
        }
        Ok(index)
    }

    async fn bump(tx: &mut Transaction<'_, Sqlite>, tables: Tables) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE memory_collections SET generation = generation + 1 WHERE id = ?")
            .bind(tables.id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn find(&self, name: &str) -> Result<Option<(Tables, CollectionInfo)>, MemoryError> {
        let row = sqlx::query("SELECT id, name, dimension, model FROM memory_collections WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| MemoryError::store(BACKEND, e))?;
        Ok(row.map(|r| (Tables { id: r.get("id") }, info_from_row(&r))))
    }

    async fn require(&self, name: &str) -> Result<(Tables, CollectionInfo), MemoryError> {
        self.find(name).await?.ok_or_else(|| MemoryError::NoCollection(name.to_string()))
    }

    async fn hits_by_rowid(
        &self,
        scored: &[(i64, f32)],
        filter: &Filter,
        tables: Tables,
    ) -> Result<HashMap<i64, Hit>, MemoryError> {
        if scored.is_empty() {
            return Ok(HashMap::new());
        }
        let (filter_clause, binds) = filter_sql(filter);
        let ids = scored.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>().join(",");
        let sql = format!(
            "SELECT {HIT_COLUMNS} FROM memory_chunks c WHERE c.id IN ({ids}) AND +c.collection_id = {}{filter_clause}",
            tables.id
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in &binds {
            q = bind_value(q, b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| MemoryError::store(BACKEND, e))?;
        let score_of: HashMap<i64, f32> = scored.iter().copied().collect();
        let mut out = HashMap::new();
        for row in rows {
            let id: i64 = row.get("id");
            out.insert(id, hit_from_row(&row, score_of.get(&id).copied().unwrap_or(0.0))?);
        }
        Ok(out)
    }

    /// Exact search over the filtered rows, for filters too narrow for the
    /// quantised candidates to hold enough matches.
    async fn dense_exact(
        &self,
        tables: Tables,
        tenant: &str,
        vector: &[f32],
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, MemoryError> {
        let (filter_clause, binds) = filter_sql(filter);
        let sql = format!(
            "SELECT {HIT_COLUMNS} FROM memory_chunks c WHERE c.collection_id = {} AND c.tenant = ?{filter_clause}",
            tables.id
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.to_string());
        for b in &binds {
            q = bind_value(q, b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| MemoryError::store(BACKEND, e))?;
        let hits = rows.iter().map(|row| hit_from_row(row, 0.0)).collect::<Result<Vec<_>, _>>()?;
        Ok(rank_by_cosine(vector, hits, limit))
    }

    async fn insert(
        tx: &mut Transaction<'_, Sqlite>,
        tables: Tables,
        tenant: &str,
        source: &str,
        r: &Record,
        vector: &[f32],
    ) -> Result<(), sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO memory_chunks (point_id, collection_id, tenant, source, title, position, tokens, content_hash, text, metadata, embedding, bits)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(r.id.to_string())
        .bind(tables.id)
        .bind(tenant)
        .bind(source)
        .bind(&r.title)
        .bind(r.position as i64)
        .bind(r.tokens as i64)
        .bind(&r.content_hash)
        .bind(&r.text)
        .bind(Value::Object(r.metadata.clone()).to_string())
        .bind(f32_blob(vector))
        .bind(words_blob(&sign_bits(vector)))
        .fetch_one(&mut **tx)
        .await?;
        let id: i64 = row.get(0);
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (rowid, text, title, tenant) VALUES (?, ?, ?, ?)",
            tables.fts()
        )))
        .bind(id)
        .bind(&r.text)
        .bind(&r.title)
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn remove(tx: &mut Transaction<'_, Sqlite>, tables: Tables, ids: &[i64]) -> Result<(), sqlx::Error> {
        for chunk in ids.chunks(500) {
            let list = chunk.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {} WHERE rowid IN ({list})", tables.fts())))
                .execute(&mut **tx)
                .await?;
            sqlx::query(AssertSqlSafe(format!("DELETE FROM memory_chunks WHERE id IN ({list})")))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create_collection(
        &self,
        name: &str,
        dimension: usize,
        model: &str,
    ) -> Result<CollectionInfo, MemoryError> {
        check_collection_name(name)?;
        if dimension == 0 {
            return Err(MemoryError::store(BACKEND, "a collection's vectors need at least one dimension"));
        }
        let err = |e: sqlx::Error| MemoryError::store(BACKEND, e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query(
            "INSERT INTO memory_collections (name, dimension, model) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(dimension as i64)
        .bind(model)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        let row = sqlx::query("SELECT id, name, dimension, model FROM memory_collections WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
        let tables = Tables { id: row.get("id") };
        let info = info_from_row(&row);
        info.check_fits(dimension, model)?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE VIRTUAL TABLE IF NOT EXISTS {} USING fts5(text, title, tenant UNINDEXED, tokenize = 'porter unicode61')",
            tables.fts()
        )))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(info)
    }

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, MemoryError> {
        Ok(self.find(name).await?.map(|(_, info)| info))
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, MemoryError> {
        let rows = sqlx::query("SELECT name, dimension, model FROM memory_collections ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| MemoryError::store(BACKEND, e))?;
        Ok(rows.iter().map(info_from_row).collect())
    }

    async fn drop_collection(&self, name: &str) -> Result<bool, MemoryError> {
        let Some((tables, _)) = self.find(name).await? else { return Ok(false) };
        let err = |e: sqlx::Error| MemoryError::store(BACKEND, e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", tables.fts())))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query("DELETE FROM memory_chunks WHERE collection_id = ?")
            .bind(tables.id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query("DELETE FROM memory_collections WHERE id = ?")
            .bind(tables.id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }

    async fn stored_ids(&self, collection: &str, tenant: &str, source: &str) -> Result<HashSet<Uuid>, MemoryError> {
        let Some((tables, _)) = self.find(collection).await? else { return Ok(HashSet::new()) };
        let rows =
            sqlx::query("SELECT point_id FROM memory_chunks WHERE collection_id = ? AND tenant = ? AND source = ?")
                .bind(tables.id)
                .bind(tenant)
                .bind(source)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| MemoryError::store(BACKEND, e))?;
        Ok(rows.iter().filter_map(|r| Uuid::parse_str(r.get::<&str, _>(0)).ok()).collect())
    }

    async fn replace_source(
        &self,
        collection: &str,
        tenant: &str,
        source: &str,
        records: Vec<Record>,
    ) -> Result<SourceChange, MemoryError> {
        let (tables, info) = self.require(collection).await?;
        for r in &records {
            if let Some(v) = &r.vector {
                check_dimension(&info, v)?;
            }
        }
        let err = |e: sqlx::Error| MemoryError::store(BACKEND, e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        let rows =
            sqlx::query("SELECT id, point_id FROM memory_chunks WHERE collection_id = ? AND tenant = ? AND source = ?")
                .bind(tables.id)
                .bind(tenant)
                .bind(source)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
        let mut existing: HashMap<String, i64> =
            rows.iter().map(|r| (r.get::<String, _>("point_id"), r.get::<i64, _>("id"))).collect();
        let mut change = SourceChange::default();
        for r in &records {
            match existing.remove(&r.id.to_string()) {
                Some(rowid) => {
                    sqlx::query(
                        "UPDATE memory_chunks SET title = ?, position = ?, tokens = ?, metadata = ? WHERE id = ?",
                    )
                    .bind(&r.title)
                    .bind(r.position as i64)
                    .bind(r.tokens as i64)
                    .bind(Value::Object(r.metadata.clone()).to_string())
                    .bind(rowid)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                    change.kept += 1;
                }
                None => {
                    let Some(vector) = &r.vector else {
                        return Err(MemoryError::store(
                            BACKEND,
                            format!("chunk {} of {source} is new but came without a vector", r.position),
                        ));
                    };
                    Self::insert(&mut tx, tables, tenant, source, r, vector).await.map_err(err)?;
                    change.added += 1;
                }
            }
        }
        let stale: Vec<i64> = existing.into_values().collect();
        change.removed = stale.len();
        Self::remove(&mut tx, tables, &stale).await.map_err(err)?;
        if change.added + change.removed > 0 {
            Self::bump(&mut tx, tables).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(change)
    }

    async fn delete_source(&self, collection: &str, tenant: &str, source: &str) -> Result<usize, MemoryError> {
        let Some((tables, _)) = self.find(collection).await? else { return Ok(0) };
        let err = |e: sqlx::Error| MemoryError::store(BACKEND, e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM memory_chunks WHERE collection_id = ? AND tenant = ? AND source = ?")
                .bind(tables.id)
                .bind(tenant)
                .bind(source)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
        Self::remove(&mut tx, tables, &ids).await.map_err(err)?;
        Self::bump(&mut tx, tables).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(ids.len())
    }

    async fn count(&self, collection: &str, tenant: Option<&str>) -> Result<usize, MemoryError> {
        let (tables, _) = self.require(collection).await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM memory_chunks WHERE collection_id = ? AND (? IS NULL OR tenant = ?)",
        )
        .bind(tables.id)
        .bind(tenant)
        .bind(tenant)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| MemoryError::store(BACKEND, e))?;
        Ok(n as usize)
    }

    async fn dense(
        &self,
        collection: &str,
        tenant: &str,
        vector: &[f32],
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, MemoryError> {
        let (tables, info) = self.require(collection).await?;
        check_dimension(&info, vector)?;
        if limit == 0 {
            return Ok(vec![]);
        }
        let per_result = if filter.is_empty() { OVERSAMPLE } else { OVERSAMPLE * 4 };
        let k = (limit * per_result).max(MIN_CANDIDATES);
        let index = self.bit_index(tables, tenant).await?;
        let candidates: Vec<(i64, f32)> =
            index.nearest(&sign_bits(vector), k).into_iter().map(|id| (id, 0.0)).collect();
        let hits: Vec<Hit> = self.hits_by_rowid(&candidates, filter, tables).await?.into_values().collect();
        if hits.len() < limit && candidates.len() >= k {
            // The filter left too few of the quantised candidates: search its rows exactly.
            return self.dense_exact(tables, tenant, vector, filter, limit).await;
        }
        Ok(rank_by_cosine(vector, hits, limit))
    }

    async fn lexical(
        &self,
        collection: &str,
        tenant: &str,
        text: &str,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, MemoryError> {
        let (tables, _) = self.require(collection).await?;
        let Some(expr) = fts_query(text) else { return Ok(vec![]) };
        if limit == 0 {
            return Ok(vec![]);
        }
        let (filter_clause, binds) = filter_sql(filter);
        let fts = tables.fts();
        // Without a filter, rank inside FTS5 and fetch only the winners' rows.
        let sql = if filter.is_empty() {
            format!(
                "SELECT {HIT_COLUMNS}, f.score FROM (SELECT rowid, -bm25({fts}, 1.0, {TITLE_WEIGHT}) AS score FROM {fts}
                 WHERE {fts} MATCH ? AND tenant = ? ORDER BY bm25({fts}, 1.0, {TITLE_WEIGHT}) LIMIT {limit}) f
                 JOIN memory_chunks c ON c.id = f.rowid ORDER BY f.score DESC"
            )
        } else {
            format!(
                "SELECT {HIT_COLUMNS}, -bm25({fts}, 1.0, {TITLE_WEIGHT}) AS score FROM {fts} f JOIN memory_chunks c ON c.id = f.rowid
                 WHERE {fts} MATCH ? AND f.tenant = ?{filter_clause} ORDER BY bm25({fts}, 1.0, {TITLE_WEIGHT}) LIMIT {limit}"
            )
        };
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(expr).bind(tenant.to_string());
        for b in &binds {
            q = bind_value(q, b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| MemoryError::store(BACKEND, e))?;
        rows.iter().map(|row| hit_from_row(row, row.get::<f64, _>("score") as f32)).collect()
    }
}

/// Scores candidates by their exact cosine to the query and keeps the best `limit`.
fn rank_by_cosine(vector: &[f32], mut hits: Vec<Hit>, limit: usize) -> Vec<Hit> {
    for h in &mut hits {
        h.score = cosine(vector, &h.vector);
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    hits.truncate(limit);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_queries_quote_every_term() {
        assert_eq!(fts_query("What does `cargo vendor` do?").unwrap(), "\"cargo\" OR \"vendor\"");
        assert_eq!(fts_query("the a of"), None);
        assert_eq!(fts_query("say \"hi\" NEAR(x)").unwrap(), "\"say\" OR \"hi\" OR \"near\" OR \"x\"");
    }
}
