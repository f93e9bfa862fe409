//! A whole session setup driven in memory, sans IO: TLS bytes are moved between a rustls
//! client and server by this code (optionally through a tamper hook), then each side's binding
//! is exchanged and verified. Used by the tests, the benchmark and the mesh simulator.
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, NamedGroup, ServerConfig, ServerConnection};
use x0tta6bl4_crypto::endorsement::TrustStore;

use crate::binding::{self, Identity, PeerIdentity, Role};
use crate::tls;

/// Which way bytes are travelling, for the tamper hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToServer,
    ToClient,
}

/// One end of the session to set up.
pub struct End<'a, C> {
    pub identity: &'a Identity,
    pub trust: &'a mut TrustStore,
    pub config: Arc<C>,
}

/// What each side concluded.
pub struct Outcome {
    pub group: Option<NamedGroup>,
    pub server_saw: crate::Result<PeerIdentity>,
    pub client_saw: crate::Result<PeerIdentity>,
}

/// Moves TLS bytes both ways until neither side has more to say (at most 32 flights).
fn pump(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
    tamper: &mut dyn FnMut(Direction, &mut Vec<u8>),
) -> Result<(), rustls::Error> {
    fn deliver<T>(
        connection: &mut rustls::ConnectionCommon<T>,
        mut bytes: &[u8],
    ) -> Result<(), rustls::Error> {
        while !bytes.is_empty() {
            connection
                .read_tls(&mut bytes)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            connection.process_new_packets()?;
        }
        Ok(())
    }
    for _ in 0..32 {
        let mut to_server = Vec::new();
        client
            .write_tls(&mut to_server)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if !to_server.is_empty() {
            tamper(Direction::ToServer, &mut to_server);
            deliver(server, &to_server)?;
        }
        let mut to_client = Vec::new();
        server
            .write_tls(&mut to_client)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if !to_client.is_empty() {
            tamper(Direction::ToClient, &mut to_client);
            deliver(client, &to_client)?;
        }
        if to_server.is_empty() && to_client.is_empty() {
            return Ok(());
        }
    }
    Err(rustls::Error::General(
        "handshake did not settle in 32 flights".into(),
    ))
}

/// Sets up one mutually authenticated hybrid session. A TLS failure is the `Err`; the
/// authentication verdict of each side is in the [`Outcome`].
pub fn establish(
    client: End<'_, ClientConfig>,
    server: End<'_, ServerConfig>,
    now_unix: u64,
    tamper: &mut dyn FnMut(Direction, &mut Vec<u8>),
) -> Result<Outcome, rustls::Error> {
    let mut c = ClientConnection::new(client.config, tls::server_name())?;
    let mut s = ServerConnection::new(server.config)?;
    pump(&mut c, &mut s, tamper)?;
    if c.is_handshaking() || s.is_handshaking() {
        return Err(rustls::Error::General("handshake incomplete".into()));
    }
    let group = c.negotiated_key_exchange_group().map(|g| g.name());
    let client_exporter = binding::exporter(&c).map_err(|e| rustls::Error::General(e.to_string()))?;
    let server_exporter = binding::exporter(&s).map_err(|e| rustls::Error::General(e.to_string()))?;
    let client_message = binding::binding_message(client.identity, Role::Client, &client_exporter)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let server_message = binding::binding_message(server.identity, Role::Server, &server_exporter)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    c.writer()
        .write_all(&client_message)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    s.writer()
        .write_all(&server_message)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    pump(&mut c, &mut s, tamper)?;
    // The reader reports WouldBlock once it has handed over everything received.
    let mut at_server = Vec::new();
    let _ = s.reader().read_to_end(&mut at_server);
    let mut at_client = Vec::new();
    let _ = c.reader().read_to_end(&mut at_client);
    Ok(Outcome {
        group,
        server_saw: binding::verify_binding(
            &at_server,
            Role::Client,
            &server_exporter,
            server.trust,
            now_unix,
        ),
        client_saw: binding::verify_binding(
            &at_client,
            Role::Server,
            &client_exporter,
            client.trust,
            now_unix,
        ),
    })
}
