//! An update as it reaches an aggregator, whichever path it took (the mesh or this agent's
//! loopback).

/// An update as it reaches the aggregator: its bytes and whom the mesh says sent it.
#[derive(Debug)]
pub struct Incoming {
    /// UPDATE_FLOW (a participant's update) or ZONE_FLOW (a zone aggregator's report).
    pub flow: u32,
    /// The sender's node name if it is a participant, else its node id (short hex).
    pub source: String,
    pub bytes: Vec<u8>,
}
