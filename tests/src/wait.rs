//! Polling for something that happens in the background (a watch event, a reload, a restart),
//! bounded so that a test fails instead of hanging.

use std::time::Duration;

use anyhow::{Result, bail};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Fails unless `condition` holds within `limit`, polling every 100 ms.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(what, limit, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// The first value `attempt` yields within `limit`, polling every 100 ms; `what` names it in the
/// error.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
