//! The wake-up listener: one dedicated connection (outside the pool) that `LISTEN`s on
//! the prefix's channel and fires the store's wake signal for every notification.
//!
//! The task owns no reference to the store; the store aborts it when its last clone is
//! dropped. When the connection fails it reconnects with capped backoff and fires the
//! signal once reconnected, since a wake-up may have been missed meanwhile.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::sync::Notify;

/// The first pause before reconnecting.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A new connection to `url`, made within `connect_timeout`.
pub(crate) async fn establish(url: &str, connect_timeout: Duration) -> Result<AsyncPgConnection, BoxError> {
    match tokio::time::timeout(connect_timeout, AsyncPgConnection::establish(url)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(format!("timed out after {connect_timeout:?}").into()),
    }
}

/// Makes `conn` listen on `channel`.
pub(crate) async fn listen(conn: &mut AsyncPgConnection, channel: &str) -> Result<(), BoxError> {
    // The channel name is built from the validated prefix: letters, digits and `_`.
    diesel::sql_query(format!("LISTEN \"{channel}\"")).execute(conn).await?;
    Ok(())
}

/// What the listener task needs to reconnect and to signal.
pub(crate) struct Task {
    pub(crate) url: String,
    pub(crate) redacted: String,
    pub(crate) channel: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) wake: Arc<Notify>,
}

impl Task {
    /// Forwards notifications from `conn`, reconnecting whenever it fails; runs until
    /// aborted.
    pub(crate) async fn run(self, mut conn: AsyncPgConnection) {
        loop {
            self.forward(&mut conn).await;
            drop(conn);
            conn = self.reconnect().await;
            tracing::info!(url = %self.redacted, channel = %self.channel, "wake-up listener reconnected");
            self.wake.notify_waiters();
        }
    }

    /// Fires the signal for every notification until the connection fails.
    async fn forward(&self, conn: &mut AsyncPgConnection) {
        let mut notifications = pin!(conn.notifications_stream());
        loop {
            match notifications.next().await {
                Some(Ok(_)) => self.wake.notify_waiters(),
                Some(Err(error)) => {
                    tracing::warn!(url = %self.redacted, channel = %self.channel, %error, "wake-up listener connection failed");
                    return;
                }
                None => {
                    tracing::warn!(url = %self.redacted, channel = %self.channel, "wake-up listener connection closed");
                    return;
                }
            }
        }
    }

    /// A new listening connection, after as many attempts as it takes.
    async fn reconnect(&self) -> AsyncPgConnection {
        let mut backoff = MIN_BACKOFF;
        loop {
            tokio::time::sleep(backoff).await;
            let attempt = async {
                let mut conn = establish(&self.url, self.connect_timeout).await?;
                listen(&mut conn, &self.channel).await?;
                Ok::<_, BoxError>(conn)
            };
            match attempt.await {
                Ok(conn) => return conn,
                Err(error) => {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tracing::warn!(
                        url = %self.redacted,
                        channel = %self.channel,
                        %error,
                        retry_in = ?backoff,
                        "could not reconnect the wake-up listener"
                    );
                }
            }
        }
    }
}
