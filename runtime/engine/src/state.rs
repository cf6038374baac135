//! The run state: named channel values and the version at which each changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::channel::ChannelSpec;

/// Channel values plus per-channel versions. A version is the step number of
/// the last write, so an unchanged channel keeps its version (and its stored blob).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub values: Map<String, Value>,
    pub versions: BTreeMap<String, i64>,
}

impl State {
    /// Every declared channel at its initial value, version 0.
    pub fn initial(channels: &[ChannelSpec]) -> Self {
        let mut s = State::default();
        for c in channels {
            s.values.insert(c.name.clone(), c.initial());
        }
        s
    }

    pub fn get(&self, channel: &str) -> Option<&Value> {
        self.values.get(channel)
    }

    /// The state as one JSON object (what templates and conditions see as `state`).
    pub fn to_value(&self) -> Value {
        Value::Object(self.values.clone())
    }
}
