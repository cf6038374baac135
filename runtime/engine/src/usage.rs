//! Token usage of a run: `llm.usage` events summed by node and by model, and
//! kept on the run record (added to what earlier executions recorded).

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use crate::event::{Event, EventSink};

/// Passes events on, summing the `llm.usage` ones of one run.
pub struct UsageTally {
    inner: Arc<dyn EventSink>,
    run_id: String,
    totals: Mutex<Value>,
}

impl UsageTally {
    pub fn new(inner: Arc<dyn EventSink>, run_id: &str) -> Self {
        Self { inner, run_id: run_id.to_string(), totals: Mutex::new(Value::Object(Map::new())) }
    }

    /// The usage gathered so far, added onto `earlier`.
    pub fn merged_into(&self, earlier: &Value) -> Value {
        let mut out = earlier.clone();
        if let Ok(t) = self.totals.lock() {
            add(&mut out, &t);
        }
        out
    }
}

/// Adds every number of `more` into `into`, recursively.
fn add(into: &mut Value, more: &Value) {
    match (into, more) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                add(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot @ Value::Null, v) => *slot = v.clone(),
        (Value::Number(a), Value::Number(b)) => {
            *a = serde_json::Number::from(a.as_u64().unwrap_or(0) + b.as_u64().unwrap_or(0));
        }
        _ => {}
    }
}

impl EventSink for UsageTally {
    fn emit(&self, event: Event) {
        let data = match event.kind.as_str() {
            "llm.usage" => Some(&event.data),
            "subgraph.llm.usage" => event.data.get("event"),
            _ => None,
        };
        if let (Some(d), true) = (data, event.run_id == self.run_id) {
            let n = |k: &str| d.get(k).and_then(Value::as_u64).unwrap_or(0);
            let one = json!({"prompt_tokens": n("prompt_tokens"), "completion_tokens": n("completion_tokens")});
            let model = d.get("model").and_then(Value::as_str).unwrap_or("unknown");
            let node = event.node.as_deref().unwrap_or("unknown");
            let delta = json!({
                "prompt_tokens": n("prompt_tokens"),
                "completion_tokens": n("completion_tokens"),
                "by_node": {node: one.clone()},
                "by_model": {model: one},
            });
            if let Ok(mut t) = self.totals.lock() {
                add(&mut t, &delta);
            }
        }
        self.inner.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NullSink;

    #[test]
    fn sums_by_node_and_model_onto_earlier_usage() {
        let t = UsageTally::new(Arc::new(NullSink), "r");
        let usage = |node: &str, p: u64| {
            Event::new("llm.usage", "r", "t")
                .node(node)
                .data(json!({"model": "m", "prompt_tokens": p, "completion_tokens": 1}))
        };
        t.emit(usage("a", 10));
        t.emit(usage("b", 5));
        t.emit(Event::new("llm.usage", "other-run", "t").data(json!({"prompt_tokens": 99})));
        let earlier = json!({"prompt_tokens": 100, "completion_tokens": 0, "by_node": {"a": {"prompt_tokens": 100, "completion_tokens": 0}}});
        let u = t.merged_into(&earlier);
        assert_eq!(u["prompt_tokens"], 115);
        assert_eq!(u["completion_tokens"], 2);
        assert_eq!(u["by_node"]["a"]["prompt_tokens"], 110);
        assert_eq!(u["by_model"]["m"]["prompt_tokens"], 15);
    }
}
