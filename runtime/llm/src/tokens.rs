//! Token counting with tiktoken-rs (cl100k_base): an estimate for models with
//! other tokenizers, but a consistent one, used for usage when a server does
//! not report it and for context budgets.

use crate::types::Message;

/// Tokens per message of chat framing (role, separators), as OpenAI counts them.
const PER_MESSAGE: usize = 4;

pub fn count(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton().encode_with_special_tokens(text).len()
}

pub fn count_messages(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| {
            let calls: usize = m.tool_calls.iter().map(|c| count(&c.name) + count(&c.arguments.to_string())).sum();
            PER_MESSAGE + count(&m.content) + calls
        })
        .sum::<usize>()
        + 3
}

/// The first `max` tokens of `text`.
pub fn truncate(text: &str, max: usize) -> String {
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let tokens = bpe.encode_with_special_tokens(text);
    if tokens.len() <= max {
        return text.to_string();
    }
    bpe.decode(&tokens[..max]).unwrap_or_else(|_| text.chars().take(max * 3).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_truncates() {
        assert_eq!(count("hello world"), 2);
        let long = "word ".repeat(100);
        assert_eq!(count(&truncate(&long, 10)), 10);
        assert!(count_messages(&[Message::user("hello world")]) >= 2 + PER_MESSAGE);
    }
}
