//! HTTP tools over real HTTP: the request a backend sees, errors by status,
//! the host allowlist, and approval before a call.

use std::sync::{Arc, Mutex};

use crewgraph_engine::event::NullSink;
use crewgraph_engine::{ApprovalStatus, Decision, DecisionAction, MemoryStore, RunStatus, RunStore, Runtime};
use crewgraph_spec::{Registry, parse_graph};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-route HTTP server that records each request and answers `status` with `body`.
async fn backend(status: u16, body: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let mut n = 0;
            // Read headers, then the body by Content-Length.
            loop {
                let r = sock.read(&mut buf[n..]).await.unwrap_or(0);
                if r == 0 {
                    break;
                }
                n += r;
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if n >= end + 4 + len {
                        break;
                    }
                }
            }
            log.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).to_string());
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    (port, seen)
}

fn graph(port: u16, requires_approval: bool) -> Arc<crewgraph_engine::Graph> {
    let yaml = format!(
        "name: ticket
state:
  title: {{ type: string }}
  ticket: {{ type: object }}
tools:
  create_ticket:
    description: Opens a ticket.
    requires_approval: {requires_approval}
    http:
      method: POST
      url: \"http://127.0.0.1:{port}/queues/{{{{ args.queue }}}}/tickets\"
      headers: {{ X-Team: support }}
      bearer_env: CG_TEST_TICKET_TOKEN
entry: file
nodes:
  file:
    kind: tool
    tool: create_ticket
    args: {{ queue: billing, title: \"{{{{ state.title }}}}\" }}
    into: ticket
    retry: {{ max_attempts: 2, backoff_ms: 1 }}
"
    );
    parse_graph("ticket.yaml", &yaml, &Registry::builtin(), None, 0).unwrap_or_else(|e| panic!("{e}")).graph
}

fn runtime() -> (Runtime, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (Runtime::new(store.clone(), store.clone(), Arc::new(NullSink)), store)
}

fn input() -> Map<String, Value> {
    json!({"title": "double charge"}).as_object().cloned().unwrap()
}

// The allowlist and token are process-wide, so these cases run in one test.
#[tokio::test]
async fn http_tools_call_allowed_hosts_and_report_failures() {
    unsafe {
        std::env::set_var("CG_TEST_TICKET_TOKEN", "s3cret");
        std::env::set_var("CREWGRAPH_HTTP_ALLOW", "127.0.0.1");
    }
    let (rt, store) = runtime();

    // A successful call: the body, headers and URL the backend sees; the response lands in the channel.
    let (port, seen) = backend(201, r#"{"id": 42}"#).await;
    let g = graph(port, false);
    let run = rt.start(g, input(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["ticket"], json!({"id": 42}));
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.starts_with("POST /queues/billing/tickets HTTP/1.1"), "{req}");
    let lower = req.to_lowercase();
    assert!(lower.contains("authorization: bearer s3cret"), "{req}");
    assert!(lower.contains("x-team: support"), "{req}");
    assert!(lower.contains("idempotency-key: "), "{req}");
    assert!(req.ends_with(r#"{"queue":"billing","title":"double charge"}"#), "{req}");

    // A 4xx fails the run at once, naming the tool and the status.
    let (port, seen) = backend(422, r#"{"error": "bad title"}"#).await;
    let run = rt.start(graph(port, false), input(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let msg = run.error["message"].as_str().unwrap();
    assert!(msg.contains("create_ticket") && msg.contains("422") && msg.contains("bad title"), "{msg}");
    assert_eq!(seen.lock().unwrap().len(), 1, "a client error is not retried");

    // A 503 is retried by the node's policy.
    let (port, seen) = backend(503, r#"{}"#).await;
    let run = rt.start(graph(port, false), input(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(seen.lock().unwrap().len(), 2, "retried once");

    // A host outside the allowlist is never contacted.
    unsafe { std::env::set_var("CREWGRAPH_HTTP_ALLOW", "tickets.internal") };
    let (port, seen) = backend(201, r#"{}"#).await;
    let run = rt.start(graph(port, false), input(), None, None, None).await.unwrap();
    assert!(run.error["message"].as_str().unwrap().contains("not in CREWGRAPH_HTTP_ALLOW"), "{}", run.error);
    assert!(seen.lock().unwrap().is_empty());
    unsafe { std::env::set_var("CREWGRAPH_HTTP_ALLOW", "127.0.0.1") };

    // requires_approval: the exact call is shown first; an edit changes the arguments.
    let (port, seen) = backend(201, r#"{"id": 7}"#).await;
    let g = graph(port, true);
    let run = rt.start(g.clone(), input(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    assert!(seen.lock().unwrap().is_empty(), "nothing is called before the decision");
    let pending = store.list_approvals(Some(ApprovalStatus::Pending), Some(&run.id)).await.unwrap();
    assert_eq!(
        pending[0].payload,
        json!({"tool": "create_ticket", "args": {"queue": "billing", "title": "double charge"}})
    );
    let edited = json!({"queue": "refunds", "title": "refund"});
    rt.decide(&pending[0].id, Decision { action: DecisionAction::Edit, value: Some(edited), comment: None })
        .await
        .unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert!(seen.lock().unwrap()[0].starts_with("POST /queues/refunds/tickets"));
}

#[test]
fn declarations_are_checked_with_locations() {
    let bad = "name: t\ntools:\n  x:\n    http: { method: FETCH, url: \"http://a\" }\nentry: n\nnodes:\n  n: { kind: tool, tool: x }\n";
    let e = parse_graph("t.yaml", bad, &Registry::builtin(), None, 0).err().unwrap().to_string();
    assert!(e.starts_with("t.yaml:4:") && e.contains("unknown method `FETCH`"), "{e}");
    let bad = "name: t\nentry: n\nnodes:\n  n: { kind: tool, tool: nope }\n";
    let e = parse_graph("t.yaml", bad, &Registry::builtin(), None, 0).err().unwrap().to_string();
    assert!(e.contains("unknown tool `nope`"), "{e}");
}
