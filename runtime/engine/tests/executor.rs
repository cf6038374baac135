//! Executor behaviour on the in-memory store: reducers across steps, fan-out,
//! pending writes, interrupts, goto, retries, limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crewgraph_engine::event::CollectSink;
use crewgraph_engine::graph::Condition;
use crewgraph_engine::node::FnNode;
use crewgraph_engine::*;
use serde_json::{Map, Value, json};

fn writes(v: Value) -> NodeOutput {
    NodeOutput::writes(v.as_object().cloned().unwrap_or_default())
}

fn node<F, Fut>(name: &str, f: F) -> NodeSpec
where
    F: Fn(NodeContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<NodeOutput, NodeError>> + Send + 'static,
{
    NodeSpec::new(name, Arc::new(FnNode(f)))
}

struct FieldIs(&'static str, &'static str);
impl Condition for FieldIs {
    fn eval(&self, state: &Arc<Value>) -> Result<bool, String> {
        Ok(state.get(self.0) == Some(&json!(self.1)))
    }
    fn source(&self) -> &str {
        self.0
    }
}

struct ListNode(&'static str);
#[async_trait::async_trait]
impl Node for ListNode {
    fn kind(&self) -> &str {
        "map"
    }
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        let item = ctx.input.clone().unwrap_or(Value::Null);
        if item == json!("boom") {
            return Err(NodeError::fatal("boom item"));
        }
        Ok(writes(json!({"results": [format!("done {}", item.as_str().unwrap_or(""))]})))
    }
    fn fan_out(&self, state: &Arc<Value>) -> Result<Option<Vec<Value>>, NodeError> {
        match state.get(self.0) {
            Some(Value::Array(items)) => Ok(Some(items.clone())),
            other => Err(NodeError::fatal(format!("`{}` is not a list: {other:?}", self.0))),
        }
    }
}

fn runtime() -> (Runtime, Arc<MemoryStore>, Arc<CollectSink>) {
    let store = Arc::new(MemoryStore::new());
    let sink = Arc::new(CollectSink::default());
    (Runtime::new(store.clone(), store.clone(), sink.clone()), store, sink)
}

fn linear(n: usize) -> Graph {
    let mut b = GraphBuilder::new("linear")
        .channel(ChannelSpec::new("log", Reducer::Append))
        .channel(ChannelSpec::new("count", Reducer::Sum));
    for i in 0..n {
        let name = format!("n{i}");
        let item = name.clone();
        b = b.node(node(&name, move |_| {
            let item = item.clone();
            async move { Ok(writes(json!({"log": item, "count": 1}))) }
        }));
        if i > 0 {
            b = b.edge(&format!("n{}", i - 1), &name);
        }
    }
    b.entry("n0").build().unwrap_or_else(|e| panic!("{e:?}"))
}

#[tokio::test]
async fn linear_graph_accumulates_and_checkpoints_each_step() {
    let (rt, store, sink) = runtime();
    let g = Arc::new(linear(10));
    let run = rt.create_run(&g, Map::new(), Some("t1".into()), None).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output["count"], json!(10));
    assert_eq!(run.output["log"].as_array().unwrap().len(), 10);
    let history = store.list("t1", None).await.unwrap();
    assert_eq!(history.len(), 11, "input checkpoint plus one per step");
    assert!(history.windows(2).all(|w| w[0].step > w[1].step), "newest first");
    assert_eq!(history[5].values["count"], json!(5));
    assert_eq!(sink.kinds().iter().filter(|k| *k == "checkpoint.saved").count(), 11);
    assert_eq!(sink.kinds().last().map(String::as_str), Some("run.succeeded"));
}

#[tokio::test]
async fn conditional_edges_route_on_state() {
    let (rt, _, _) = runtime();
    let g = GraphBuilder::new("route")
        .channel(ChannelSpec::new("kind", Reducer::Replace))
        .channel(ChannelSpec::new("out", Reducer::Replace))
        .node(node("classify", |_| async { Ok(writes(json!({}))) }))
        .node(node("a", |_| async { Ok(writes(json!({"out": "went a"}))) }))
        .node(node("b", |_| async { Ok(writes(json!({"out": "went b"}))) }))
        .conditional_edge("classify", "a", Arc::new(FieldIs("kind", "a")))
        .conditional_edge("classify", "b", Arc::new(FieldIs("kind", "b")))
        .entry("classify")
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let g = Arc::new(g);
    let input = json!({"kind": "b"}).as_object().cloned().unwrap();
    let run = rt.create_run(&g, input, None, None).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.output["out"], json!("went b"));
}

#[tokio::test]
async fn fan_out_reduces_every_item_and_resume_skips_saved_tasks() {
    let (rt, store, sink) = runtime();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let g = GraphBuilder::new("fan")
        .channel(ChannelSpec::new("items", Reducer::Replace))
        .channel(ChannelSpec::new("results", Reducer::Append))
        .node(NodeSpec::new("each", Arc::new(ListNode("items"))))
        .node(node("sum", move |ctx| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Ok(writes(json!({"items": ctx.state["results"].as_array().map(|a| a.len())}))) }
        }))
        .edge("each", "sum")
        .entry("each")
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let g = Arc::new(g);
    let input = json!({"items": ["a", "boom", "c"]}).as_object().cloned().unwrap();
    let run = rt.create_run(&g, input, Some("fan".into()), None).await.unwrap();
    let run = rt.execute(g.clone(), &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error["node"], json!("each"));
    let latest = store.get("fan", None).await.unwrap().unwrap();
    let saved = store.get_writes("fan", latest.id).await.unwrap();
    assert_eq!(saved.len(), 2, "the two tasks that finished saved their writes");

    // Fix the bad item in place of the failing task's input and resume: only it re-runs.
    let before = sink.kinds().iter().filter(|k| *k == "node.started").count();
    let mut fixed = latest.clone();
    fixed.next[1].input = Some(json!("b"));
    store.put(&fixed, &[]).await.unwrap();
    for r in &saved {
        store.put_writes("fan", fixed.id, r).await.unwrap();
    }
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let started_after = sink.kinds().iter().filter(|k| *k == "node.started").count() - before;
    assert_eq!(started_after, 2, "the fixed fan-out task and `sum`, nothing else");
    assert_eq!(run.output["results"], json!(["done a", "done b", "done c"]), "reduced in task order");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_replace_writers_in_one_step_fail_with_both_names() {
    let (rt, _, _) = runtime();
    let g = GraphBuilder::new("conflict")
        .channel(ChannelSpec::new("x", Reducer::Replace))
        .node(node("start", |_| async { Ok(writes(json!({}))) }))
        .node(node("left", |_| async { Ok(writes(json!({"x": 1}))) }))
        .node(node("right", |_| async { Ok(writes(json!({"x": 2}))) }))
        .edge("start", "left")
        .edge("start", "right")
        .entry("start")
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let g = Arc::new(g);
    let run = rt.create_run(&g, Map::new(), None, None).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let msg = run.error["message"].as_str().unwrap();
    assert!(msg.contains("`left` and `right`") && msg.contains("`x`"), "{msg}");
}

#[tokio::test]
async fn fan_out_over_a_non_list_is_a_clear_error() {
    let (rt, _, _) = runtime();
    let g = GraphBuilder::new("bad-fan")
        .channel(ChannelSpec::new("items", Reducer::Replace))
        .channel(ChannelSpec::new("results", Reducer::Append))
        .node(NodeSpec::new("each", Arc::new(ListNode("items"))))
        .entry("each")
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let g = Arc::new(g);
    let input = json!({"items": "not a list"}).as_object().cloned().unwrap();
    let run = rt.create_run(&g, input, None, None).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error["node"], json!("each"));
    let msg = run.error["message"].as_str().unwrap();
    assert!(msg.contains("fan-out of `each`") && msg.contains("not a list"), "{msg}");
}

fn approval_graph() -> Graph {
    GraphBuilder::new("approve")
        .channel(ChannelSpec::new("decision", Reducer::Replace))
        .channel(ChannelSpec::new("published", Reducer::Replace))
        .node(node("review", |ctx| async move {
            match ctx.resume {
                None => Ok(NodeOutput::Interrupt {
                    payload: json!({"draft": "hello"}),
                    actions: vec!["approve".into(), "reject".into()],
                    expires_in_s: None,
                    on_expiry: None,
                }),
                Some(d) => Ok(writes(json!({"decision": d["action"]}))),
            }
        }))
        .node(node("publish", |ctx| async move {
            Ok(writes(json!({"published": ctx.state["decision"] == json!("approve")})))
        }))
        .edge("review", "publish")
        .entry("review")
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"))
}

#[tokio::test]
async fn approval_waits_then_resumes_with_the_decision_once() {
    let (rt, store, sink) = runtime();
    let g = Arc::new(approval_graph());
    let run = rt.create_run(&g, Map::new(), None, None).await.unwrap();
    let run = rt.execute(g.clone(), &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    let approvals = store.list_approvals(Some(ApprovalStatus::Pending), Some(&run.id)).await.unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].payload, json!({"draft": "hello"}));

    // Executing again without a decision stays waiting and does not duplicate the approval.
    let again = rt.execute(g.clone(), &run.id, None).await.unwrap();
    assert_eq!(again.status, RunStatus::Waiting);
    assert_eq!(store.list_approvals(None, Some(&run.id)).await.unwrap().len(), 1);

    let decision = Decision { action: DecisionAction::Approve, value: None, comment: None };
    rt.decide(&approvals[0].id, decision.clone()).await.unwrap();
    let second = rt.decide(&approvals[0].id, decision).await.unwrap_err();
    assert!(matches!(second, EngineError::AlreadyDecided { .. }), "{second}");
    let bad = rt.decide(&approvals[0].id, Decision { action: DecisionAction::Edit, value: None, comment: None }).await;
    assert!(bad.is_err());

    let done = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output["published"], json!(true));
    assert_eq!(sink.kinds().iter().filter(|k| *k == "approval.requested").count(), 1);
}

#[tokio::test]
async fn interrupt_before_and_after_pause_the_run() {
    let (rt, store, _) = runtime();
    let mut a = node("a", |_| async { Ok(writes(json!({"x": "a"}))) });
    a.interrupt_after = true;
    let mut b = node("b", |ctx| async move { Ok(writes(json!({"y": format!("b saw {}", ctx.state["x"])}))) });
    b.interrupt_before = true;
    let g = GraphBuilder::new("hitl")
        .channel(ChannelSpec::new("x", Reducer::Replace))
        .channel(ChannelSpec::new("y", Reducer::Replace))
        .node(a)
        .node(b)
        .edge("a", "b")
        .entry("a")
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let g = Arc::new(g);
    let run = rt.create_run(&g, Map::new(), None, None).await.unwrap();
    let run = rt.execute(g.clone(), &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    let after = store.list_approvals(Some(ApprovalStatus::Pending), Some(&run.id)).await.unwrap();
    assert_eq!(after[0].node, "a");
    rt.decide(
        &after[0].id,
        Decision { action: DecisionAction::Edit, value: Some(json!({"x": "edited"})), comment: None },
    )
    .await
    .unwrap();
    let run = rt.execute(g.clone(), &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting, "now before `b`");
    let before = store.list_approvals(Some(ApprovalStatus::Pending), Some(&run.id)).await.unwrap();
    assert_eq!(before[0].node, "b");
    rt.decide(&before[0].id, Decision { action: DecisionAction::Approve, value: None, comment: None }).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output["y"], json!("b saw \"edited\""));
}

#[tokio::test]
async fn goto_overrides_edges_and_max_steps_stops_loops() {
    let (rt, _, _) = runtime();
    let mut spin = node("spin", |_| async {
        Ok(NodeOutput::Writes {
            writes: json!({"n": 1}).as_object().cloned().unwrap(),
            goto: Some(vec!["spin".into()]),
        })
    });
    spin.may_goto = vec!["spin".into()];
    let g = GraphBuilder::new("spin")
        .channel(ChannelSpec::new("n", Reducer::Sum))
        .node(spin)
        .entry("spin")
        .limits(Limits { max_steps: 5, deadline: None })
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let g = Arc::new(g);
    let run = rt.create_run(&g, Map::new(), None, None).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error["message"].as_str().unwrap().contains("max_steps (5)"));
}

#[tokio::test]
async fn retries_transient_errors_and_times_out_slow_nodes() {
    let (rt, _, sink) = runtime();
    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let mut flaky = node("flaky", move |_| {
        let n = t.fetch_add(1, Ordering::SeqCst);
        async move { if n < 2 { Err(NodeError::transient("503")) } else { Ok(writes(json!({"ok": true}))) } }
    });
    flaky.retry = RetryPolicy { max_attempts: 3, initial_backoff_ms: 1, jitter: true, ..Default::default() };
    let mut slow = node("slow", |_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(writes(json!({})))
    });
    slow.timeout = Some(Duration::from_millis(20));
    let g = GraphBuilder::new("flaky")
        .channel(ChannelSpec::new("ok", Reducer::Replace))
        .node(flaky)
        .node(slow)
        .edge("flaky", "slow")
        .entry("flaky")
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let g = Arc::new(g);
    let run = rt.create_run(&g, Map::new(), None, None).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    assert_eq!(sink.kinds().iter().filter(|k| *k == "node.retry").count(), 2);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error["node"], json!("slow"));
    assert!(run.error["message"].as_str().unwrap().contains("timed out"));
}

#[tokio::test]
async fn fork_with_patch_diverges_from_the_original() {
    let (rt, store, _) = runtime();
    let g = GraphBuilder::new("fork")
        .channel(ChannelSpec::new("topic", Reducer::Replace))
        .channel(ChannelSpec::new("log", Reducer::Append))
        .node(node("a", |_| async { Ok(writes(json!({"log": "a"}))) }))
        .node(node("b", |ctx| async move {
            Ok(writes(json!({"log": format!("b:{}", ctx.state["topic"].as_str().unwrap_or(""))})))
        }))
        .edge("a", "b")
        .entry("a")
        .build()
        .unwrap_or_else(|e| panic!("{e:?}"));
    let g = Arc::new(g);
    let input = json!({"topic": "cats"}).as_object().cloned().unwrap();
    let run = rt.create_run(&g, input, Some("orig".into()), None).await.unwrap();
    rt.execute(g.clone(), &run.id, None).await.unwrap();
    let history = store.list("orig", None).await.unwrap();
    let middle = history.iter().find(|c| c.step == 1).unwrap();
    let patch = json!({"topic": "dogs"}).as_object().cloned().unwrap();
    let forked = rt.fork(g.clone(), "orig", middle.id, patch, None).await.unwrap();
    let done = rt.execute(g, &forked.id, None).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(done.output["log"], json!(["a", "b:dogs"]));
    let orig = store.get("orig", None).await.unwrap().unwrap();
    assert_eq!(orig.values["log"], json!(["a", "b:cats"]));
}

#[test]
fn structure_checks_find_unknown_unreachable_and_endless_cycles() {
    let noop = || node("x", |_| async { Ok(writes(json!({}))) });
    let named = |n: &str| NodeSpec { name: n.into(), ..noop() };
    let errs = GraphBuilder::new("bad")
        .node(named("a"))
        .node(named("b"))
        .node(named("c"))
        .node(named("lonely"))
        .edge("a", "b")
        .edge("b", "c")
        .edge("c", "b")
        .edge("a", "ghost")
        .edge("END", "a")
        .entry("a")
        .build()
        .err()
        .unwrap();
    let text: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
    assert!(text.iter().any(|m| m.contains("unknown node `ghost`")), "{text:?}");
    assert!(text.iter().any(|m| m.contains("edge from `END`")), "{text:?}");
    let errs = GraphBuilder::new("bad")
        .node(named("a"))
        .node(named("b"))
        .node(named("c"))
        .node(named("lonely"))
        .edge("a", "b")
        .edge("b", "c")
        .edge("c", "b")
        .entry("a")
        .build()
        .err()
        .unwrap();
    let text: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
    assert!(text.iter().any(|m| m.contains("`lonely` is unreachable")), "{text:?}");
    assert!(text.iter().any(|m| m.contains("cycle b -> c has no exit condition")), "{text:?}");
    let _ = HashMap::<String, String>::new();
}
