//! Running an app's processes. For now: the OCI spec of one app process container, shared by
//! `slipway slug run` and (next) the supervisor's formation.
pub mod app_spec;
