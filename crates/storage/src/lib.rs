//! Content-addressed blob and metadata storage for ferry: the BlobStore trait and its backends
