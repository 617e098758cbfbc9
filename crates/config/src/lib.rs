//! ferry's configuration file: schema, defaults, environment overrides and validation
