//! ferry's Kubernetes mutating admission webhook: rewrite pod images to the mirror
