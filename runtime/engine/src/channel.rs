//! Channels and reducers: how a node's write combines with a channel's value.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::EngineError;

/// How writes to a channel are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reducer {
    /// The write replaces the value; two writers in one step is an error.
    #[default]
    Replace,
    /// Lists: the written item (or list of items) is appended.
    Append,
    /// Chat messages: appended, except a message whose `id` is already present replaces it.
    Messages,
    /// Objects: keys of the write are merged over the value (shallow).
    Merge,
    /// Numbers: the write is added.
    Sum,
    /// Numbers: the larger of value and write.
    Max,
}

impl Reducer {
    /// Whether the channel grows by appending, so a step can store only its delta.
    pub fn is_incremental(self) -> bool {
        matches!(self, Reducer::Append | Reducer::Messages)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "replace" => Reducer::Replace,
            "append" => Reducer::Append,
            "messages" => Reducer::Messages,
            "merge" => Reducer::Merge,
            "sum" => Reducer::Sum,
            "max" => Reducer::Max,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Reducer::Replace => "replace",
            Reducer::Append => "append",
            Reducer::Messages => "messages",
            Reducer::Merge => "merge",
            Reducer::Sum => "sum",
            Reducer::Max => "max",
        }
    }

    /// The value a channel holds before anything is written to it.
    pub fn empty(self) -> Value {
        match self {
            Reducer::Append | Reducer::Messages => Value::Array(vec![]),
            Reducer::Merge => Value::Object(Map::new()),
            Reducer::Sum => Value::from(0),
            Reducer::Replace | Reducer::Max => Value::Null,
        }
    }

    /// Items a write adds to an incremental channel (a list write adds each item).
    pub fn delta_items(write: &Value) -> Vec<Value> {
        match write {
            Value::Array(items) => items.clone(),
            Value::Null => vec![],
            other => vec![other.clone()],
        }
    }

    /// Combines `write` into `current` for channel `channel`.
    pub fn apply(self, channel: &str, current: &mut Value, write: Value) -> Result<(), EngineError> {
        let bad = |expected: &str, got: &Value| EngineError::InvalidWrite {
            channel: channel.to_string(),
            message: format!("reducer `{}` expects {expected}, got {}", self.name(), kind_of(got)),
        };
        match self {
            Reducer::Replace => *current = write,
            Reducer::Append => {
                if current.is_null() {
                    *current = Value::Array(vec![]);
                }
                let list = current.as_array_mut().ok_or_else(|| bad("a list value", &Value::Null))?;
                list.extend(Self::delta_items(&write));
            }
            Reducer::Messages => {
                if current.is_null() {
                    *current = Value::Array(vec![]);
                }
                let list = current.as_array_mut().ok_or_else(|| bad("a list value", &Value::Null))?;
                for msg in Self::delta_items(&write) {
                    let id = msg.get("id").filter(|v| !v.is_null()).cloned();
                    match id.and_then(|id| list.iter().position(|m| m.get("id") == Some(&id))) {
                        Some(pos) => list[pos] = msg,
                        None => list.push(msg),
                    }
                }
            }
            Reducer::Merge => {
                let Value::Object(add) = write else {
                    return Err(bad("an object", &write));
                };
                if !current.is_object() {
                    *current = Value::Object(Map::new());
                }
                if let Some(obj) = current.as_object_mut() {
                    for (k, v) in add {
                        obj.insert(k, v);
                    }
                }
            }
            Reducer::Sum => {
                let add = write.as_f64().ok_or_else(|| bad("a number", &write))?;
                let cur = if current.is_null() { Some(0.0) } else { current.as_f64() };
                let cur = cur.ok_or_else(|| bad("a number value", current))?;
                *current = number(cur + add, current.is_i64() || current.is_null(), write.is_i64());
            }
            Reducer::Max => {
                let w = write.as_f64().ok_or_else(|| bad("a number", &write))?;
                match current.as_f64() {
                    Some(c) if c >= w => {}
                    _ => *current = write,
                }
            }
        }
        Ok(())
    }
}

fn number(v: f64, cur_int: bool, write_int: bool) -> Value {
    if cur_int && write_int && v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
    }
}

/// A short name of a JSON value's type, for error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A declared channel of the graph state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelSpec {
    pub name: String,
    pub reducer: Reducer,
    /// Value before the first write; the reducer's empty value when absent.
    pub default: Option<Value>,
    /// Optional JSON type name (`string`, `number`, `integer`, `boolean`, `array`, `object`).
    pub r#type: Option<String>,
}

impl ChannelSpec {
    pub fn new(name: impl Into<String>, reducer: Reducer) -> Self {
        Self { name: name.into(), reducer, default: None, r#type: None }
    }

    pub fn initial(&self) -> Value {
        self.default.clone().unwrap_or_else(|| self.reducer.empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reducers_combine_as_documented() {
        let mut v = json!([1]);
        Reducer::Append.apply("c", &mut v, json!([2, 3])).unwrap();
        Reducer::Append.apply("c", &mut v, json!(4)).unwrap();
        assert_eq!(v, json!([1, 2, 3, 4]));

        let mut m = json!([{"id": "a", "text": "x"}]);
        Reducer::Messages.apply("m", &mut m, json!([{"id": "a", "text": "y"}, {"id": "b", "text": "z"}])).unwrap();
        assert_eq!(m, json!([{"id": "a", "text": "y"}, {"id": "b", "text": "z"}]));

        let mut o = json!({"a": 1});
        Reducer::Merge.apply("o", &mut o, json!({"b": 2})).unwrap();
        assert_eq!(o, json!({"a": 1, "b": 2}));

        let mut s = json!(0);
        Reducer::Sum.apply("s", &mut s, json!(2)).unwrap();
        Reducer::Sum.apply("s", &mut s, json!(3)).unwrap();
        assert_eq!(s, json!(5));
        Reducer::Sum.apply("s", &mut s, json!(0.5)).unwrap();
        assert_eq!(s, json!(5.5));

        let mut x = Value::Null;
        Reducer::Max.apply("x", &mut x, json!(3)).unwrap();
        Reducer::Max.apply("x", &mut x, json!(1)).unwrap();
        assert_eq!(x, json!(3));
    }

    #[test]
    fn wrong_write_type_is_an_error_naming_the_channel() {
        let mut s = json!(1);
        let err = Reducer::Sum.apply("count", &mut s, json!("x")).unwrap_err();
        assert!(err.to_string().contains("count"), "{err}");
        let mut o = json!({});
        assert!(Reducer::Merge.apply("o", &mut o, json!([1])).is_err());
    }
}
