//! A fake chat server that misbehaves on purpose, so that the tests can check bench-client
//! names each fault. It speaks just enough of the chat protocol for `bench-client chat`:
//! the upgrade on `/chat/<room>?name=<name>`, a `"<name> just connected"` notice to the
//! members already in the room, and messages forwarded to the sender's room mates as wschat
//! forwards them: Binary verbatim, Text as a Text `"<name> says: <text>"`.
//!
//! Owns: one accept thread, one blocking reader thread per connection, and one hub thread
//! that owns every writer, counts Text and Binary messages (1, 2, 3, ... in the order the hub
//! sees them) and applies the configured `Fault` to them. Framing and the accept key come from
//! the server's own codec (`wschat::ws`), so only the forwarding rules here are fake.
//! Must never: bind anything but 127.0.0.1, or outlive the test (`Drop` stops the hub; the
//! readers end when bench-client closes its connections).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use wschat::ws::frame::{FrameHeader, Opcode, encode_frame};
use wschat::ws::handshake::{find_head_end, parse_request, switching_protocols};
use wschat::ws::mask::apply_mask;

/// What the hub does wrong. Message numbers count Text and Binary messages as the hub
/// receives them, from 1.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Forwards everything once, in order, to the sender's room only.
    Honest,
    /// Message n with n % every == 0 reaches nobody.
    Drop { every: u64 },
    /// Message n with n % every == 0 reaches every receiver twice.
    Duplicate { every: u64 },
    /// Message n with n % every == 0 is held back and forwarded right after the sender's
    /// next message (so receivers see the later one first), or after `REORDER_HOLD` if the
    /// sender sends nothing more (so reordering never becomes loss).
    Reorder { every: u64 },
    /// Message n with n % every == 0 goes to the members of another room instead of the
    /// sender's own.
    Misroute { every: u64 },
    /// From message `after` on, nothing is forwarded for `pause`; then everything held is
    /// forwarded in order and forwarding goes on as normal.
    Stall { after: u64, pause: Duration },
    /// At message `after`, the connection of one receiver of it is shut down (no Close
    /// frame), as a crashed or kicked connection would be.
    Disconnect { after: u64 },
}

/// Reorder: the longest a held message waits for its sender's next one.
const REORDER_HOLD: Duration = Duration::from_millis(200);

/// What the reader threads tell the hub.
enum Event {
    Joined {
        id: usize,
        room: String,
        name: String,
        writer: TcpStream,
    },
    Message {
        from: usize,
        opcode: Opcode,
        payload: Vec<u8>,
    },
    Left {
        id: usize,
    },
}

struct Member {
    id: usize,
    room: String,
    name: String,
    writer: TcpStream,
}

/// A message as its receivers get it: its type and the payload (Text already prefixed).
type Payload = (Opcode, Vec<u8>);

pub struct FakeServer {
    pub addr: String,
    events: Sender<Option<Event>>,
    hub: Option<thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(fault: Fault) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address").to_string();
        let (events, inbox) = mpsc::channel::<Option<Event>>();
        let hub = thread::spawn(move || Hub::new(fault).run(inbox));
        let to_hub = events.clone();
        thread::spawn(move || {
            for (id, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let to_hub = to_hub.clone();
                thread::spawn(move || serve(id, stream, to_hub));
            }
        });
        FakeServer {
            addr,
            events,
            hub: Some(hub),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        // `None` stops the hub; the accept thread is parked in accept() and ends with the
        // test process.
        let _ = self.events.send(None);
        if let Some(hub) = self.hub.take() {
            let _ = hub.join();
        }
    }
}

/// One connection: the upgrade, then its frames until Close or EOF.
fn serve(id: usize, mut stream: TcpStream, hub: Sender<Option<Event>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_len = loop {
        if let Some(end) = find_head_end(&buf, 0) {
            break end;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let Ok(request) = parse_request(&buf[..head_len]) else {
        return;
    };
    let Some(upgrade) = request.upgrade else {
        return;
    };
    let room = request
        .path
        .strip_prefix("/chat/")
        .unwrap_or("lobby")
        .to_string();
    let name = request
        .query
        .as_deref()
        .and_then(|q| q.strip_prefix("name="))
        .unwrap_or("anonymous")
        .to_string();
    buf.drain(..head_len);
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut writer = writer;
    if writer
        .write_all(&switching_protocols(&upgrade.key, &[]))
        .is_err()
    {
        return;
    }
    let _ = hub.send(Some(Event::Joined {
        id,
        room,
        name,
        writer,
    }));
    loop {
        while let Ok(Some((header, header_len))) = FrameHeader::parse(&buf) {
            let Ok(len) = usize::try_from(header.payload_len) else {
                return;
            };
            if buf.len() < header_len + len {
                break;
            }
            let mut payload = buf[header_len..header_len + len].to_vec();
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key, 0);
            }
            buf.drain(..header_len + len);
            match header.opcode {
                Opcode::Binary | Opcode::Text => {
                    let opcode = header.opcode;
                    let _ = hub.send(Some(Event::Message {
                        from: id,
                        opcode,
                        payload,
                    }));
                }
                Opcode::Close => {
                    let _ = hub.send(Some(Event::Left { id }));
                    return;
                }
                _ => {}
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
                let _ = hub.send(Some(Event::Left { id }));
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The one thread that forwards, and so the one place a fault is applied.
struct Hub {
    fault: Fault,
    members: Vec<Member>,
    /// Text and Binary messages seen so far.
    count: u64,
    /// Reorder: the message held back, its sender, and when it goes out at the latest.
    held: Option<(usize, Payload, Instant)>,
    /// Stall: when forwarding resumes, and what waits for it (sender, payload).
    stalled_until: Option<Instant>,
    stalled: Vec<(usize, Payload)>,
}

impl Hub {
    fn new(fault: Fault) -> Hub {
        Hub {
            fault,
            members: Vec::new(),
            count: 0,
            held: None,
            stalled_until: None,
            stalled: Vec::new(),
        }
    }

    fn run(mut self, inbox: Receiver<Option<Event>>) {
        loop {
            let next_deadline = match (self.stalled_until, &self.held) {
                (Some(until), _) => Some(until),
                (None, Some((_, _, until))) => Some(*until),
                (None, None) => None,
            };
            let wait = next_deadline.map_or(Duration::from_secs(3600), |until| {
                until.saturating_duration_since(Instant::now())
            });
            match inbox.recv_timeout(wait) {
                Ok(Some(event)) => self.handle(event),
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self
                .stalled_until
                .is_some_and(|until| Instant::now() >= until)
            {
                self.stalled_until = None;
                for (from, payload) in std::mem::take(&mut self.stalled) {
                    self.forward(from, &payload);
                }
            }
            if let Some((from, payload, _)) =
                self.held.take_if(|(_, _, until)| Instant::now() >= *until)
            {
                self.forward(from, &payload);
            }
        }
    }

    fn room_of(&self, id: usize) -> Option<String> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.room.clone())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Joined {
                id,
                room,
                name,
                writer,
            } => {
                let notice = encode_frame(
                    Opcode::Text,
                    &[format!("{name} just connected").as_bytes()],
                    None,
                );
                for m in self.members.iter_mut().filter(|m| m.room == room) {
                    let _ = m.writer.write_all(&notice);
                }
                self.members.push(Member {
                    id,
                    room,
                    name,
                    writer,
                });
            }
            Event::Left { id } => self.members.retain(|m| m.id != id),
            Event::Message {
                from,
                opcode,
                payload,
            } => {
                let payload = match opcode {
                    Opcode::Text => {
                        let name = self
                            .members
                            .iter()
                            .find(|m| m.id == from)
                            .map_or("anonymous", |m| m.name.as_str());
                        let mut said = format!("{name} says: ").into_bytes();
                        said.extend_from_slice(&payload);
                        (Opcode::Text, said)
                    }
                    _ => (opcode, payload),
                };
                self.count += 1;
                let count = self.count;
                let nth = |every: u64| every > 0 && count % every == 0;
                match self.fault {
                    Fault::Honest => self.forward(from, &payload),
                    Fault::Drop { every } => {
                        if !nth(every) {
                            self.forward(from, &payload);
                        }
                    }
                    Fault::Duplicate { every } => {
                        let copies = if nth(every) { 2 } else { 1 };
                        if let Some(room) = self.room_of(from) {
                            self.forward_copies(from, &room, &payload, copies);
                        }
                    }
                    Fault::Reorder { every } => {
                        let release = self.held.take_if(|(sender, _, _)| *sender == from);
                        if nth(every) && self.held.is_none() && release.is_none() {
                            self.held = Some((from, payload, Instant::now() + REORDER_HOLD));
                        } else {
                            self.forward(from, &payload);
                        }
                        if let Some((sender, held, _)) = release {
                            self.forward(sender, &held);
                        }
                    }
                    Fault::Misroute { every } => {
                        let own = self.room_of(from);
                        let other = self
                            .members
                            .iter()
                            .find(|m| Some(&m.room) != own.as_ref())
                            .map(|m| m.room.clone());
                        match other {
                            Some(room) if nth(every) => self.forward_to_room(from, &room, &payload),
                            _ => self.forward(from, &payload),
                        }
                    }
                    Fault::Disconnect { after } => {
                        if self.count == after {
                            let own = self.room_of(from);
                            if let Some(victim) = self
                                .members
                                .iter()
                                .find(|m| m.id != from && Some(&m.room) == own.as_ref())
                            {
                                let _ = victim.writer.shutdown(std::net::Shutdown::Both);
                            }
                        }
                        self.forward(from, &payload);
                    }
                    Fault::Stall { after, pause } => {
                        if self.count == after {
                            self.stalled_until = Some(Instant::now() + pause);
                        }
                        if self.stalled_until.is_some() {
                            self.stalled.push((from, payload));
                        } else {
                            self.forward(from, &payload);
                        }
                    }
                }
            }
        }
    }

    /// Forwards to the sender's room mates, as the real server does.
    fn forward(&mut self, from: usize, payload: &Payload) {
        if let Some(room) = self.room_of(from) {
            self.forward_to_room(from, &room, payload);
        }
    }

    fn forward_to_room(&mut self, from: usize, room: &str, payload: &Payload) {
        self.forward_copies(from, room, payload, 1);
    }

    /// Sends `copies` frames of `payload` in one write, so that a receiver gets them
    /// together: the test's drain may end as soon as the first one is counted, and a second
    /// copy of the run's last message must not be left behind in the socket.
    fn forward_copies(&mut self, from: usize, room: &str, payload: &Payload, copies: usize) {
        let (opcode, payload) = payload;
        let frame = encode_frame(*opcode, &[payload], None).repeat(copies);
        for m in self
            .members
            .iter_mut()
            .filter(|m| m.room == room && m.id != from)
        {
            let _ = m.writer.write_all(&frame);
        }
    }
}
