//! pcs: Microsoft Solutions Partner capability scores, kept fresh as facts arrive.
//!
//! The data path: [`events`] decodes and validates, [`engine`] merges facts into partner
//! state and scores it under [`rules`]; [`cli`] is the command line over all of it.

pub mod allocator;
pub mod api;
pub mod auth;
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod engine;
pub mod events;
pub mod feed;
pub mod ingest;
pub mod kafka;
pub mod playground;
pub mod proto;
pub mod rules;
pub mod service;
pub mod store;
pub mod telemetry;
