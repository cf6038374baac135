//! The `models:` section: named model profiles.
//!
//! ```yaml
//! models:
//!   writer: { model: gpt-4o-mini, temperature: 0.2, max_tokens: 400, max_rpm: 60 }
//!   local:  { base_url: "http://127.0.0.1:8080/v1", model: smollm2, context_window: 2048 }
//!   canned: { provider: scripted, model: demo, script: ["a fixed answer"] }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crewgraph_llm::{ChatModel, ModelProfile, Provider};

use crate::error::SpecError;
use crate::yaml::{Fields, Kind, Yaml};

pub type Models = BTreeMap<String, Arc<dyn ChatModel>>;

/// Reads one profile.
pub fn profile(file: &str, name: &str, decl: &Yaml) -> Result<ModelProfile, SpecError> {
    let what = format!("model `{name}`");
    let mut f = Fields::new(file, decl, &what)?;
    let model = f.req_str("model")?;
    let mut p = ModelProfile::new(name, model);
    if let Some(at) = f.opt("provider") {
        p.provider = match at.as_str() {
            Some("openai") => Provider::Openai,
            Some("scripted") => Provider::Scripted,
            _ => {
                return Err(f.err(at, "`provider`: expected `openai` (any OpenAI-compatible server) or `scripted`"));
            }
        };
    }
    p.base_url = f.opt_str("base_url")?.map(str::to_string);
    if let Some(env) = f.opt_str("api_key_env")? {
        p.api_key_env = env.to_string();
    }
    if let Some(at) = f.opt("api_key") {
        return Err(f.err(at, "put the key in an environment variable and name it with `api_key_env`"));
    }
    p.temperature = f.opt_f64("temperature")?.map(|t| t as f32);
    p.max_tokens = f.opt_u64("max_tokens")?.map(|m| m.min(u32::MAX as u64) as u32);
    if let Some(t) = f.opt_f64("timeout_s")? {
        p.timeout_s = t;
    }
    if let Some(r) = f.opt_u64("max_retries")? {
        p.max_retries = r.min(20) as u32;
    }
    if let Some(b) = f.opt_u64("backoff_ms")? {
        p.backoff_ms = b;
    }
    if let Some(b) = f.opt_u64("max_backoff_ms")? {
        p.max_backoff_ms = b;
    }
    if let Some(r) = f.opt_u64("max_retry_after_s")? {
        p.max_retry_after_s = r;
    }
    p.max_rpm = f.opt_u64("max_rpm")?.map(|r| r.min(u32::MAX as u64) as u32);
    if let Some(c) = f.opt_u64("context_window")? {
        p.context_window = c as usize;
    }
    if let Some(s) = f.opt_bool("stream")? {
        p.stream = s;
    }
    if let Some(script) = f.opt("script") {
        let Kind::Seq(items) = &script.kind else {
            return Err(f.err(script, "`script`: expected a list of replies"));
        };
        p.script = items.iter().map(Yaml::to_json).collect();
    }
    if p.provider == Provider::Scripted && p.script.is_empty() {
        return Err(f.err(decl, format!("{what}: a `scripted` model needs `script:` replies")));
    }
    f.finish()?;
    Ok(p)
}

/// Reads the `models:` section and connects each profile.
pub fn read(file: &str, section: &Yaml) -> Result<Models, SpecError> {
    let entries = section
        .entries()
        .ok_or_else(|| SpecError::at(file, section.loc, "`models`: expected a mapping of model name to profile"))?;
    let mut models = Models::new();
    for (key, decl) in entries {
        let p = profile(file, &key.name, decl)?;
        let model = crewgraph_llm::connect(&p).map_err(|e| SpecError::at(file, decl.loc, e.to_string()))?;
        models.insert(key.name.clone(), model);
    }
    Ok(models)
}
