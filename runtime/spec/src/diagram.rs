//! Diagrams of a graph: Mermaid flowcharts and Graphviz DOT.

use std::fmt::Write;

use crewgraph_engine::{END, Graph};

fn label(g: &Graph, name: &str) -> String {
    let node = g.node(name);
    let kind = node.map(|n| n.node.kind()).unwrap_or("end");
    let mut flags = String::new();
    if node.is_some_and(|n| n.interrupt_before) {
        flags.push_str(" ⏸before");
    }
    if node.is_some_and(|n| n.interrupt_after) {
        flags.push_str(" ⏸after");
    }
    format!("{name} ({kind}){flags}")
}

fn esc(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// A Mermaid flowchart; conditional edges carry their condition as label.
pub fn mermaid(g: &Graph) -> String {
    let mut out = String::from("flowchart TD\n    __start__([start])\n");
    for n in &g.nodes {
        let shape = if n.node.kind() == "approval" { ("{{", "}}") } else { ("[", "]") };
        let _ = writeln!(out, "    {}{}\"{}\"{}", n.name, shape.0, esc(&label(g, &n.name)), shape.1);
    }
    let _ = writeln!(out, "    {END}([end])");
    for e in &g.entry {
        let _ = writeln!(out, "    __start__ --> {e}");
    }
    for e in &g.edges {
        match &e.condition {
            Some(c) => {
                let _ = writeln!(out, "    {} -.->|\"{}\"| {}", e.from, esc(c.source()), e.to);
            }
            None => {
                let _ = writeln!(out, "    {} --> {}", e.from, e.to);
            }
        }
    }
    for n in &g.nodes {
        if g.edges_from(&n.name).next().is_none() && n.may_goto.is_empty() {
            let _ = writeln!(out, "    {} --> {END}", n.name);
        }
        for t in &n.may_goto {
            let _ = writeln!(out, "    {} -. goto .-> {t}", n.name);
        }
    }
    out
}

/// A Graphviz DOT digraph.
pub fn dot(g: &Graph) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n    rankdir=TB;\n    __start__ [shape=circle label=start];\n", q(&g.name));
    for n in &g.nodes {
        let shape = if n.node.kind() == "approval" { "diamond" } else { "box" };
        let _ = writeln!(out, "    {} [shape={shape} label={}];", q(&n.name), q(&label(g, &n.name)));
    }
    let _ = writeln!(out, "    {END} [shape=doublecircle label=end];");
    for e in &g.entry {
        let _ = writeln!(out, "    __start__ -> {};", q(e));
    }
    for e in &g.edges {
        match &e.condition {
            Some(c) => {
                let _ = writeln!(out, "    {} -> {} [style=dashed label={}];", q(&e.from), q(&e.to), q(c.source()));
            }
            None => {
                let _ = writeln!(out, "    {} -> {};", q(&e.from), q(&e.to));
            }
        }
    }
    for n in &g.nodes {
        if g.edges_from(&n.name).next().is_none() && n.may_goto.is_empty() {
            let _ = writeln!(out, "    {} -> {END};", q(&n.name));
        }
    }
    out.push_str("}\n");
    out
}
