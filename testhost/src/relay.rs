//! Federation through a Hearth relay (`--relay URL`): the transport a key-named server uses
//! when no one can reach it directly, as the browser does. One WebSocket to the relay, the
//! protocol of `hearth-relay-proto`: the relay's challenge signed with the server's key, then
//! requests both ways as binary frames. A transaction the relay stored for an offline peer
//! counts as delivered (the relay now owns it). The socket is reopened with backoff when it
//! drops; requests made meanwhile fail at once, and the outbound queue retries them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use hearth_core::Homeserver;
use hearth_core::federation::transport::{Transport, TransportError};
use hearth_core::world::LocalBoxFuture;
use hearth_relay_proto::client::{
    Client, Incoming, as_delivered, request_to_http, response_frame, response_to_http,
};
use http::{Request, Response};
use ruma::ServerName;
use tokio_tungstenite::tungstenite::Message;

/// Longest wait between reconnection attempts.
const MAX_RECONNECT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Connection {
    client: Option<Client>,
    /// Frames to write, while a socket is open and welcomed.
    out: Option<mpsc::UnboundedSender<Vec<u8>>>,
    pending: HashMap<u32, oneshot::Sender<Response<Vec<u8>>>>,
}

/// The transport half: requests go out on the current connection.
#[derive(Clone, Default)]
pub struct RelayTransport {
    conn: Rc<RefCell<Connection>>,
}

impl Transport for RelayTransport {
    fn send<'a>(
        &'a self,
        destination: &'a ServerName,
        request: Request<Vec<u8>>,
    ) -> LocalBoxFuture<'a, Result<Response<Vec<u8>>, TransportError>> {
        Box::pin(async move {
            let answer = {
                let mut c = self.conn.borrow_mut();
                let Connection {
                    client,
                    out,
                    pending,
                } = &mut *c;
                let (Some(client), Some(out)) = (client.as_mut(), out.as_ref()) else {
                    return Err(TransportError::unreachable(
                        destination,
                        "not connected to the relay",
                    ));
                };
                let (id, frame) = client
                    .request(destination.as_str(), &request)
                    .map_err(|e| TransportError::connection(destination, e.to_string()))?;
                let (tx, rx) = oneshot::channel();
                pending.insert(id, tx);
                if out.unbounded_send(frame).is_err() {
                    pending.remove(&id);
                    return Err(TransportError::connection(
                        destination,
                        "relay socket closed",
                    ));
                }
                rx
            };
            let response = answer
                .await
                .map_err(|_| TransportError::connection(destination, "relay socket closed"))?;
            // A transaction the relay keeps for the peer is as good as delivered.
            Ok(as_delivered(response))
        })
    }
}

/// Keeps a connection to the relay at `url` open for `hs`, forever.
pub async fn run(hs: Homeserver, transport: RelayTransport, url: String) {
    let mut delay = Duration::from_millis(250);
    loop {
        match connect_once(&hs, &transport, &url).await {
            Ok(()) => delay = Duration::from_millis(250),
            Err(e) => tracing::warn!(relay = %url, error = %e, "relay connection failed"),
        }
        {
            let mut c = transport.conn.borrow_mut();
            c.out = None;
            // Answers that will never come: fail them now.
            c.pending.clear();
        }
        // Jitter, so that servers the same relay dropped do not all come back at once.
        let mut byte = [0u8; 1];
        let _ = getrandom::fill(&mut byte);
        tokio::time::sleep(delay.mul_f64(0.5 + f64::from(byte[0]) / 255.0)).await;
        delay = (delay * 2).min(MAX_RECONNECT);
    }
}

async fn connect_once(
    hs: &Homeserver,
    transport: &RelayTransport,
    url: &str,
) -> Result<(), String> {
    let client = Client::new(url, hs.server_name().as_str()).map_err(|e| e.to_string())?;
    let (socket, _) = tokio_tungstenite::connect_async(client.socket_url())
        .await
        .map_err(|e| e.to_string())?;
    transport.conn.borrow_mut().client = Some(client);
    let conn = &transport.conn;
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded::<Vec<u8>>();
    let writer = async move {
        while let Some(frame) = rx.next().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        while let Some(message) = stream.next().await {
            let bytes = match message.map_err(|e| e.to_string())? {
                Message::Binary(b) => b,
                Message::Close(_) => return Ok(()),
                _ => continue,
            };
            let incoming = match conn.borrow_mut().client.as_mut() {
                Some(client) => client.on_frame(&bytes).map_err(|e| e.to_string())?,
                None => return Err("no protocol state".into()),
            };
            match incoming {
                Incoming::Challenge(c) => {
                    let hello = conn
                        .borrow()
                        .client
                        .as_ref()
                        .ok_or("no protocol state")?
                        .hello(&c, |msg| hs.key.sign_raw(msg))
                        .map_err(|e| e.to_string())?;
                    let _ = tx.unbounded_send(hello);
                }
                Incoming::Welcome { queued } => {
                    tracing::info!(relay = %url, queued, "connected to the relay");
                    conn.borrow_mut().out = Some(tx.clone());
                    // Whatever waited for the relay goes out now, not at its backoff's end.
                    hearth_core::federation::outbox::forget_backoff(hs);
                    hs.notifier.notify();
                }
                Incoming::Request(r) => {
                    let id = r.id;
                    let request = request_to_http(&r).map_err(|e| e.to_string())?;
                    let answering = hearth_core::federation::arrival::handle_in_order(hs, request);
                    let tx = tx.clone();
                    tokio::task::spawn_local(async move {
                        let answer = answering.await;
                        if let Ok(frame) = response_frame(id, &answer) {
                            let _ = tx.unbounded_send(frame);
                        }
                    });
                }
                Incoming::Response(r) => {
                    let answer = response_to_http(&r).map_err(|e| e.to_string())?;
                    let waiting = conn.borrow_mut().pending.remove(&r.id);
                    if let Some(waiting) = waiting {
                        let _ = waiting.send(answer);
                    }
                }
            }
        }
        Ok::<(), String>(())
    };
    futures::pin_mut!(writer);
    futures::pin_mut!(reader);
    match futures::future::select(reader, writer).await {
        futures::future::Either::Left((result, _)) => result,
        futures::future::Either::Right(((), _)) => Err("the relay socket closed".into()),
    }
}

#[cfg(test)]
mod tests {
    /// The relay's client marks held answers with the header the core's queue looks for.
    #[test]
    fn the_held_header_is_the_cores() {
        assert_eq!(
            hearth_relay_proto::client::HELD_HEADER,
            hearth_core::federation::transport::HELD_HEADER
        );
    }
}
