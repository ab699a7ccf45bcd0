//! A room's event graph, and the one way events enter it.
//!
//! `room::txn::RoomTxn` is the write side: it holds a room's working state and the batch that
//! makes new events durable. This module is what sits on top of it for both APIs:
//! - [`graph`]: the state before and after any event, and state resolution v2 (ruma's
//!   `state-res`) wherever branches of the graph merge;
//! - [`ingest`]: a PDU from another server, through the spec's checks in order (format,
//!   signatures, content hash, auth events, state before the event, current state), then into
//!   the room like a local event;
//! - [`indexer`]: the search index, brought up behind the timeline.
//!
//! The client API (`client/`) and the federation API (`federation/`) both call down into
//! here; neither calls the other.

pub mod backfill;
pub mod graph;
pub mod indexer;
pub mod ingest;
pub mod txn;
