//! End-to-end tests: the host over real HTTP on loopback, and the `hookgate` binary.

mod api;
mod cli;
mod crash;
mod edge;
mod ingest;
mod jwks;
mod plugins;
mod runner;
mod sandbox;
mod support;
mod upgrade;
