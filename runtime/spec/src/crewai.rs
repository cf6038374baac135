//! CrewAI's own project format: a folder with `config/agents.yaml` and
//! `config/tasks.yaml`, loaded as a crew (`crewgraph run path/to/folder`).
//! The fields CrewAI documents are accepted; those that do nothing here are
//! warnings with their location; anything else is an error, as in crew files.
//! Models come from the environment as in CrewAI (`OPENAI_MODEL_NAME` or an
//! agent's `llm:`, on `OPENAI_BASE_URL`); tasks run in order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::crew::{Dialect, Parts, assemble, read_agent, read_task};
use crate::error::{SpecError, SpecErrors};
use crate::graph_file::GraphDef;
use crate::yaml::{self, Loc};

/// Whether `dir` looks like a CrewAI project.
pub fn is_project(dir: &Path) -> bool {
    dir.join("config/agents.yaml").is_file() && dir.join("config/tasks.yaml").is_file()
}

pub fn load_project(dir: &Path) -> Result<GraphDef, SpecErrors> {
    let read = |name: &str| {
        let path = dir.join("config").join(name);
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| SpecError::at(&file, Loc { line: 1, column: 1 }, format!("cannot read: {e}")))?;
        Ok::<_, SpecError>((file.clone(), yaml::parse(&file, &text)?))
    };
    let (agents_file, agents_yaml) = read("agents.yaml")?;
    let (tasks_file, tasks_yaml) = read("tasks.yaml")?;
    let mut warnings = Vec::new();
    let models = crate::models::Models::new();
    let tools = BTreeMap::new();

    let mut agents = BTreeMap::new();
    let entries = agents_yaml
        .entries()
        .ok_or_else(|| SpecError::at(&agents_file, agents_yaml.loc, "expected a mapping of agent name to agent"))?;
    for (k, v) in entries {
        agents.insert(
            k.name.clone(),
            read_agent(&agents_file, &k.name, v, &models, &tools, Dialect::CrewAi, &mut warnings)?,
        );
    }
    let mut tasks = Vec::new();
    let entries = tasks_yaml
        .entries()
        .ok_or_else(|| SpecError::at(&tasks_file, tasks_yaml.loc, "expected a mapping of task name to task"))?;
    for (k, v) in entries {
        tasks.push(read_task(&tasks_file, &k.name, k.loc, v, Dialect::CrewAi, &mut warnings)?);
    }
    if tasks.is_empty() {
        return Err(SpecError::at(&tasks_file, tasks_yaml.loc, "the project has no tasks").into());
    }
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "crew".into());
    let parts = Parts {
        name,
        description: None,
        inputs: BTreeSet::new(),
        typed_inputs: vec![],
        agents,
        tasks,
        tools,
        warnings,
        manager: None,
        memory: false,
        knowledge: vec![],
        handle: crewgraph_memory::MemoryHandle::from_env(),
    };
    assemble(&tasks_file, Loc { line: 1, column: 1 }, parts)
}
