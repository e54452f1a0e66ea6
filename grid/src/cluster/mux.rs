//! Multiplexed requests: many requests and their replies on one long-lived
//! bidirectional stream, told apart by the frame's request id.
//!
//! The requesting side keeps one such stream per connection. Each request
//! takes the next id, registers a waiter in [`Pending`] and writes its
//! frame; one reader task reads replies as they come and hands each to the
//! waiter of its id. A request that gives up (its deadline passed) leaves
//! the table, and its late reply is dropped; a reply for an id never issued
//! is a protocol error that closes the stream; a stream that breaks fails
//! every waiter at once, and the next request opens a new stream.
//!
//! The serving side (in [`super::transport`]) tells such a stream from a
//! one-shot one by its first frame's request id: not 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use hydracache_protocol::{Frame, Limits, Message};
use tokio::sync::oneshot;

use super::transport::TransportError;

/// What became of a reply that arrived for a request id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival<W> {
    /// Its request is waiting: here is the waiter.
    Deliver(W),
    /// Its request was issued but gave up (or was answered): drop it.
    Late,
    /// No request ever had this id: the peer is broken or hostile.
    Unknown,
}

/// The requests waiting on one multiplexed stream, by request id. Pure
/// state: the stream driver below owns the I/O.
#[derive(Debug)]
pub(crate) struct Pending<W> {
    /// The next id to issue; ids start at 1 (0 marks a one-shot stream).
    next: u64,
    waiting: HashMap<u64, W>,
    closed: bool,
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Pending {
            next: 1,
            waiting: HashMap::new(),
            closed: false,
        }
    }
}

impl<W> Pending<W> {
    /// Issues an id for a request whose reply goes to `waiter`, or `None`
    /// once the stream has closed.
    pub(crate) fn register(&mut self, waiter: W) -> Option<u64> {
        if self.closed {
            return None;
        }
        let id = self.next;
        self.next += 1;
        self.waiting.insert(id, waiter);
        Some(id)
    }

    /// The request `id` gave up: its slot goes, a late reply is dropped.
    pub(crate) fn abandon(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    /// A reply tagged `id` arrived.
    pub(crate) fn arrive(&mut self, id: u64) -> Arrival<W> {
        match self.waiting.remove(&id) {
            Some(waiter) => Arrival::Deliver(waiter),
            None if id != 0 && id < self.next => Arrival::Late,
            None => Arrival::Unknown,
        }
    }

    /// The stream is gone: no more ids, and every waiter is handed back to
    /// be failed.
    pub(crate) fn close(&mut self) -> Vec<W> {
        self.closed = true;
        self.waiting.drain().map(|(_, w)| w).collect()
    }

    /// Whether the stream has closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Requests waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

type Waiter = oneshot::Sender<Result<Frame, TransportError>>;

/// The requesting side of one multiplexed stream.
pub(crate) struct MuxStream {
    addr: SocketAddr,
    send: tokio::sync::Mutex<quinn::SendStream>,
    pending: Arc<Mutex<Pending<Waiter>>>,
}

fn broken(addr: SocketAddr, why: &str) -> TransportError {
    TransportError::Stream {
        addr,
        message: why.to_string(),
    }
}

/// Fails every waiter on `pending` with `why` and refuses new requests.
fn fail_all(pending: &Mutex<Pending<Waiter>>, addr: SocketAddr, why: &str) {
    let waiters = pending.lock().expect("pending").close();
    for waiter in waiters {
        let _ = waiter.send(Err(broken(addr, why)));
    }
}

/// Removes a request's slot when its future ends without a reply (its
/// deadline passed, or its caller went away).
struct Slot<'a> {
    pending: &'a Mutex<Pending<Waiter>>,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.pending.lock().expect("pending").abandon(self.id);
    }
}

impl MuxStream {
    /// Opens a multiplexed stream on `conn` and starts reading its replies.
    pub(crate) async fn open(
        conn: &quinn::Connection,
        limits: Limits,
    ) -> Result<Arc<MuxStream>, TransportError> {
        let addr = conn.remote_address();
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| broken(addr, &e.to_string()))?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(read_replies(recv, Arc::clone(&pending), limits, addr));
        Ok(Arc::new(MuxStream {
            addr,
            send: tokio::sync::Mutex::new(send),
            pending,
        }))
    }

    /// Whether the stream still takes requests.
    pub(crate) fn is_open(&self) -> bool {
        !self.pending.lock().expect("pending").is_closed()
    }

    /// Sends `message` and waits for its reply. Cancel-safe: dropping the
    /// future drops the request's slot.
    pub(crate) async fn request(
        &self,
        limits: &Limits,
        message: Message,
    ) -> Result<Frame, TransportError> {
        let (tx, rx) = oneshot::channel();
        let id = self
            .pending
            .lock()
            .expect("pending")
            .register(tx)
            .ok_or_else(|| broken(self.addr, "the request stream closed"))?;
        let _slot = Slot {
            pending: &self.pending,
            id,
        };
        let mut buf = BytesMut::with_capacity(256);
        Frame::new(id, message)
            .encode(limits, &mut buf)
            .map_err(|source| TransportError::Protocol {
                addr: self.addr,
                source,
            })?;
        {
            let mut send = self.send.lock().await;
            if let Err(e) = send.write_all(&buf).await {
                drop(send);
                fail_all(&self.pending, self.addr, &e.to_string());
            }
        }
        match rx.await {
            Ok(reply) => reply,
            Err(_) => Err(broken(self.addr, "the request stream closed")),
        }
    }
}

/// Reads replies until the stream ends or breaks, handing each to its
/// waiter; then fails whoever still waits.
async fn read_replies(
    mut recv: quinn::RecvStream,
    pending: Arc<Mutex<Pending<Waiter>>>,
    limits: Limits,
    addr: SocketAddr,
) {
    let mut buf = BytesMut::new();
    let why = loop {
        loop {
            match Frame::decode_from(&mut buf, &limits) {
                Ok(Some(frame)) => {
                    let arrival = pending.lock().expect("pending").arrive(frame.request_id);
                    match arrival {
                        Arrival::Deliver(waiter) => {
                            let _ = waiter.send(Ok(frame));
                        }
                        Arrival::Late => {}
                        Arrival::Unknown => {
                            let _ = recv.stop(1u32.into());
                            fail_all(
                                &pending,
                                addr,
                                &format!("reply for unknown request id {}", frame.request_id),
                            );
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(source) => {
                    let _ = recv.stop(1u32.into());
                    fail_all(&pending, addr, &format!("bad reply frame: {source}"));
                    return;
                }
            }
        }
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => break "the peer ended the request stream".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    fail_all(&pending, addr, &why);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_reaches_the_waiter_of_its_id_in_any_order() {
        let mut p = Pending::default();
        let a = p.register("a").unwrap();
        let b = p.register("b").unwrap();
        assert_ne!(a, 0, "0 marks a one-shot stream");
        assert_ne!(a, b);
        assert_eq!(p.arrive(b), Arrival::Deliver("b"));
        assert_eq!(p.arrive(a), Arrival::Deliver("a"));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_late_reply_is_dropped_and_an_unknown_id_is_refused() {
        let mut p = Pending::default();
        let gave_up = p.register("late").unwrap();
        p.abandon(gave_up);
        assert_eq!(p.len(), 0, "the slot goes with the request");
        assert_eq!(p.arrive(gave_up), Arrival::Late);
        assert_eq!(p.arrive(gave_up), Arrival::Late, "answered twice");
        assert_eq!(p.arrive(0), Arrival::Unknown);
        assert_eq!(p.arrive(gave_up + 1), Arrival::Unknown, "never issued");
    }

    #[test]
    fn a_closed_stream_hands_back_every_waiter_and_takes_no_more() {
        let mut p = Pending::default();
        p.register(1).unwrap();
        p.register(2).unwrap();
        let mut failed = p.close();
        failed.sort();
        assert_eq!(failed, vec![1, 2]);
        assert!(p.is_closed());
        assert_eq!(p.register(3), None);
    }
}
