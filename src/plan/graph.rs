//! The dependency graph of a plan (petgraph): nodes are the things changes happen to (module
//! loading, IOMMU groups, SR-IOV physical functions, VFs that do not exist yet, domains), edges
//! say "must be done before". Owns the topological order and the batching: a node's batch is
//! one more than the latest batch it depends on, so the nodes of one batch are independent and
//! their steps may run in parallel (the steps inside one node run in order).

use std::collections::HashMap;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::pci::PciAddress;

use super::action::{Action, Step, Unit};
use super::problem::{Problem, ProblemKind};

/// A node of the dependency graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// Loading missing driver modules.
    Modules,
    /// An IOMMU group: its members' drivers and overrides, and its node.
    Group(u32),
    /// The VF count of a physical function.
    Pf(PciAddress),
    /// A VF the plan creates; its group is pending until it exists.
    Vf(PciAddress),
    /// A `[[domain]]`: opened after its member groups are bound (by `watch`).
    Domain(String),
}

impl Node {
    fn unit(&self) -> Option<Unit> {
        match self {
            Node::Modules => Some(Unit::Modules),
            Node::Group(g) => Some(Unit::Group { group: *g }),
            Node::Pf(pf) => Some(Unit::Sriov { pf: *pf }),
            Node::Vf(a) => Some(Unit::Pending { device: *a }),
            Node::Domain(_) => None,
        }
    }
}

/// The graph being built: nodes, their ordered steps, and "before" edges.
#[derive(Debug, Default)]
pub struct Graph {
    graph: DiGraph<Node, ()>,
    index: HashMap<Node, NodeIndex>,
    steps: HashMap<NodeIndex, Vec<(Action, String)>>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    fn node(&mut self, n: Node) -> NodeIndex {
        if let Some(i) = self.index.get(&n) {
            return *i;
        }
        let i = self.graph.add_node(n.clone());
        self.index.insert(n, i);
        i
    }

    /// Appends steps to run, in this order, at `node`.
    pub fn push(&mut self, node: Node, action: Action, reason: impl Into<String>) {
        let i = self.node(node);
        self.steps
            .entry(i)
            .or_default()
            .push((action, reason.into()));
    }

    /// Records that everything at `before` runs before anything at `after`.
    pub fn edge(&mut self, before: Node, after: Node) {
        let a = self.node(before);
        let b = self.node(after);
        if a != b && self.graph.find_edge(a, b).is_none() {
            self.graph.add_edge(a, b, ());
        }
    }

    /// Whether any step is planned at `node`.
    pub fn has_steps(&self, node: &Node) -> bool {
        self.index
            .get(node)
            .and_then(|i| self.steps.get(i))
            .is_some_and(|s| !s.is_empty())
    }

    /// The plan's steps in topological order, with batches numbered from 1.
    pub fn order(mut self) -> Result<Vec<Step>, Problem> {
        let order = toposort(&self.graph, None).map_err(|c| {
            Problem::new(
                ProblemKind::Cycle,
                format!(
                    "the plan's dependency graph has a cycle through {:?}; this is a vfioctl \
                     bug, please report it with the snapshot and config",
                    self.graph[c.node_id()]
                ),
            )
        })?;
        // level[n]: number of step-carrying nodes on the longest path into n (excluding n).
        let mut level: HashMap<NodeIndex, usize> = HashMap::with_capacity(order.len());
        for &n in &order {
            let l = self
                .graph
                .neighbors_directed(n, Direction::Incoming)
                .map(|p| level[&p] + usize::from(self.steps.contains_key(&p)))
                .max()
                .unwrap_or(0);
            level.insert(n, l);
        }
        // Number only the levels that carry steps, so batches are 1..=k without gaps.
        let mut used: Vec<usize> = self.steps.keys().map(|n| level[n]).collect();
        used.sort_unstable();
        used.dedup();
        let mut out: Vec<(usize, Unit, usize, Step)> = Vec::new();
        for (n, steps) in self.steps.drain() {
            let Some(unit) = self.graph[n].unit() else {
                continue;
            };
            let batch = used.partition_point(|l| *l < level[&n]) + 1;
            for (seq, (action, reason)) in steps.into_iter().enumerate() {
                out.push((
                    batch,
                    unit.clone(),
                    seq,
                    Step {
                        action,
                        batch,
                        unit: unit.clone(),
                        reason,
                    },
                ));
            }
        }
        out.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        Ok(out.into_iter().map(|(_, _, _, s)| s).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(a: &str) -> Action {
        Action::Bind {
            device: a.parse().unwrap(),
            driver: "vfio-pci".into(),
        }
    }

    #[test]
    fn independent_groups_share_a_batch_and_dependents_follow() {
        let mut g = Graph::new();
        g.push(Node::Group(2), bind("0000:02:00.0"), "a");
        g.push(Node::Group(1), bind("0000:01:00.0"), "b");
        g.push(
            Node::Modules,
            Action::LoadModule {
                module: "vfio_pci".into(),
                driver: "vfio-pci".into(),
            },
            "m",
        );
        g.edge(Node::Modules, Node::Group(1));
        g.edge(Node::Modules, Node::Group(2));
        let pf: PciAddress = "0000:05:00.0".parse().unwrap();
        let vf: PciAddress = "0000:05:10.0".parse().unwrap();
        g.push(
            Node::Pf(pf),
            Action::SetNumVfs {
                device: pf,
                from: 0,
                to: 1,
            },
            "s",
        );
        g.push(Node::Vf(vf), bind("0000:05:10.0"), "v");
        g.edge(Node::Pf(pf), Node::Vf(vf));
        g.edge(Node::Modules, Node::Vf(vf));
        // A domain without steps does not take a batch of its own.
        g.edge(Node::Group(1), Node::Domain("d".into()));
        let steps = g.order().unwrap();
        let batches: Vec<(usize, String)> = steps
            .iter()
            .map(|s| (s.batch, s.unit.to_string()))
            .collect();
        assert_eq!(
            batches,
            vec![
                (1, "modules".to_string()),
                (1, "SR-IOV of 0000:05:00.0".to_string()),
                (2, "group 1".to_string()),
                (2, "group 2".to_string()),
                (2, "0000:05:10.0 (group pending)".to_string()),
            ]
        );
    }

    #[test]
    fn a_cycle_is_a_problem_not_a_panic() {
        let mut g = Graph::new();
        g.push(Node::Group(1), bind("0000:01:00.0"), "a");
        g.push(Node::Group(2), bind("0000:02:00.0"), "b");
        g.edge(Node::Group(1), Node::Group(2));
        g.edge(Node::Group(2), Node::Group(1));
        assert_eq!(g.order().unwrap_err().kind, ProblemKind::Cycle);
    }
}
