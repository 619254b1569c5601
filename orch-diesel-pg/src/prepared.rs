//! Statements the connection prepares once and reuses.
//!
//! diesel never caches a `sql_query` (its text could be built from anything), so every
//! call would cost a Parse round trip and a fresh plan on the server. The store's
//! statements are built from the table prefix alone, never from a batch's size or a
//! value, so each has one text per prefix: [`Prepare::prepared`] marks a statement
//! safe to cache, and the connection keeps it by its text and bind types.

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};

/// A statement the connection caches by its text.
#[derive(Debug, Clone)]
pub(crate) struct Prepared<Q>(Q);

impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

impl<DB: Backend, Q: QueryFragment<DB>> QueryFragment<DB> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

/// Marks a raw statement as cacheable. Only for statements whose text does not vary
/// with the data: every distinct text stays prepared for the connection's life.
pub(crate) trait Prepare: Sized {
    /// This statement, cached by the connection after its first run.
    fn prepared(self) -> Prepared<Self> {
        Prepared(self)
    }
}

impl<Q: Query> Prepare for Q {}
