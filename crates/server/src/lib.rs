//! ferry's HTTP server: the OCI pull API over the mirror engine
