//! Problems found in a config file, with where they are and how to fix them, and their two
//! renderings: rustc-style text (annotate-snippets) and JSON for `--json`.
//!
//! Owns locations (byte span to 1-based line and character column) and rendering; knows
//! nothing about what makes a config valid.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

/// How bad a problem is. Only errors make a config invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in the source: 1-based line and column (columns count characters, not bytes),
/// and the byte span underlined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub span: Span,
}

/// A half-open byte range of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl From<Range<usize>> for Span {
    fn from(r: Range<usize>) -> Span {
        Span {
            start: r.start,
            end: r.end,
        }
    }
}

impl Span {
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// A secondary place that explains the problem ("first defined here").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Related {
    pub message: String,
    #[serde(flatten)]
    pub location: Location,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub file: PathBuf,
    /// Where in the file; `None` for a problem with the file itself (its permissions).
    #[serde(flatten, serialize_with = "serialize_location")]
    pub location: Option<Location>,
    /// How to fix it.
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
}

/// Writes a missing location as explicit nulls, so every diagnostic has the same JSON shape.
fn serialize_location<S: serde::Serializer>(
    loc: &Option<Location>,
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Flat<'a> {
        line: Option<usize>,
        column: Option<usize>,
        end_line: Option<usize>,
        end_column: Option<usize>,
        span: Option<&'a Span>,
    }
    Flat {
        line: loc.as_ref().map(|l| l.line),
        column: loc.as_ref().map(|l| l.column),
        end_line: loc.as_ref().map(|l| l.end_line),
        end_column: loc.as_ref().map(|l| l.end_column),
        span: loc.as_ref().map(|l| &l.span),
    }
    .serialize(s)
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column`, or just the file for a file-level problem.
    pub fn position(&self) -> String {
        match &self.location {
            Some(l) => format!("{}:{}:{}", self.file.display(), l.line, l.column),
            None => self.file.display().to_string(),
        }
    }
}

/// Maps byte offsets of one source text to lines and columns.
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(source: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// 1-based line and character column of byte `offset` (clamped to the source).
    pub fn line_col(&self, source: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = source[start..offset].chars().count() + 1;
        (line, column)
    }

    /// The location of a byte span. The stored span is widened to whole characters (start
    /// back, end forward), so a renderer can always slice the source with it.
    pub fn location(&self, source: &str, span: Range<usize>) -> Location {
        let mut start = span.start.min(source.len());
        while !source.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.max(span.start).min(source.len());
        while !source.is_char_boundary(end) {
            end += 1;
        }
        let (line, column) = self.line_col(source, start);
        let (end_line, end_column) = self.line_col(source, end);
        Location {
            line,
            column,
            end_line,
            end_column,
            span: Span::from(start..end),
        }
    }
}

/// Every problem found in one config file, with the source text they point into.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    path: PathBuf,
    source: String,
    items: Vec<Diagnostic>,
}

/// How to render diagnostics as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    /// ANSI colours, for a terminal.
    Color,
}

impl Diagnostics {
    pub fn new(path: &Path, source: &str) -> Diagnostics {
        Diagnostics {
            path: path.to_path_buf(),
            source: source.to_owned(),
            items: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// Sorts by position in the file (file-level problems first), keeping the order of
    /// problems found at the same place.
    pub fn sort(&mut self) {
        self.items
            .sort_by_key(|d| d.location.as_ref().map(|l| (l.span.start, l.span.end)));
    }

    /// The rustc-style text of every diagnostic, each followed by a blank line.
    pub fn render(&self, style: Style) -> String {
        let renderer = match style {
            Style::Plain => Renderer::plain(),
            Style::Color => Renderer::styled(),
        };
        let path = self.path.display().to_string();
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&renderer.render(&[self.group(d, &path)]));
            out.push_str("\n\n");
        }
        out
    }

    fn group<'a>(&'a self, d: &'a Diagnostic, path: &'a str) -> Group<'a> {
        let level = match d.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let title = level.primary_title(d.message.as_str());
        let mut group = match &d.location {
            Some(loc) => {
                let mut snippet = Snippet::source(self.source.as_str())
                    .path(path)
                    .annotation(AnnotationKind::Primary.span(loc.span.range()));
                for r in &d.related {
                    snippet = snippet.annotation(
                        AnnotationKind::Context
                            .span(r.location.span.range())
                            .label(r.message.as_str()),
                    );
                }
                title.element(snippet)
            }
            None => title.element(annotate_snippets::Origin::path(path)),
        };
        if let Some(hint) = &d.hint {
            group = group.element(Level::HELP.message(hint.as_str()));
        }
        group
    }

    /// The `--json` document: the file, whether it is valid, counts, and every diagnostic.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.path,
            "valid": !self.has_errors(),
            "errors": self.error_count(),
            "warnings": self.warning_count(),
            "diagnostics": self.items,
        })
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(Style::Plain))?;
        write!(
            f,
            "{}: {} error(s), {} warning(s)",
            self.path.display(),
            self.error_count(),
            self.warning_count()
        )
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let src = "ab\nçd = 1\n\nx";
        let idx = LineIndex::new(src);
        assert_eq!(idx.line_col(src, 0), (1, 1));
        assert_eq!(idx.line_col(src, 2), (1, 3));
        assert_eq!(idx.line_col(src, 3), (2, 1));
        // `ç` is two bytes, one column.
        assert_eq!(idx.line_col(src, 5), (2, 2));
        assert_eq!(idx.line_col(src, 11), (3, 1));
        assert_eq!(idx.line_col(src, 12), (4, 1));
        assert_eq!(idx.line_col(src, 99), (4, 2));
        // Inside a multi-byte character: the character's column.
        assert_eq!(idx.line_col(src, 4), (2, 1));
    }

    #[test]
    fn json_shape_has_nulls_for_file_level_problems() {
        let mut ds = Diagnostics::new(Path::new("x.toml"), "version = 1\n");
        ds.push(Diagnostic {
            severity: Severity::Warning,
            message: "m".into(),
            file: "x.toml".into(),
            location: None,
            hint: None,
            related: vec![],
        });
        let j = ds.to_json();
        assert_eq!(j["valid"], true);
        assert_eq!(j["warnings"], 1);
        let d = &j["diagnostics"][0];
        assert_eq!(d["severity"], "warning");
        assert!(d["line"].is_null() && d["column"].is_null() && d["span"].is_null());
    }
}

/// Collects diagnostics for one source text, turning byte spans into locations.
#[derive(Debug)]
pub struct Reporter<'s> {
    source: &'s str,
    index: LineIndex,
    diags: Diagnostics,
}

impl<'s> Reporter<'s> {
    pub fn new(path: &Path, source: &'s str) -> Reporter<'s> {
        Reporter {
            source,
            index: LineIndex::new(source),
            diags: Diagnostics::new(path, source),
        }
    }

    pub fn source(&self) -> &'s str {
        self.source
    }

    /// The text a span covers (empty when out of range).
    pub fn text(&self, span: Range<usize>) -> &'s str {
        self.source.get(span).unwrap_or("")
    }

    pub fn location(&self, span: Range<usize>) -> Location {
        self.index.location(self.source, span)
    }

    pub fn report(
        &mut self,
        severity: Severity,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
        related: Vec<(Range<usize>, String)>,
    ) {
        let location = Some(self.location(span));
        let related = related
            .into_iter()
            .map(|(span, message)| Related {
                message,
                location: self.location(span),
            })
            .collect();
        self.diags.push(Diagnostic {
            severity,
            message: message.into(),
            file: self.diags.path.clone(),
            location,
            hint,
            related,
        });
    }

    pub fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.report(
            Severity::Error,
            span,
            message,
            Some(hint.into()),
            Vec::new(),
        );
    }

    pub fn warning(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.report(
            Severity::Warning,
            span,
            message,
            Some(hint.into()),
            Vec::new(),
        );
    }

    pub fn has_errors(&self) -> bool {
        self.diags.has_errors()
    }

    /// The diagnostics in file order.
    pub fn finish(mut self) -> Diagnostics {
        self.diags.sort();
        self.diags
    }
}
