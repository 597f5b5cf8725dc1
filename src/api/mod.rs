//! The daemon (`slipway daemon`, the control plane) and its interfaces to other processes:
//! the HTTP API and its client, the route table the router reads, and the supervisor behind
//! the [`runner::Runner`] trait.
pub mod attach;
pub mod client;
pub mod daemon;
pub mod deploy;
pub mod events;
pub mod git_http;
pub mod git_ssh;
pub mod github;
pub mod http;
pub mod keys;
pub mod routes;
pub mod runner;
pub mod server;
pub mod tls;
pub mod wire;
