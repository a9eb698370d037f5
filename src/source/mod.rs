//! Where objects come from. [`files`] reads a folder of manifests (local mode); the Kubernetes
//! watches arrive with the controller.

pub mod files;
