//! Client configuration generators for ferry: Docker daemon.json, containerd hosts.toml, Podman registries.conf
