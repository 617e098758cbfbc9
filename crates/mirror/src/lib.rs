//! ferry's cache engine: manifests, blobs and tags through storage and upstreams, with coalesced streaming fills
