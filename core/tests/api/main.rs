//! hearth-core's API tests, one module per area, linked into a single test binary: one binary
//! per file cost a link and ~300 MB of disk each.

#[cfg(not(target_arch = "wasm32"))]
use hearth_spec as spec;

mod account_data;
mod accounts;
mod backup;
mod bad_input;
mod cross_signing;
mod discovery;
mod e2ee;
mod ephemeral;
mod federation;
mod knock;
mod lifecycle;
mod media;
mod misc_endpoints;
mod moderation;
mod notification_footprint;
mod profile;
mod push;
mod relations;
mod reports;
mod rooms;
mod search;
mod spaces;
mod spec_coverage;
mod spec_schemas;
mod storage_memory;
mod storage_reads;
mod strict;
mod tags;
mod visibility;
