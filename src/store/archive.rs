//! The public archive of an offering: its sends that anyone may read on the web.
//!
//! A send is in the archive once it has started (sending, paused or done, with its fan-out
//! begun: a send still scheduled, or paused or cancelled before it started, is not), unless
//! it was scheduled `--private`; a send cancelled while it went out leaves it. Course lessons
//! (`lesson_day` set) never are. Whether the offering has an archive at all is the
//! configuration's say (`archive = true`), checked by the caller.

use super::sends::send_content_of;
use super::{SendContent, Store};
use crate::clock::Millis;

/// The condition on `sends` (no alias) that makes a send public in its offering's archive.
macro_rules! public_send {
    () => {
        "private = 0 AND lesson_day IS NULL
         AND status IN ('sending', 'paused', 'done')
         AND (fanout_cursor > 0 OR fanout_done_at IS NOT NULL)"
    };
}

/// The columns [`send_content_of`] reads.
macro_rules! content_columns {
    () => {
        "SELECT id, offering_id, subject, preheader, html_template, text_template, send_at,
                private FROM sends "
    };
}

impl Store {
    /// The offering's public sends, newest first: `limit` of them after skipping `offset`.
    pub async fn archived_sends(
        &self,
        offering_id: i64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<SendContent>, sqlx::Error> {
        let rows = sqlx::query(concat!(
            content_columns!(),
            "WHERE offering_id = $1 AND ",
            public_send!(),
            " ORDER BY send_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(offering_id)
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(send_content_of).collect()
    }

    /// When the offering's newest public send went out; `None` while it has none.
    pub async fn archive_newest(&self, offering_id: i64) -> Result<Option<Millis>, sqlx::Error> {
        sqlx::query_scalar(concat!(
            "SELECT MAX(send_at) FROM sends WHERE offering_id = $1 AND ",
            public_send!()
        ))
        .bind(offering_id)
        .fetch_one(&self.pool)
        .await
    }

    /// One public send of the offering; `None` for any other send (of another offering,
    /// private, not started, a lesson, or none at all).
    pub async fn archived_send(
        &self,
        offering_id: i64,
        id: i64,
    ) -> Result<Option<SendContent>, sqlx::Error> {
        let row = sqlx::query(concat!(
            content_columns!(),
            "WHERE id = $1 AND offering_id = $2 AND ",
            public_send!()
        ))
        .bind(id)
        .bind(offering_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(send_content_of).transpose()
    }
}
