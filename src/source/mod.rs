//! Where objects come from: [`files`] reads a folder of manifests (local mode), [`kube`] watches
//! the Kubernetes API (cluster mode). Both feed the same index.

mod discovery;
pub use discovery::RECHECK_INTERVAL;
pub mod files;
pub mod kube;
