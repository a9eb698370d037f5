//! Where objects come from: [`files`] reads a folder of manifests (local mode), [`kube`] watches
//! the Kubernetes API (cluster mode). Both feed the same index.

pub mod files;
pub mod kube;
