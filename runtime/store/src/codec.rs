//! Row encoding shared by the SQL backends, and the rebuild of channel values
//! from version-keyed blobs.

use std::collections::BTreeMap;

use crewgraph_engine::checkpoint::replay_blobs;
use crewgraph_engine::{Blob, Checkpoint, CheckpointSource, StorageError, TaskSpec};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::json;

/// A checkpoint row before its values are rebuilt.
pub struct CheckpointRow {
    pub thread_id: String,
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub step: i64,
    pub source: String,
    pub versions: String,
    pub next: String,
    pub metadata: String,
    pub created_at: i64,
}

pub struct BlobRow {
    pub channel: String,
    pub version: i64,
    pub kind: String,
    pub body: String,
}

pub fn source_name(s: CheckpointSource) -> &'static str {
    match s {
        CheckpointSource::Input => "input",
        CheckpointSource::Loop => "loop",
        CheckpointSource::Update => "update",
        CheckpointSource::Fork => "fork",
    }
}

fn parse_source(s: &str) -> CheckpointSource {
    match s {
        "input" => CheckpointSource::Input,
        "update" => CheckpointSource::Update,
        "fork" => CheckpointSource::Fork,
        _ => CheckpointSource::Loop,
    }
}

/// The JSON columns of a checkpoint row.
pub fn encode(c: &Checkpoint) -> Result<(String, String, String), StorageError> {
    Ok((
        serde_json::to_string(&c.versions).map_err(json)?,
        serde_json::to_string(&c.next).map_err(json)?,
        serde_json::to_string(&c.metadata).map_err(json)?,
    ))
}

/// Rebuilds checkpoints from their rows and the thread's blobs (sorted by channel, version).
pub fn hydrate(rows: Vec<CheckpointRow>, blobs: Vec<BlobRow>) -> Result<Vec<Checkpoint>, StorageError> {
    let mut by_channel: BTreeMap<String, Vec<(i64, Blob)>> = BTreeMap::new();
    for b in blobs {
        let body: Value = serde_json::from_str(&b.body).map_err(json)?;
        by_channel.entry(b.channel).or_default().push((b.version, Blob::from_parts(&b.kind, body)?));
    }
    rows.into_iter()
        .map(|r| {
            let versions: BTreeMap<String, i64> = serde_json::from_str(&r.versions).map_err(json)?;
            let next: Vec<TaskSpec> = serde_json::from_str(&r.next).map_err(json)?;
            let metadata: Map<String, Value> = serde_json::from_str(&r.metadata).map_err(json)?;
            let mut values = Map::new();
            for (channel, version) in &versions {
                let list = by_channel.get(channel).map(Vec::as_slice).unwrap_or_default();
                let upto = list.partition_point(|(v, _)| v <= version);
                let start = list[..upto].iter().rposition(|(_, b)| matches!(b, Blob::Full(_))).unwrap_or(0);
                values.insert(channel.clone(), replay_blobs(list[start..upto].iter().map(|(_, b)| b)));
            }
            Ok(Checkpoint {
                thread_id: r.thread_id,
                id: r.id,
                parent_id: r.parent_id,
                step: r.step,
                source: parse_source(&r.source),
                values,
                versions,
                next,
                metadata,
                created_at: r.created_at,
            })
        })
        .collect()
}
