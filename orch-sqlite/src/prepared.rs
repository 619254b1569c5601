//! Statements the connection prepares once and reuses.
//!
//! diesel never caches a `sql_query` (its text could be built from anything), so SQLite
//! would parse and plan every statement again. The store's hot statements are built
//! from the table prefix and a bounded shape (a worker's name count, a fixed chunk
//! size), never from a value: [`Prepare::prepared`] marks such a statement safe to
//! cache, and the connection keeps it by its text.

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

impl<Q, Conn> diesel::RunQueryDsl<Conn> for Prepared<Q> {}

/// Marks a raw statement as cacheable. Only for statements whose text takes a bounded
/// number of forms: every distinct text stays prepared for the connection's life.
pub(crate) trait Prepare: Sized {
    /// This statement, cached by the connection after its first run.
    fn prepared(self) -> Prepared<Self> {
        Prepared(self)
    }
}

impl<Q: Query> Prepare for Q {}

/// Splits `items` into slices whose lengths are powers of two, none above `max` (itself
/// a power of two), largest first: a multi-row statement over them takes at most
/// `log2(max) + 1` texts, so each can stay prepared.
pub(crate) fn shaped_chunks<T>(mut items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two());
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let len = if items.len() >= max { max } else { 1 << items.len().ilog2() };
        let (chunk, rest) = items.split_at(len);
        items = rest;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::shaped_chunks;

    #[test]
    fn chunks_are_powers_of_two_and_cover_everything() {
        for n in 0..600 {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = shaped_chunks(&items, 128).collect();
            assert!(chunks.iter().all(|c| c.len().is_power_of_two() && c.len() <= 128), "{n}");
            assert_eq!(chunks.concat(), items, "{n}");
            assert!(chunks.len() <= n / 128 + 8, "{n}: {} chunks", chunks.len());
        }
    }
}
