//! Small host facilities every layer uses, kept in one place: reading /proc/PID/stat,
//! replacing a file atomically, locking a lock file, running a child under a deadline, the
//! shape of a failed file-system operation. A leaf: it uses nothing else of slipway.
pub mod atomic;
pub mod child;
pub mod io;
pub mod lock;
pub mod procfs;
