//! What a domain reconcile did and could not do: events (named like the plan's actions),
//! errors (each naming its domain, and its window or group), and notes (mirroring, huge page
//! fallbacks, the memlock raise).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A kind of domain change, spelled as in `reconcile --dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    CreateDomain,
    DestroyDomain,
    AttachGroup,
    /// A group placed in an extra container because the kernel refused to share.
    MirrorGroup,
    ReleaseGroup,
    CloseContainer,
    MapWindow,
    UnmapWindow,
    ResizeWindow,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::CreateDomain => "create-domain",
            Action::DestroyDomain => "destroy-domain",
            Action::AttachGroup => "attach-group",
            Action::MirrorGroup => "mirror-group",
            Action::ReleaseGroup => "release-group",
            Action::CloseContainer => "close-container",
            Action::MapWindow => "map-window",
            Action::UnmapWindow => "unmap-window",
            Action::ResizeWindow => "resize-window",
        })
    }
}

/// One change made (or, in a dry run, to be made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub domain: String,
    pub action: Action,
    pub detail: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain \"{}\": {}", self.domain, self.action)?;
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}

/// A message about one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub domain: String,
    pub message: String,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain \"{}\": {}", self.domain, self.message)
    }
}

/// The outcome of one pass over the domains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub events: Vec<Event>,
    pub errors: Vec<Message>,
    pub notes: Vec<Message>,
}

impl Report {
    pub fn event(&mut self, domain: &str, action: Action, detail: String) {
        self.events.push(Event {
            domain: domain.to_string(),
            action,
            detail,
        });
    }

    pub fn error(&mut self, domain: &str, message: String) {
        self.errors.push(Message {
            domain: domain.to_string(),
            message,
        });
    }

    pub fn note(&mut self, domain: &str, message: String) {
        self.notes.push(Message {
            domain: domain.to_string(),
            message,
        });
    }

    /// Whether everything asked for was done.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Events of one action, for tests and summaries.
    pub fn count(&self, action: Action) -> usize {
        self.events.iter().filter(|e| e.action == action).count()
    }

    pub fn merge(&mut self, other: Report) {
        self.events.extend(other.events);
        self.errors.extend(other.errors);
        self.notes.extend(other.notes);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.events {
            writeln!(f, "{e}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        Ok(())
    }
}
