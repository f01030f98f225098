//! A small pool of Spanner sessions.
//!
//! A session runs one transaction at a time and costs a request to create, so
//! sessions are kept and reused; at most [`SpannerConfig::sessions`] exist,
//! and a caller beyond that waits for one to come back. The client library's
//! own pool is not public, and its read-write transactions always open with a
//! separate `BeginTransaction` request; the store's transactions instead begin
//! inline with their first read (see the crate docs), so it drives sessions
//! itself through the library's gRPC layer.
//!
//! [`SpannerConfig::sessions`]: crate::SpannerConfig::sessions

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gcloud_gax::grpc::{Code, Status};
use gcloud_gax::retry::RetrySetting;
use gcloud_googleapis::spanner::v1::{BatchCreateSessionsRequest, DeleteSessionRequest};
use gcloud_spanner::apiv1::conn_pool::ConnectionManager;
use gcloud_spanner::apiv1::spanner_client::Client as GrpcClient;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Sessions made per `BatchCreateSessions` request when the pool runs dry:
/// one, so a store holds only as many sessions as it ran transactions at
/// once (Spanner limits sessions per node, and short-lived processes open
/// many stores).
const CREATE_BATCH: i32 = 1;

pub(crate) struct SessionPool {
    conns: ConnectionManager,
    database: String,
    idle: Mutex<Vec<String>>,
    permits: Arc<Semaphore>,
    /// `BatchCreateSessions` requests made (not counted as store round trips).
    pub(crate) created: AtomicU64,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("database", &self.database)
            .field("idle", &self.idle.lock().unwrap_or_else(PoisonError::into_inner).len())
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

/// A session lent to one transaction; it goes back to the pool on drop
/// unless [`Lease::discard`]ed.
pub(crate) struct Lease {
    pool: Arc<SessionPool>,
    name: Option<String>,
    _permit: OwnedSemaphorePermit,
}

impl SessionPool {
    pub(crate) fn new(conns: ConnectionManager, database: String, max: usize) -> Self {
        Self {
            conns,
            database,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max)),
            created: AtomicU64::new(0),
        }
    }

    /// A gRPC client on one of the pooled channels.
    pub(crate) fn client(&self) -> GrpcClient {
        self.conns.conn()
    }

    /// A session for one transaction: an idle one, or new ones when none is
    /// idle (made a few at a time, the rest kept idle).
    pub(crate) async fn lease(self: &Arc<Self>) -> Result<Lease, Status> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Status::new(Code::Cancelled, "session pool closed"))?;
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let name = match idle {
            Some(name) => name,
            None => {
                let request = BatchCreateSessionsRequest {
                    database: self.database.clone(),
                    session_template: None,
                    session_count: CREATE_BATCH,
                };
                self.created.fetch_add(1, Ordering::Relaxed);
                let mut made =
                    self.client().batch_create_sessions(request, false, Some(no_retry())).await?.into_inner();
                let name = made
                    .session
                    .pop()
                    .map(|s| s.name)
                    .ok_or_else(|| Status::new(Code::Internal, "BatchCreateSessions returned no session"))?;
                self.idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(made.session.into_iter().map(|s| s.name));
                name
            }
        };
        Ok(Lease { pool: Arc::clone(self), name: Some(name), _permit: permit })
    }

    /// Delete every idle session (best effort; the service also expires them
    /// after an hour idle).
    pub(crate) async fn close(&self) {
        let names = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for name in names {
            let request = DeleteSessionRequest { name };
            if let Err(e) = self.client().delete_session(request, false, Some(no_retry())).await {
                tracing::debug!(error = %e, "could not delete a spanner session");
            }
        }
    }
}

impl Drop for SessionPool {
    /// Delete the idle sessions when the last store using the pool goes away
    /// (best effort, on the current runtime if there is one; the service
    /// expires what is left after an hour idle).
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if names.is_empty() {
            return;
        }
        let client = self.client();
        runtime.spawn(async move {
            for name in names {
                let _ = client.clone().delete_session(DeleteSessionRequest { name }, false, Some(no_retry())).await;
            }
        });
    }
}

impl Lease {
    /// The session's resource name.
    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// Forget this session, which the service no longer knows, and the idle
    /// ones too: sessions expire together (an hour idle, or a database-wide
    /// cleanup), so the next lease makes fresh ones instead of trying each
    /// stale one in turn.
    pub(crate) fn discard(mut self) {
        self.name = None;
        self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(name);
        }
    }
}

/// No retries inside the client library: the store decides what is safe to
/// repeat (a lost `Commit` answer is `Indeterminate`, not something to resend).
pub(crate) fn no_retry() -> RetrySetting {
    RetrySetting { from_millis: 1, max_delay: Some(Duration::from_millis(1)), factor: 1, take: 0, codes: Vec::new() }
}
