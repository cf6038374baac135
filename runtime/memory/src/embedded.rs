//! The embedded vector store: SQLite with FTS5 for the lexical side and the
//! sqlite-vec extension for vectors, in one file under `.crewgraph/` (the
//! same file as the embedded checkpoints when those are SQLite too).
//!
//! Each chunk is a row of `memory_chunks` (text, payload, float32 vector);
//! each collection adds a `vec0` table of binary-quantised vectors
//! partitioned by tenant and an FTS5 table, both keyed by the chunk's rowid.
//! A dense query scans the 1-bit vectors (48 bytes each for 384 dimensions,
//! so 100k chunks scan in a few milliseconds), then re-ranks the best
//! candidates by exact cosine similarity on the float vectors.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Once;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::bm25;
use crate::error::MemoryError;
use crate::store::{
    CollectionInfo, Filter, Hit, Record, SourceChange, VectorStore, check_collection_name, check_dimension,
};

const BACKEND: &str = "embedded";
/// Candidates taken from the 1-bit scan per result wanted, before exact re-ranking.
const OVERSAMPLE: usize = 16;
/// Fewest candidates re-ranked, whatever the limit.
const MIN_CANDIDATES: usize = 160;
/// vec0 answers at most this many neighbours per query.
const MAX_KNN: usize = 4096;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS memory_collections (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        dimension INTEGER NOT NULL,
        model TEXT NOT NULL,
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
        embedding BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS memory_chunks_by_source ON memory_chunks (collection_id, tenant, source)",
];

const HIT_COLUMNS: &str = "c.id, c.point_id, c.source, c.title, c.position, c.tokens, c.text, c.metadata, c.embedding";

/// Registers sqlite-vec with every SQLite connection this process opens.
fn register_sqlite_vec() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_vec_init is the extension's entry point, compiled
        // with SQLITE_CORE against the SQLite that sqlx links; registering an
        // auto extension is how a statically linked extension is loaded.
        unsafe {
            type EntryPoint = unsafe extern "C" fn(
                *mut libsqlite3_sys::sqlite3,
                *mut *mut std::ffi::c_char,
                *const libsqlite3_sys::sqlite3_api_routines,
            ) -> std::ffi::c_int;
            let entry = std::mem::transmute::<unsafe extern "C" fn(), EntryPoint>(sqlite_vec::sqlite3_vec_init);
            libsqlite3_sys::sqlite3_auto_extension(Some(entry));
        }
    });
}

pub struct EmbeddedStore {
    pool: SqlitePool,
}

#[derive(Clone, Copy)]
struct Tables {
    id: i64,
}

impl Tables {
    fn vec(self) -> String {
        format!("memory_vec_{}", self.id)
    }
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

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na.sqrt() * nb.sqrt()) }
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
        register_sqlite_vec();
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
        Ok(Self { pool })
    }

    async fn find(&self, name: &str) -> Result<Option<(Tables, CollectionInfo)>, MemoryError> {
        let row = sqlx::query("SELECT id, name, dimension, model FROM memory_collections WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| MemoryError::store(BACKEND, e))?;
        Ok(row.map(|r| {
            (
                Tables { id: r.get("id") },
                CollectionInfo {
                    name: r.get("name"),
                    dimension: r.get::<i64, _>("dimension") as usize,
                    model: r.get("model"),
                },
            )
        }))
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
            "SELECT {HIT_COLUMNS} FROM memory_chunks c WHERE c.collection_id = {} AND c.id IN ({ids}){filter_clause}",
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
            "SELECT {HIT_COLUMNS}, vec_distance_cosine(c.embedding, ?) AS distance FROM memory_chunks c
             WHERE c.collection_id = {} AND c.tenant = ?{filter_clause} ORDER BY distance LIMIT {limit}",
            tables.id
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(f32_blob(vector)).bind(tenant.to_string());
        for b in &binds {
            q = bind_value(q, b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| MemoryError::store(BACKEND, e))?;
        rows.iter()
            .map(|row| {
                let distance: f64 = row.get("distance");
                hit_from_row(row, 1.0 - distance as f32)
            })
            .collect()
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
            "INSERT INTO memory_chunks (point_id, collection_id, tenant, source, title, position, tokens, content_hash, text, metadata, embedding)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        .fetch_one(&mut **tx)
        .await?;
        let id: i64 = row.get(0);
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (rowid, tenant, embedding) VALUES (?, ?, vec_quantize_binary(?))",
            tables.vec()
        )))
        .bind(id)
        .bind(tenant)
        .bind(f32_blob(vector))
        .execute(&mut **tx)
        .await?;
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
            for table in [tables.vec(), tables.fts()] {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE rowid IN ({list})")))
                    .execute(&mut **tx)
                    .await?;
            }
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
        if dimension == 0 || !dimension.is_multiple_of(8) {
            return Err(MemoryError::store(BACKEND, format!("dimension {dimension}: a positive multiple of 8")));
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
        let row = sqlx::query("SELECT id, dimension, model FROM memory_collections WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
        let tables = Tables { id: row.get("id") };
        let info = CollectionInfo {
            name: name.to_string(),
            dimension: row.get::<i64, _>("dimension") as usize,
            model: row.get("model"),
        };
        if info.model != model {
            return Err(MemoryError::ModelMismatch {
                collection: name.to_string(),
                existing: info.model,
                requested: model.to_string(),
            });
        }
        if info.dimension != dimension {
            return Err(MemoryError::Dimension {
                collection: name.to_string(),
                expected: info.dimension,
                got: dimension,
                model: info.model,
            });
        }
        sqlx::query(AssertSqlSafe(format!(
            "CREATE VIRTUAL TABLE IF NOT EXISTS {} USING vec0(tenant text partition key, embedding bit[{dimension}])",
            tables.vec()
        )))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
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
        Ok(rows
            .iter()
            .map(|r| CollectionInfo {
                name: r.get("name"),
                dimension: r.get::<i64, _>("dimension") as usize,
                model: r.get("model"),
            })
            .collect())
    }

    async fn drop_collection(&self, name: &str) -> Result<bool, MemoryError> {
        let Some((tables, _)) = self.find(name).await? else { return Ok(false) };
        let err = |e: sqlx::Error| MemoryError::store(BACKEND, e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        for table in [tables.vec(), tables.fts()] {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}"))).execute(&mut *tx).await.map_err(err)?;
        }
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
        let k = (limit * per_result).clamp(MIN_CANDIDATES, MAX_KNN);
        let candidates: Vec<(i64, f32)> = sqlx::query(AssertSqlSafe(format!(
            "SELECT rowid, distance FROM {} WHERE embedding MATCH vec_quantize_binary(?) AND k = {k} AND tenant = ?",
            tables.vec()
        )))
        .bind(f32_blob(vector))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| MemoryError::store(BACKEND, e))?
        .iter()
        .map(|r| (r.get::<i64, _>(0), 0.0))
        .collect();
        let mut hits: Vec<Hit> = self.hits_by_rowid(&candidates, filter, tables).await?.into_values().collect();
        if hits.len() < limit && candidates.len() >= k {
            // The filter left too few of the quantised candidates: search its rows exactly.
            return self.dense_exact(tables, tenant, vector, filter, limit).await;
        }
        for h in &mut hits {
            h.score = cosine(vector, &h.vector);
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits.truncate(limit);
        Ok(hits)
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
        let sql = format!(
            "SELECT {HIT_COLUMNS}, -bm25({fts}) AS score FROM {fts} f JOIN memory_chunks c ON c.id = f.rowid
             WHERE {fts} MATCH ? AND f.tenant = ?{filter_clause} ORDER BY bm25({fts}) LIMIT {limit}"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(expr).bind(tenant.to_string());
        for b in &binds {
            q = bind_value(q, b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| MemoryError::store(BACKEND, e))?;
        rows.iter().map(|row| hit_from_row(row, row.get::<f64, _>("score") as f32)).collect()
    }
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
