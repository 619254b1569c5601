//! Workflows: dependency graphs of commands.
//!
//! A [`Workflow`] names steps, each a command, and the steps each one depends on.
//! [`Orch::start_workflow`](crate::Orch::start_workflow) stores every step in one
//! transaction: steps without dependencies are pending at once, the others blocked.
//! When a step succeeds, the store makes pending, in the same transaction, each
//! dependent whose dependencies have now all succeeded; independent steps run
//! concurrently on whatever workers serve them. When a step fails for good or is
//! cancelled, its transitive dependents are cancelled and the workflow ends failed.
//! A step's handler reads its dependencies' outputs with
//! [`Context::dependency_output`](crate::Context::dependency_output).
//!
//! ```
//! use orch::{Command, NewCommand, Workflow};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct ChargeCommand { order: u64 }
//! # impl Command for ChargeCommand { type Output = u64; }
//! # #[derive(serde::Serialize, serde::Deserialize)] struct RecordSaleCommand { order: u64 }
//! # impl Command for RecordSaleCommand { type Output = (); }
//!
//! let workflow = Workflow::builder()
//!     .step("payments", NewCommand::of(&ChargeCommand { order: 7 }))
//!     .step_after("analytics", NewCommand::of(&RecordSaleCommand { order: 7 }), ["payments"])
//!     .build()?;
//! assert_eq!(workflow.steps().count(), 2);
//! # Ok::<(), orch::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::command::NewCommand;
use crate::error::{Error, Result};
use crate::store::{CommandId, State, StepOf, WorkflowId, WorkflowStepRecord};

/// Why a workflow was rejected when it was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The workflow has no steps.
    #[error("a workflow needs at least one step")]
    Empty,
    /// Two steps share a name.
    #[error("two steps are named `{0}`; step names must be unique")]
    DuplicateStep(String),
    /// A step depends on a step the workflow does not have.
    #[error("step `{step}` depends on `{dependency}`, which is not a step of this workflow")]
    UnknownDependency {
        /// The step.
        step: String,
        /// The missing dependency.
        dependency: String,
    },
    /// A step lists the same dependency twice.
    #[error("step `{step}` lists `{dependency}` twice")]
    DuplicateDependency {
        /// The step.
        step: String,
        /// The repeated dependency.
        dependency: String,
    },
    /// The dependencies form a cycle (listed in order, first step repeated last).
    #[error("the dependencies form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A step names an empty string.
    #[error("step names must not be empty")]
    EmptyName,
}

/// A validated dependency graph of commands, ready to start.
#[derive(Debug)]
pub struct Workflow {
    steps: Vec<StepSpec>,
}

#[derive(Debug)]
struct StepSpec {
    name: String,
    command: NewCommand,
    depends_on: Vec<String>,
}

/// Declares a workflow's steps; see [`Workflow::builder`].
#[derive(Debug, Default)]
pub struct WorkflowBuilder {
    steps: Vec<StepSpec>,
}

impl WorkflowBuilder {
    /// A step with no dependencies: it is due as soon as the workflow starts.
    pub fn step(self, name: impl Into<String>, command: NewCommand) -> Self {
        self.step_after(name, command, std::iter::empty::<String>())
    }

    /// A step that runs only after every step in `depends_on` has succeeded.
    pub fn step_after<I, S>(mut self, name: impl Into<String>, command: NewCommand, depends_on: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.steps.push(StepSpec {
            name: name.into(),
            command,
            depends_on: depends_on.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Checks the graph: at least one step, unique non-empty names, dependencies that
    /// exist, no cycles. Errors are [`Error::InvalidWorkflow`].
    pub fn build(self) -> Result<Workflow> {
        let fail = |e: WorkflowError| Err(Error::InvalidWorkflow(e));
        if self.steps.is_empty() {
            return fail(WorkflowError::Empty);
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            if step.name.is_empty() {
                return fail(WorkflowError::EmptyName);
            }
            if index.insert(step.name.as_str(), i).is_some() {
                return fail(WorkflowError::DuplicateStep(step.name.clone()));
            }
        }
        for step in &self.steps {
            for (i, dependency) in step.depends_on.iter().enumerate() {
                if step.depends_on[..i].contains(dependency) {
                    return fail(WorkflowError::DuplicateDependency {
                        step: step.name.clone(),
                        dependency: dependency.clone(),
                    });
                }
                if !index.contains_key(dependency.as_str()) {
                    return fail(WorkflowError::UnknownDependency {
                        step: step.name.clone(),
                        dependency: dependency.clone(),
                    });
                }
            }
        }
        if let Some(cycle) = find_cycle(&self.steps, &index) {
            return fail(WorkflowError::Cycle(cycle));
        }
        Ok(Workflow { steps: self.steps })
    }
}

/// A cycle in the graph, as step names with the first repeated last, if there is one.
fn find_cycle(steps: &[StepSpec], index: &HashMap<&str, usize>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        i: usize,
        steps: &[StepSpec],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        marks[i] = Mark::OnPath;
        path.push(i);
        for dependency in &steps[i].depends_on {
            let j = index[dependency.as_str()];
            match marks[j] {
                Mark::OnPath => {
                    let start = path.iter().position(|&p| p == j).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|&p| steps[p].name.clone()).collect();
                    cycle.push(steps[j].name.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(j, steps, index, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; steps.len()];
    for i in 0..steps.len() {
        if marks[i] == Mark::New
            && let Some(cycle) = visit(i, steps, index, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

impl Workflow {
    /// Declares a workflow step by step.
    pub fn builder() -> WorkflowBuilder {
        WorkflowBuilder::default()
    }

    /// The steps' names with the names they depend on, in declaration order.
    pub fn steps(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.steps.iter().map(|s| (s.name.as_str(), s.depends_on.as_slice()))
    }

    /// The rows to insert for this workflow started at `now` under `workflow_id`.
    pub(crate) fn into_rows(
        self,
        workflow_id: WorkflowId,
        now: crate::Timestamp,
    ) -> Result<Vec<crate::store::InsertCommand>> {
        let ids: HashMap<String, CommandId> = self
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.command.preset_id().unwrap_or_else(|| CommandId::generate(now))))
            .collect();
        let correlation = workflow_id.to_string();
        self.steps
            .into_iter()
            .map(|spec| {
                let id = ids[&spec.name];
                let mut command = spec.command.id(id);
                if command.preset_correlation_id().is_none() {
                    command = command.correlation_id(correlation.clone());
                }
                command.check_no_unique_key("in a workflow")?;
                let mut row = command.into_insert(now, None)?;
                row.depends_on = spec.depends_on.iter().map(|d| ids[d]).collect();
                row.workflow = Some(StepOf { workflow_id, step: spec.name });
                Ok(row)
            })
            .collect()
    }
}

/// Where a workflow stands, derived from its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowState {
    /// Some step has not finished.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// Every step finished, and some failed or were cancelled.
    Failed,
}

impl fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
        })
    }
}

/// One step of a stored workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStatus {
    /// The step's name.
    pub name: String,
    /// Its command.
    pub command_id: CommandId,
    /// Its command's state.
    pub state: State,
    /// The names of the steps it depends on.
    pub depends_on: Vec<String>,
}

/// A stored workflow: its state and its steps (in start order).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowStatus {
    /// The workflow.
    pub id: WorkflowId,
    /// Running until every step finished; then succeeded or failed.
    pub state: WorkflowState,
    /// The steps, by command id.
    pub steps: Vec<StepStatus>,
}

impl WorkflowStatus {
    /// The status of workflow `id` from its stored steps; `None` when there are none.
    pub fn from_steps(id: WorkflowId, records: &[WorkflowStepRecord]) -> Option<Self> {
        if records.is_empty() {
            return None;
        }
        let names: BTreeMap<CommandId, &str> = records
            .iter()
            .filter_map(|r| r.command.workflow.as_ref().map(|w| (r.command.id, w.step.as_str())))
            .collect();
        let steps: Vec<StepStatus> = records
            .iter()
            .map(|r| StepStatus {
                name: names.get(&r.command.id).map_or_else(|| r.command.id.to_string(), |n| (*n).to_owned()),
                command_id: r.command.id,
                state: r.command.state,
                depends_on: r
                    .depends_on
                    .iter()
                    .map(|d| names.get(d).map_or_else(|| d.to_string(), |n| (*n).to_owned()))
                    .collect(),
            })
            .collect();
        let state = if steps.iter().any(|s| !s.state.is_terminal()) {
            WorkflowState::Running
        } else if steps.iter().all(|s| s.state == State::Succeeded) {
            WorkflowState::Succeeded
        } else {
            WorkflowState::Failed
        };
        Some(WorkflowStatus { id, state, steps })
    }

    /// The step with this name.
    pub fn step(&self, name: &str) -> Option<&StepStatus> {
        self.steps.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(n: u32) -> NewCommand {
        NewCommand::raw("job", serde_json::json!({ "n": n }))
    }

    fn rejection(builder: WorkflowBuilder) -> WorkflowError {
        match builder.build() {
            Err(Error::InvalidWorkflow(e)) => e,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn builder_rejects_bad_graphs() {
        assert_eq!(rejection(Workflow::builder()), WorkflowError::Empty);
        assert_eq!(
            rejection(Workflow::builder().step("a", cmd(1)).step("a", cmd(2))),
            WorkflowError::DuplicateStep("a".into())
        );
        assert_eq!(
            rejection(Workflow::builder().step("a", cmd(1)).step_after("b", cmd(2), ["c"])),
            WorkflowError::UnknownDependency { step: "b".into(), dependency: "c".into() }
        );
        assert_eq!(rejection(Workflow::builder().step("", cmd(1))), WorkflowError::EmptyName);
        assert_eq!(
            rejection(Workflow::builder().step("a", cmd(1)).step_after("b", cmd(2), ["a", "a"])),
            WorkflowError::DuplicateDependency { step: "b".into(), dependency: "a".into() }
        );
        let cycle = rejection(
            Workflow::builder()
                .step("root", cmd(0))
                .step_after("a", cmd(1), ["root", "c"])
                .step_after("b", cmd(2), ["a"])
                .step_after("c", cmd(3), ["b"]),
        );
        let WorkflowError::Cycle(names) = cycle else { panic!("expected a cycle, got {cycle:?}") };
        assert_eq!(names.first(), names.last());
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(
            rejection(Workflow::builder().step_after("self", cmd(1), ["self"])),
            WorkflowError::Cycle(vec!["self".into(), "self".into()])
        );
    }

    #[test]
    fn rows_carry_steps_and_edges() {
        let workflow = Workflow::builder()
            .step("a", cmd(1))
            .step_after("b", cmd(2), ["a"])
            .step_after("c", cmd(3), ["a"])
            .step_after("d", cmd(4), ["b", "c"])
            .build()
            .unwrap();
        let now = crate::Timestamp::from_millis(1_000);
        let id = WorkflowId::generate(now);
        let rows = workflow.into_rows(id, now).unwrap();
        let by_step: HashMap<&str, &crate::store::InsertCommand> =
            rows.iter().map(|r| (r.workflow.as_ref().unwrap().step.as_str(), r)).collect();
        assert!(by_step["a"].depends_on.is_empty());
        assert_eq!(by_step["d"].depends_on, vec![by_step["b"].id, by_step["c"].id]);
        assert!(rows.iter().all(|r| r.correlation_id == id.to_string()));
        assert!(rows.iter().all(|r| r.workflow.as_ref().unwrap().workflow_id == id));
    }
}
