//! Test hook (feature `test-hooks`): a UDP socket that drops every datagram
//! it sends or receives while paused, as a process stopped (SIGSTOP) or cut
//! off from the network would. Gossip, Raft, requests and invalidations all
//! share the one socket, so nothing reaches the node and nothing leaves it;
//! QUIC retransmits what is pending once the pause ends, as after a real
//! outage.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// A socket that forwards to the runtime's own while not paused.
struct Pausable {
    inner: Arc<dyn AsyncUdpSocket>,
    paused: Arc<AtomicBool>,
}

impl fmt::Debug for Pausable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pausable")
            .field("paused", &self.paused.load(Ordering::Relaxed))
            .finish()
    }
}

impl AsyncUdpSocket for Pausable {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.inner).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.paused.load(Ordering::Relaxed) {
            // Lost on the way, as far as the peer can tell.
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                // Dropped: read the next ones (or register to be woken).
                Poll::Ready(Ok(_)) if self.paused.load(Ordering::Relaxed) => continue,
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A server endpoint bound at `addr` (as `quinn::Endpoint::server`) whose
/// socket drops every datagram while the returned flag is set.
pub(super) fn server(
    config: quinn::ServerConfig,
    addr: SocketAddr,
) -> io::Result<(quinn::Endpoint, Arc<AtomicBool>)> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime found"))?;
    let paused = Arc::new(AtomicBool::new(false));
    let socket = Arc::new(Pausable {
        inner: runtime.wrap_udp_socket(socket)?,
        paused: Arc::clone(&paused),
    });
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )?;
    Ok((endpoint, paused))
}
