//! Problems found in configuration or job files, located as `file:line:col` with a hint, so an
//! operator can fix every problem of a deploy in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem at a byte range of `source` (as reported by the TOML parser's spans).
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_col(source, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Self {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: None,
        }
    }

    /// A problem of a whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..source.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// Several problems, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl Diagnostics {
    /// A one-line count for the end of a report, e.g. "3 problems in 2 files".
    pub fn summary(&self) -> String {
        let files: std::collections::BTreeSet<&Path> =
            self.0.iter().map(|d| d.file.as_path()).collect();
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("1 {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        format!(
            "{} in {}",
            plural(self.0.len(), "problem"),
            plural(files.len(), "file")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let source = "a = 1\nbb = \"é x\"\n";
        assert_eq!(line_col(source, 0), (1, 1));
        assert_eq!(line_col(source, 6), (2, 1));
        assert_eq!(line_col(source, source.find('x').unwrap()), (2, 9));
        let d = Diagnostic::at(Path::new("jobs/a.toml"), source, Some(6..8), "bad").hint("fix it");
        assert_eq!(d.to_string(), "jobs/a.toml:2:1: bad\n  hint: fix it");
    }

    #[test]
    fn reports_end_with_a_count_of_problems_and_files() {
        let one = Diagnostic::file(Path::new("jobs/a.toml"), "empty");
        let other = Diagnostic::file(Path::new("jobs/b.toml"), "empty");
        assert_eq!(
            Diagnostics(vec![one.clone()]).summary(),
            "1 problem in 1 file"
        );
        assert_eq!(
            Diagnostics(vec![one.clone(), one.clone(), other]).summary(),
            "3 problems in 2 files"
        );
        let shown = Diagnostics(vec![one.clone(), one]).to_string();
        assert_eq!(shown, "jobs/a.toml: empty\njobs/a.toml: empty");
    }
}
