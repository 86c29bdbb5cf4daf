//! Statements whose text is made at run time, made in one place.
//!
//! sqlx takes a `&'static str` or text wrapped in [`AssertSqlSafe`], its promise that nothing
//! a person typed is in it. [`Sql`] keeps that promise by construction: it is built only from
//! `&'static str` fragments and numbered placeholders, never from a value, so a dynamic
//! `IN (…)` list or a multi-row `VALUES` cannot carry an injection. Values are bound.

use std::fmt::Write;

use sqlx::AssertSqlSafe;

use super::Backend;

/// A statement built from static fragments and placeholders.
#[derive(Debug)]
pub(crate) struct Sql {
    text: String,
    params: usize,
    positional: bool,
}

impl Sql {
    /// A statement that already holds `params` placeholders (`$1` … `$params`) in `start`;
    /// the ones added next are numbered after them.
    pub(crate) fn new(start: &'static str, params: usize) -> Self {
        Sql {
            text: start.to_owned(),
            params,
            positional: false,
        }
    }

    /// A statement written in the order its values are bound: `?` on SQLite, which finds a
    /// named parameter such as `$7` by scanning a list (slow with thousands of them), and
    /// `$1, $2, …` on PostgreSQL.
    pub(crate) fn positional(backend: Backend, start: &'static str) -> Self {
        Sql {
            text: start.to_owned(),
            params: 0,
            positional: backend == Backend::Sqlite,
        }
    }

    /// Appends a fixed piece of SQL.
    pub(crate) fn push(mut self, fragment: &'static str) -> Self {
        self.text.push_str(fragment);
        self
    }

    /// Appends one placeholder.
    pub(crate) fn param(mut self) -> Self {
        self.params += 1;
        if self.positional {
            self.text.push('?');
        } else {
            let _ = write!(self.text, "${}", self.params);
        }
        self
    }

    /// Appends `n` placeholders separated by commas, for an `IN (…)` list.
    pub(crate) fn list(mut self, n: usize) -> Self {
        for i in 0..n {
            if i > 0 {
                self.text.push_str(", ");
            }
            self = self.param();
        }
        self
    }

    /// Appends `n` rows of `VALUES` from a template in which each `?` stands for one value,
    /// e.g. `(?, ?, 'pending', ?)`; the rows are separated by commas.
    pub(crate) fn rows(mut self, template: &'static str, n: usize) -> Self {
        for i in 0..n {
            if i > 0 {
                self.text.push_str(", ");
            }
            for c in template.chars() {
                if c == '?' {
                    self = self.param();
                } else {
                    self.text.push(c);
                }
            }
        }
        self
    }

    /// The text, for sqlx.
    pub(crate) fn build(self) -> AssertSqlSafe<String> {
        AssertSqlSafe(self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sql: Sql) -> String {
        sql.build().0
    }

    #[test]
    fn numbered_placeholders_follow_the_ones_in_the_start() {
        let sql = Sql::new("SELECT 1 WHERE a = $1 AND b IN (", 1)
            .list(3)
            .push(")");
        assert_eq!(text(sql), "SELECT 1 WHERE a = $1 AND b IN ($2, $3, $4)");
    }

    #[test]
    fn positional_rows_use_question_marks_on_sqlite_and_numbers_on_postgres() {
        let sqlite =
            Sql::positional(Backend::Sqlite, "INSERT INTO t VALUES ").rows("(?, 'x', ?)", 2);
        assert_eq!(
            text(sqlite),
            "INSERT INTO t VALUES (?, 'x', ?), (?, 'x', ?)"
        );
        let pg = Sql::positional(Backend::Postgres, "INSERT INTO t VALUES ").rows("(?, 'x', ?)", 2);
        assert_eq!(
            text(pg),
            "INSERT INTO t VALUES ($1, 'x', $2), ($3, 'x', $4)"
        );
    }

    #[test]
    fn an_empty_list_adds_nothing() {
        assert_eq!(text(Sql::new("IN (", 0).list(0).push(")")), "IN ()");
    }
}
