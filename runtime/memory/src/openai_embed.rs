//! Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI,
//! vLLM, Ollama, llama-server started with `--embeddings`), batched, retried
//! by the same policy as chat calls, and normalised to unit length so cosine
//! similarity means the same as with the local model.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_trait::async_trait;
use crewgraph_llm::ModelProfile;
use serde_json::{Value, json};

use crate::embed::Embedder;
use crate::error::MemoryError;

/// Inputs sent per request.
const BATCH: usize = 64;

pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    model: String,
    id: String,
    dimension: usize,
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The vectors of a response, in input order (servers may answer out of order).
fn parse(response: &Value, expected: usize) -> Result<Vec<Vec<f32>>, MemoryError> {
    let data = response
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| MemoryError::Embed(format!("response has no `data` list: {response}")))?;
    let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
    for (n, item) in data.iter().enumerate() {
        let index = item.get("index").and_then(Value::as_u64).map(|i| i as usize).unwrap_or(n);
        let vector: Vec<f32> = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| MemoryError::Embed(format!("item {n} has no `embedding` list")))?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| MemoryError::Embed(format!("item {n}: an embedding is a list of numbers")))?;
        let slot = out
            .get_mut(index)
            .ok_or_else(|| MemoryError::Embed(format!("item index {index} out of range for {expected} inputs")))?;
        *slot = Some(normalise(vector));
    }
    out.into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| MemoryError::Embed(format!("no embedding returned for input {i}"))))
        .collect()
}

impl OpenAiEmbedder {
    /// Connects with the profile's server, key, timeouts and retries, and asks
    /// once for a vector to learn the dimension.
    pub async fn connect(profile: &ModelProfile) -> Result<Self, MemoryError> {
        let client = crewgraph_llm::openai::client(profile).map_err(|e| MemoryError::Embed(e.to_string()))?;
        let mut embedder =
            Self { client, model: profile.model.clone(), id: format!("openai:{}", profile.model), dimension: 0 };
        let probe = embedder.request(&["dimension probe".to_string()]).await?;
        embedder.dimension = probe.first().map(Vec::len).unwrap_or_default();
        if embedder.dimension == 0 {
            return Err(MemoryError::Embed(format!("model `{}` returned an empty vector", profile.model)));
        }
        Ok(embedder)
    }

    async fn request(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let body = json!({"model": self.model, "input": texts, "encoding_format": "float"});
        let response: Value = self
            .client
            .embeddings()
            .create_byot(body)
            .await
            .map_err(|e| MemoryError::Embed(format!("model `{}`: {e}", self.model)))?;
        parse(&response, texts.len())
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let vectors = self.request(batch).await?;
            if let Some(v) = vectors.iter().find(|v| v.len() != self.dimension) {
                return Err(MemoryError::Embed(format!(
                    "model `{}` returned a {}-dimensional vector after a {}-dimensional one",
                    self.model,
                    v.len(),
                    self.dimension
                )));
            }
            out.extend(vectors);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_orders_by_index_and_normalises() {
        let r = json!({"data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]}]});
        let v = parse(&r, 2).unwrap();
        assert_eq!(v, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
        assert!(
            parse(&json!({"data": [{"index": 0, "embedding": [1.0]}]}), 2).unwrap_err().to_string().contains("input 1")
        );
        assert!(parse(&json!({"error": "x"}), 1).unwrap_err().to_string().contains("no `data`"));
        assert!(parse(&json!({"data": [{"index": 5, "embedding": [1.0]}]}), 1).is_err());
    }
}
