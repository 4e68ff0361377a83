//! hookgate-core's integration tests: the public API driven as the runtimes drive it.

mod config;
mod jwt;
mod pipeline;
mod props;
mod providers;
mod support;
mod verifiers;
