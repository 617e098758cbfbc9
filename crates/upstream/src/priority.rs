//! Who is waiting for an upstream request: a client pulling now ([`Priority::Interactive`],
//! the default) or ferry's own background work ([`Priority::Background`]: sync, pre-fetch, tag
//! revalidation). The priority travels with the task (a task-local), so background callers
//! mark a whole job once instead of passing a flag through every call. Background requests
//! leave an account's last few requests (its [reserve](crate::ratelimit::RESERVE)) to clients.

use std::future::Future;

tokio::task_local! {
    static PRIORITY: Priority;
}

/// The priority of upstream requests made by the current task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// A client is waiting.
    #[default]
    Interactive,
    /// Nobody is waiting: sync, pre-fetch, background revalidation.
    Background,
}

impl Priority {
    /// The priority of the current task (interactive unless a caller scoped it).
    pub fn current() -> Priority {
        PRIORITY.try_with(|p| *p).unwrap_or_default()
    }

    /// Runs `f` with this priority (carry it into spawned tasks with
    /// `Priority::current().scope(work)`).
    pub fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        PRIORITY.scope(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scoped_and_default() {
        assert_eq!(Priority::current(), Priority::Interactive);
        let inner = Priority::Background
            .scope(async { Priority::current() })
            .await;
        assert_eq!(inner, Priority::Background);
        let carried = Priority::Background
            .scope(async {
                let p = Priority::current();
                tokio::spawn(p.scope(async { Priority::current() }))
                    .await
                    .unwrap()
            })
            .await;
        assert_eq!(carried, Priority::Background, "carried into a spawned task");
    }
}
