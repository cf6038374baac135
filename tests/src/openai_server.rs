//! A scripted OpenAI-compatible HTTP server for tests of model calls: real
//! HTTP on loopback, real wire format (JSON completions, SSE chunks, error
//! statuses with `Retry-After`, malformed bodies, hangs), replies in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A JSON body with a status and extra headers.
    Json { status: u16, body: Value, headers: Vec<(String, String)> },
    /// `200` with these SSE chunks, then `data: [DONE]`.
    Stream(Vec<Value>),
    /// A raw body (malformed JSON, say).
    Raw { status: u16, body: String },
    /// Accept the request and never answer within the test.
    Hang,
}

impl Reply {
    /// A complete non-streamed answer with text.
    pub fn text(content: &str) -> Self {
        Reply::Json {
            status: 200,
            body: json!({
                "id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "scripted-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            }),
            headers: vec![],
        }
    }

    /// A complete answer that calls one tool natively.
    pub fn tool_call(name: &str, arguments: Value) -> Self {
        Reply::Json {
            status: 200,
            body: json!({
                "id": "cmpl-2", "object": "chat.completion", "created": 1, "model": "scripted-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": format!("call_{name}"), "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}
                ]}, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
            }),
            headers: vec![],
        }
    }

    /// An error status with an OpenAI-style error body.
    pub fn error(status: u16, retry_after: Option<&str>) -> Self {
        Reply::Json {
            status,
            body: json!({"error": {"message": format!("scripted {status}"), "type": "server_error", "param": null, "code": null}}),
            headers: retry_after.map(|r| vec![("retry-after".to_string(), r.to_string())]).unwrap_or_default(),
        }
    }

    /// A streamed answer: the text split into chunks, then a usage chunk.
    pub fn streamed_text(parts: &[&str]) -> Self {
        let mut chunks: Vec<Value> = parts
            .iter()
            .map(|p| {
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "scripted-model",
                            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
            })
            .collect();
        chunks.push(json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "scripted-model",
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
        chunks.push(json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "scripted-model", "choices": [],
                           "usage": {"prompt_tokens": 20, "completion_tokens": parts.len(), "total_tokens": 20 + parts.len()}}));
        Reply::Stream(chunks)
    }
}

/// The server; dropping it stops accepting.
pub struct OpenAiServer {
    pub base_url: String,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    /// Request bodies received, in order.
    pub requests: Arc<Mutex<Vec<Value>>>,
    /// Request lines and headers received, in order (as sent, lowercase not applied).
    pub heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OpenAiServer {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (q, log, head_log) = (replies.clone(), requests.clone(), heads.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (q, log, head_log) = (q.clone(), log.clone(), head_log.clone());
                tokio::spawn(async move { serve(sock, q, log, head_log).await });
            }
        });
        Self { base_url: format!("http://127.0.0.1:{port}/v1"), replies, requests, heads, task }
    }

    pub fn push(&self, reply: Reply) {
        self.replies.lock().expect("lock").push_back(reply);
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }
}

impl Drop for OpenAiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    log: Arc<Mutex<Vec<Value>>>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let body = loop {
        let n = match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                heads.lock().expect("lock").push(text[..end].to_string());
                break String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            }
        }
    };
    log.lock().expect("lock").push(serde_json::from_str(&body).unwrap_or(Value::String(body)));
    let reply = replies.lock().expect("lock").pop_front().unwrap_or(Reply::error(500, None));
    let out = match reply {
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Reply::Json { status, body, headers } => {
            let body = body.to_string();
            let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
            format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Reply::Raw { status, body } => format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
        Reply::Stream(chunks) => {
            let mut s = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
            );
            for c in chunks {
                s.push_str(&format!("data: {c}\n\n"));
            }
            s.push_str("data: [DONE]\n\n");
            s
        }
    };
    let _ = sock.write_all(out.as_bytes()).await;
    let _ = sock.shutdown().await;
}
