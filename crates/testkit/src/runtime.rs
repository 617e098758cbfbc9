//! A private tokio runtime for in-process test servers (token server, fake upstream).
//!
//! Each server owns its runtime on its own threads, so it keeps answering while the test
//! blocks (on skopeo, on a child process) and whether the test is sync or `#[tokio::test]`.
//! Dropping it is allowed inside an async test (the runtime is shut down in the background).

use std::net::SocketAddr;

use tokio::runtime::{Handle, Runtime};

/// A runtime that serves axum routers on 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct BackgroundRuntime {
    rt: Option<Runtime>,
}

impl BackgroundRuntime {
    /// A two-thread runtime named after the server it runs.
    pub fn new(name: &str) -> BackgroundRuntime {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("build test server runtime");
        BackgroundRuntime { rt: Some(rt) }
    }

    /// A handle to spawn more tasks on this runtime.
    pub fn handle(&self) -> Handle {
        self.rt.as_ref().expect("runtime alive").handle().clone()
    }

    /// Serves `router` on a fresh 127.0.0.1 port; returns the address (it accepts at once).
    pub fn serve(&self, router: axum::Router) -> SocketAddr {
        self.serve_on(bind_loopback(), router)
    }

    /// Serves `router` on a listener bound earlier (so its address can go into the router's
    /// state, e.g. for redirects and auth realms).
    pub fn serve_on(
        &self,
        std_listener: std::net::TcpListener,
        router: axum::Router,
    ) -> SocketAddr {
        std_listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = std_listener.local_addr().expect("listener address");
        let handle = self.handle();
        let _guard = handle.enter();
        let listener =
            tokio::net::TcpListener::from_std(std_listener).expect("tokio listener from std");
        handle.spawn(async move {
            // With the peer address, for fakes that limit per client IP.
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                eprintln!("test server on {addr} stopped: {e}");
            }
        });
        addr
    }
}

/// A listener on a kernel-chosen 127.0.0.1 port (in-process servers are never restarted, so
/// they need no leased port).
pub fn bind_loopback() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind test server listener")
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
