//! Sending a federated message: split into chunks and sent over the mesh (waiting out a full
//! writer queue a while), or through the loopback when it is addressed to this agent.
use x0tta6bl4_api::fl_protocol::{MAX_MODEL_BYTES, UPDATE_FLOW};
use x0tta6bl4_fl::codec::chunks;

use super::FlContext;
use crate::mesh::{Delivery, SendError};

/// Sends update bytes to the aggregator: over the mesh, or through the loopback if it is us.
pub async fn route_update(ctx: &FlContext, aggregator: &str, bytes: Vec<u8>) -> Result<(), SendError> {
    send_message(ctx, aggregator, UPDATE_FLOW, &bytes).await
}

/// Attempts at a chunk while the next hop's writer queue is full (a large model is many
/// chunks queued at once), and the pause between them.
const QUEUE_FULL_ATTEMPTS: u32 = 100;
const QUEUE_FULL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

// A request or update carries the whole model: the largest one a round ConfigMap holds, with
// room for the message's own fields and signature, must fit one chunked message.
const _: () = assert!(MAX_MODEL_BYTES + 64 * 1024 <= chunks::MAX_MESSAGE_BYTES);

/// Sends a federated message (any size up to [`chunks::MAX_MESSAGE_BYTES`]) as chunks to
/// agent `to`: over the mesh, or through the loopback if it is this agent.
pub async fn send_message(ctx: &FlContext, to: &str, flow: u32, message: &[u8]) -> Result<(), SendError> {
    let chunks = chunks::split(rand::random(), message).map_err(|_| SendError::TooLarge)?;
    for chunk in chunks {
        if to == ctx.node_name {
            let delivery = Delivery {
                source: ctx.self_id,
                flow,
                payload: chunk,
            };
            ctx.loopback
                .send(delivery)
                .await
                .map_err(|_| SendError::ShuttingDown)?;
            continue;
        }
        let mut attempt = 0;
        loop {
            match ctx.mesh.send(ctx.node_id(to), flow, chunk.clone()).await {
                Err(SendError::QueueFull) if attempt < QUEUE_FULL_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                result => {
                    result?;
                    break;
                }
            }
        }
    }
    Ok(())
}
