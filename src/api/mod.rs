//! The daemon's interfaces to other processes: the route table the router reads.
pub mod routes;
