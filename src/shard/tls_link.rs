//! A connection's TLS link: its rustls session and the frames waiting to be sealed.
//!
//! Frames queue here as plaintext, shared like every other receiver's; they are sealed into
//! records only when the connection's previous records have all left (its outbox is empty).
//! A slow reader's backlog therefore stays plaintext, which the slow-consumer policy can cut
//! (frames not yet started are dropped), while records, once made, are always sent whole:
//! TLS numbers them, and a missing one would break the stream.
//!
//! Owns: the session and the unsealed frames. Must never: do I/O (records go on the outbox
//! the shard passes in, and the flush sends them), seal onto a non-empty outbox, drop or cut
//! a record once made, or decide when a connection ends (flush.rs asks for close_notify).

use crate::io::Outbox;
use crate::tls::{Received, TlsError, TlsSession};
use crate::ws::SharedFrame;

#[derive(Debug)]
pub struct TlsLink {
    session: TlsSession,
    /// Frames not yet sealed, oldest first.
    plain: Outbox,
    /// close_notify was queued.
    closed: bool,
    /// The session failed; its alert (if any) is the last thing sent.
    pub failed: bool,
    /// Reused for each batch of records.
    records: Vec<u8>,
}

impl TlsLink {
    pub fn new(session: TlsSession) -> TlsLink {
        TlsLink {
            session,
            plain: Outbox::default(),
            closed: false,
            failed: false,
            records: Vec::new(),
        }
    }

    /// Decrypts received bytes into `plaintext` (see [`TlsSession::receive`]).
    pub fn receive(&mut self, bytes: &[u8], plaintext: &mut Vec<u8>) -> Result<Received, TlsError> {
        let received = self.session.receive(bytes, plaintext);
        if received.is_err() {
            self.failed = true;
        }
        received
    }

    pub fn push(&mut self, frame: SharedFrame) {
        if !self.failed {
            self.plain.push(frame);
        }
    }

    /// Plaintext bytes waiting to be sealed.
    pub fn queued_bytes(&self) -> usize {
        self.plain.queued_bytes()
    }

    /// A slow consumer's unsealed frames go; its records (in the outbox) still leave whole.
    pub fn drop_unstarted(&mut self) {
        self.plain.clear();
    }

    /// Queues close_notify once; the shard asks only when every frame has been sealed and
    /// sent.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.session.close();
        }
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    /// If `outbox` is empty, seals the queued frames (and moves handshake messages or an
    /// alert) into one buffer of records on it. Returns the frames sealed.
    pub fn seal_into(&mut self, outbox: &mut Outbox) -> usize {
        if !outbox.is_empty() {
            return 0;
        }
        let frames = if self.failed { 0 } else { self.seal_plain() };
        self.records.clear();
        if self.session.take_records(&mut self.records) {
            outbox.push(std::mem::take(&mut self.records).into());
        }
        frames
    }

    /// Whether anything is waiting to be sealed or sent.
    pub fn has_output(&self) -> bool {
        !self.plain.is_empty() || self.session.has_records()
    }

    /// Seals queued frames while rustls takes them; returns the frames sealed completely
    /// (a frame rustls took only part of keeps its rest at the front of the queue).
    fn seal_plain(&mut self) -> usize {
        let mut taken = 0;
        for slice in self.plain.slices() {
            let n = self.session.seal(slice);
            taken += n;
            if n < slice.len() {
                break;
            }
        }
        self.plain.advance(taken)
    }
}
