//! Pre-sync of image lists into ferry's cache, and copies of images between registries
