//! Federation from the browser: one WebSocket to the Hearth relay that served the page
//! (`hearth-relay-proto`). The relay's challenge is signed with the server's key, which its
//! name spells; then requests travel both ways as binary frames: this server's requests to
//! other servers out, other servers' requests to this one in (answered by `Homeserver::handle`
//! like a client's). A transaction the relay stored for an offline peer counts as delivered.
//! When the socket drops, requests in flight fail (the outbound queue retries them) and the
//! socket is reopened with backoff.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use hearth_core::Homeserver;
use hearth_core::federation::transport::{Transport, TransportError};
use hearth_core::world::LocalBoxFuture;
use hearth_relay_proto::client::{
    Client, Incoming, as_delivered, request_to_http, response_frame, response_to_http,
};
use http::{Request, Response};
use js_sys::{ArrayBuffer, Uint8Array};
use ruma::ServerName;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, MessageEvent, WebSocket};

/// First wait before reconnecting, in milliseconds; it doubles with each failed attempt.
const FIRST_RECONNECT_MS: u32 = 250;

/// Longest wait between reconnection attempts, in milliseconds.
const MAX_RECONNECT_MS: u32 = 30_000;

/// A connection that stayed up this long was healthy: its loss starts the backoff over.
const STABLE_CONNECTION_MS: f64 = 10_000.0;

#[derive(Default)]
struct State {
    client: Option<Client>,
    /// The socket, once the relay has welcomed this server.
    socket: Option<WebSocket>,
    /// When the relay welcomed this server on the current socket (`Date.now()`).
    welcomed_at: Option<f64>,
    pending: HashMap<u32, oneshot::Sender<Response<Vec<u8>>>>,
    /// Kept alive with the socket they are attached to.
    handlers: Vec<Closure<dyn FnMut(JsValue)>>,
    /// The relay in use, and which [`connect`] call is current: the sockets and retries of an
    /// earlier one see a newer generation and stop.
    url: Option<String>,
    generation: u64,
}

/// The transport half; [`connect`] keeps the socket.
#[derive(Clone, Default)]
pub struct RelayTransport {
    state: Rc<RefCell<State>>,
}

impl RelayTransport {
    /// `connected`, `connecting` or `not connected`, for the status page.
    pub fn status(&self) -> &'static str {
        let s = self.state.borrow();
        match (&s.socket, &s.client) {
            (Some(_), _) => "connected",
            (None, Some(_)) => "connecting",
            (None, None) => "not connected",
        }
    }

    /// The relay this server uses (or tries to), if any.
    pub fn url(&self) -> Option<String> {
        self.state.borrow().url.clone()
    }
}

impl Transport for RelayTransport {
    fn send<'a>(
        &'a self,
        destination: &'a ServerName,
        request: Request<Vec<u8>>,
    ) -> LocalBoxFuture<'a, Result<Response<Vec<u8>>, TransportError>> {
        Box::pin(async move {
            let answer = {
                let mut s = self.state.borrow_mut();
                let State {
                    client,
                    socket,
                    pending,
                    ..
                } = &mut *s;
                let (Some(client), Some(socket)) = (client.as_mut(), socket.as_ref()) else {
                    return Err(TransportError::unreachable(
                        destination,
                        "not connected to the relay",
                    ));
                };
                let (id, frame) = client
                    .request(destination.as_str(), &request)
                    .map_err(|e| TransportError::connection(destination, e.to_string()))?;
                let (tx, rx) = oneshot::channel();
                if socket.send_with_u8_array(&frame).is_err() {
                    return Err(TransportError::connection(
                        destination,
                        "relay socket closed",
                    ));
                }
                pending.insert(id, tx);
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

/// Opens the socket to the relay at `relay` for `hs`, and reopens it whenever it closes. A
/// later call moves the server to another relay: the earlier socket is closed and its retries
/// end.
pub fn connect(hs: Homeserver, transport: RelayTransport, relay: String) {
    let generation = {
        let mut s = transport.state.borrow_mut();
        s.generation += 1;
        if let Some(old) = s.socket.take() {
            let _ = old.close();
        }
        s.client = None;
        s.pending.clear();
        s.url = Some(relay.clone());
        s.generation
    };
    open(hs, transport, relay, FIRST_RECONNECT_MS, generation);
}

/// The wait before the next attempt, when a socket opened with `delay_ms` closes: after a
/// connection that lasted, the first one again (else a relay restart after six earlier drops
/// in the page's life would cost each server 30 s); otherwise `delay_ms`, which doubles with
/// each attempt.
fn wait_after_close(delay_ms: u32, lasted_ms: Option<f64>) -> u32 {
    match lasted_ms {
        Some(ms) if ms >= STABLE_CONNECTION_MS => FIRST_RECONNECT_MS,
        _ => delay_ms,
    }
}

fn current(transport: &RelayTransport, generation: u64) -> bool {
    transport.state.borrow().generation == generation
}

fn open(hs: Homeserver, transport: RelayTransport, relay: String, delay_ms: u32, generation: u64) {
    if !current(&transport, generation) {
        return;
    }
    let client = match Client::new(&relay, hs.server_name().as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%relay, error = %e, "no relay to connect to");
            return;
        }
    };
    let socket = match WebSocket::new(&client.socket_url()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%relay, error = ?e, "cannot open the relay socket");
            retry(hs, transport, relay, delay_ms, generation);
            return;
        }
    };
    socket.set_binary_type(BinaryType::Arraybuffer);
    {
        let mut s = transport.state.borrow_mut();
        s.client = Some(client);
        s.socket = None;
        s.welcomed_at = None;
        s.handlers.clear();
    }

    let on_message = {
        let (hs, transport, socket) = (hs.clone(), transport.clone(), socket.clone());
        Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            if !current(&transport, generation) {
                return;
            }
            let Some(event) = event.dyn_ref::<MessageEvent>() else {
                return;
            };
            let Ok(buffer) = event.data().dyn_into::<ArrayBuffer>() else {
                return;
            };
            let bytes = Uint8Array::new(&buffer).to_vec();
            if let Err(e) = on_frame(&hs, &transport, &socket, &bytes) {
                tracing::warn!(error = %e, "bad frame from the relay; reconnecting");
                let _ = socket.close();
            }
        })
    };
    let on_close = {
        let (hs, transport, relay) = (hs.clone(), transport.clone(), relay.clone());
        Closure::<dyn FnMut(JsValue)>::new(move |_event: JsValue| {
            if !current(&transport, generation) {
                return;
            }
            let lasted_ms = {
                let mut s = transport.state.borrow_mut();
                s.socket = None;
                // Answers that will never come fail now; the queue retries.
                s.pending.clear();
                s.welcomed_at.take().map(|t| js_sys::Date::now() - t)
            };
            let wait = wait_after_close(delay_ms, lasted_ms);
            retry(
                hs.clone(),
                transport.clone(),
                relay.clone(),
                wait,
                generation,
            );
        })
    };
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let mut s = transport.state.borrow_mut();
    s.handlers.push(on_message);
    s.handlers.push(on_close);
}

fn retry(hs: Homeserver, transport: RelayTransport, relay: String, delay_ms: u32, generation: u64) {
    wasm_bindgen_futures::spawn_local(async move {
        // Jitter, so that servers the same relay dropped do not all come back at once.
        let jittered = (f64::from(delay_ms) * (0.5 + js_sys::Math::random())) as u32;
        gloo_timers::future::TimeoutFuture::new(jittered).await;
        let next = (delay_ms * 2).min(MAX_RECONNECT_MS);
        open(hs, transport, relay, next, generation);
    });
}

fn on_frame(
    hs: &Homeserver,
    transport: &RelayTransport,
    socket: &WebSocket,
    bytes: &[u8],
) -> Result<(), String> {
    let incoming = {
        let mut s = transport.state.borrow_mut();
        let client = s.client.as_mut().ok_or("no protocol state")?;
        client.on_frame(bytes).map_err(|e| e.to_string())?
    };
    match incoming {
        Incoming::Challenge(c) => {
            let s = transport.state.borrow();
            let client = s.client.as_ref().ok_or("no protocol state")?;
            let hello = client
                .hello(&c, |msg| hs.key.sign_raw(msg))
                .map_err(|e| e.to_string())?;
            socket
                .send_with_u8_array(&hello)
                .map_err(|e| format!("{e:?}"))?;
        }
        Incoming::Welcome { queued } => {
            tracing::info!(queued, "connected to the relay");
            {
                let mut s = transport.state.borrow_mut();
                s.socket = Some(socket.clone());
                s.welcomed_at = Some(js_sys::Date::now());
            }
            // Whatever waited for the relay goes out now, not at its backoff's end.
            hearth_core::federation::outbox::forget_backoff(hs);
            hs.notifier.notify();
        }
        Incoming::Request(r) => {
            let id = r.id;
            let request = request_to_http(&r).map_err(|e| e.to_string())?;
            let answering = hearth_core::federation::arrival::handle_in_order(hs, request);
            let socket = socket.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let answer = answering.await;
                if let Ok(frame) = response_frame(id, &answer) {
                    let _ = socket.send_with_u8_array(&frame);
                }
            });
        }
        Incoming::Response(r) => {
            let answer = response_to_http(&r).map_err(|e| e.to_string())?;
            let waiting = transport.state.borrow_mut().pending.remove(&r.id);
            if let Some(waiting) = waiting {
                let _ = waiting.send(answer);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    wasm_bindgen_test_configure!(run_in_shared_worker);

    #[wasm_bindgen_test]
    fn backoff_starts_over_only_after_a_lasting_connection() {
        // Never welcomed, or welcomed and dropped at once: keep backing off.
        assert_eq!(wait_after_close(8_000, None), 8_000);
        assert_eq!(wait_after_close(8_000, Some(50.0)), 8_000);
        // Up for a while: the next drop is a first failure.
        assert_eq!(
            wait_after_close(30_000, Some(STABLE_CONNECTION_MS)),
            FIRST_RECONNECT_MS
        );
    }
}
