//! The signals that ask a server to stop: SIGTERM (the kubelet, systemd, `docker stop`) and
//! SIGINT (^C in a terminal). Whoever awaits [`termination_requested`] typically starts the
//! drain (`crate::drain`).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the signal's name once SIGTERM or SIGINT arrives. If a handler cannot be
/// installed (which only a process without signal support sees), says so and waits for the
/// other signal alone.
pub async fn termination_requested() -> &'static str {
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    match (terminate, interrupt) {
        (Ok(mut terminate), Ok(mut interrupt)) => tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        },
        (Ok(mut only), Err(error)) | (Err(error), Ok(mut only)) => {
            tracing::warn!(%error, "cannot handle one of SIGTERM and SIGINT; it ends the process without a drain");
            only.recv().await;
            "SIGTERM or SIGINT"
        }
        (Err(error), Err(_)) => {
            tracing::warn!(%error, "cannot handle SIGTERM or SIGINT; they end the process without a drain");
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn sigterm_is_a_termination_request() {
        // Installed first, so that the SIGTERM below can never end the test process.
        let _installed = signal(SignalKind::terminate()).unwrap();
        let waiting = tokio::spawn(termination_requested());
        // The handlers are installed when the task first runs.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        let signal = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(signal, "SIGTERM");
    }
}
