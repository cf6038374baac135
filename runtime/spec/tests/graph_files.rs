//! Graph files: the examples compile, and every kind of mistake is reported
//! with file, line and column.

use std::path::PathBuf;

use crewgraph_spec::{Catalog, Registry, parse_graph};

fn graphs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../graphs")
}

fn errors(text: &str) -> Vec<String> {
    match parse_graph("bad.yaml", text, &Registry::builtin(), None, 0) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn example_graphs_compile() {
    let catalog = Catalog::scan(&[graphs_dir()]);
    let names: Vec<&str> = catalog.names().collect();
    for name in ["review-publish", "triage", "research-digest", "summarize-topic"] {
        assert!(names.contains(&name), "{name} in {names:?}");
        let def = catalog.load(name, &Registry::builtin()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(def.graph.name, name);
    }
}

#[test]
fn malformed_yaml_names_file_line_and_column() {
    let e = errors("name: x\nentry: a\nnodes:\n  a: {kind: set\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("bad.yaml:"), "{e:?}");
    assert!(e[0].contains("invalid YAML"), "{e:?}");
}

#[test]
fn condition_on_a_missing_channel_points_at_the_when() {
    let e = errors(
        "name: x\nstate:\n  review: {}\nentry: a\nnodes:\n  a: {kind: set}\n  b: {kind: set}\nedges:\n  - from: a\n    to: b\n    when: \"state.reveiw.action == 'ok'\"\n",
    );
    assert_eq!(
        e,
        vec![
            "bad.yaml:11:11: condition `state.reveiw.action == 'ok'` references `state.reveiw`, but the state has no channel `reveiw` (channels: review)"
        ]
    );
}

#[test]
fn unknown_keys_kinds_and_nodes_are_located() {
    let e = errors("name: x\nentry: a\nnodes:\n  a:\n    kind: set\n    valeus: {}\n");
    assert!(e[0].starts_with("bad.yaml:6:5: node `a`: unknown key `valeus`"), "{e:?}");

    let e = errors("name: x\nentry: a\nnodes:\n  a:\n    kind: sett\n");
    assert!(e[0].starts_with("bad.yaml:5:11: unknown node kind `sett`"), "{e:?}");

    let e = errors("name: x\nentry: a\nnodes:\n  a: {kind: set}\nedges:\n  - {from: a, to: ghost}\n");
    assert_eq!(e, vec!["bad.yaml:6:5: edge to unknown node `ghost`"]);

    let e = errors("name: x\nentry: a\nnodes:\n  a: {kind: set}\n  b: {kind: set}\n");
    assert_eq!(e, vec!["bad.yaml:5:3: node `b` is unreachable from the entry"]);

    let e = errors(
        "name: x\nentry: a\nnodes:\n  a: {kind: set}\n  b: {kind: set}\nedges:\n  - {from: a, to: b}\n  - {from: b, to: a}\n",
    );
    assert!(e[0].starts_with("bad.yaml:7:5: cycle a -> b has no exit condition"), "{e:?}");

    let e = errors("name: x\nstate:\n  n: {reducer: average}\nentry: a\nnodes:\n  a: {kind: set}\n");
    assert!(e[0].starts_with("bad.yaml:3:16: unknown reducer `average`"), "{e:?}");

    let e = errors("name: x\nentry: a\nnodes:\n  a:\n    kind: set\n    values: { nope: 1 }\n");
    assert!(e[0].starts_with("bad.yaml:6:15: `values` writes unknown channel `nope`"), "{e:?}");

    let e = errors("name: x\nentry: a\nnodes:\n  a:\n    kind: map\n    over: state.items\n    node: {kind: set}\n");
    assert!(e[0].contains("no channel `items`"), "{e:?}");
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let e = errors("name: x\nentry: a\nnodes:\n  a: {kind: nope}\n  b: {kind: set, extra: 1}\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("bad.yaml:4:"));
    assert!(e[1].starts_with("bad.yaml:5:"));
}

#[test]
fn diagrams_show_nodes_and_conditions() {
    let catalog = Catalog::scan(&[graphs_dir()]);
    let def = catalog.load("review-publish", &Registry::builtin()).unwrap();
    let m = crewgraph_spec::diagram::mermaid(&def.graph);
    assert!(m.starts_with("flowchart TD"));
    assert!(m.contains("review -.->|\"state.review.action == 'reject'\"| draft"), "{m}");
    let d = crewgraph_spec::diagram::dot(&def.graph);
    assert!(d.contains("\"review\" [shape=diamond"), "{d}");
}
