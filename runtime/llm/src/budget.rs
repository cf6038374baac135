//! Fitting a conversation into the model's context window before sending it:
//! keep the system messages and the latest message, drop the oldest turns,
//! then shorten what is still too long, so a prompt never goes out to fail.

use crate::tokens::{count, count_messages, truncate};
use crate::types::{Message, Role};

/// What budgeting did, for events and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trimmed {
    pub dropped_messages: usize,
    pub truncated_messages: usize,
    pub tokens_before: usize,
    pub tokens_after: usize,
}

/// Trims `messages` to at most `budget` tokens (the window minus the answer's reserve).
pub fn fit(messages: &mut Vec<Message>, budget: usize) -> Trimmed {
    let mut t = Trimmed { tokens_before: count_messages(messages), ..Default::default() };
    // Drop the oldest non-system messages, never the last one. A tool answer
    // goes with the assistant message that asked for it.
    while count_messages(messages) > budget {
        let last = messages.len().saturating_sub(1);
        let Some(i) = messages.iter().position(|m| m.role != Role::System) else {
            break;
        };
        if i >= last {
            break;
        }
        messages.remove(i);
        t.dropped_messages += 1;
        while i < messages.len().saturating_sub(1) && messages[i].role == Role::Tool {
            messages.remove(i);
            t.dropped_messages += 1;
        }
    }
    // Still too long: shorten the longest messages, down to what fits.
    while count_messages(messages) > budget {
        let Some((i, len)) = messages.iter().enumerate().map(|(i, m)| (i, count(&m.content))).max_by_key(|(_, n)| *n)
        else {
            break;
        };
        let excess = count_messages(messages) - budget;
        if len == 0 {
            break;
        }
        let keep = len.saturating_sub(excess + 8);
        messages[i].content = format!("{} [trimmed to fit the context window]", truncate(&messages[i].content, keep));
        t.truncated_messages += 1;
        if keep == 0 {
            break;
        }
    }
    t.tokens_after = count_messages(messages);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_old_turns_then_truncates() {
        let mut m = vec![Message::system("be brief")];
        for i in 0..50 {
            m.push(Message::user(format!("question {i} {}", "padding ".repeat(20))));
            m.push(Message::assistant(format!("answer {i}")));
        }
        m.push(Message::user("the last question"));
        let t = fit(&mut m, 200);
        assert!(t.tokens_after <= 200, "{t:?}");
        assert_eq!(m[0].content, "be brief");
        assert_eq!(m.last().unwrap().content, "the last question");
        assert!(t.dropped_messages > 0);

        let mut big = vec![Message::system("s"), Message::user("x ".repeat(5000))];
        let t = fit(&mut big, 300);
        assert!(t.tokens_after <= 300, "{t:?}");
        assert_eq!(t.truncated_messages, 1);
        assert!(big[1].content.ends_with("[trimmed to fit the context window]"));
    }
}
