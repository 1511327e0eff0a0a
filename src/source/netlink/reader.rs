//! Reading the record socket: `recvmmsg(2)` of record datagrams, the
//! framing quirk of unicast records, and the reader thread of userspace
//! backpressure.
//!
//! Contract: [`RecordReader`] reads the record socket without blocking;
//! with [`Backpressure::Userspace`], [`spawn_record_reader`] does so on a
//! thread that drops and counts whole batches when the pipeline's queue is
//! full. ENOBUFS is counted, not fatal.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;
use std::time::Instant;

use netlink_sys::Socket;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

#[cfg(doc)]
use super::Backpressure;
use super::session::RecordSocket;
use super::socket::{AUDIT_REPLACE, FIRST_RECORD_TYPE, NLMSG_HDRLEN, align4, header_fields};
use crate::source::queue::Sender;
use crate::source::{RecordBatch, SourceStats};

/// MAX_AUDIT_MESSAGE_LENGTH is 8970; leave room for the header.
const RECORD_BUF_LEN: usize = 16 * 1024;

/// The record socket and the buffers it is read into. The pipeline reads it
/// itself (no queue, no copy) with [`Backpressure::Kernel`], where the
/// kernel's backlog is the only queue; [`spawn_record_reader`] reads it on a
/// thread of its own with [`Backpressure::Userspace`].
pub struct RecordReader {
    socket: Socket,
    datagrams: Datagrams,
    multicast: bool,
}

impl RecordReader {
    /// Takes the socket over; returns the reader and the records that
    /// arrived while registration was being acknowledged.
    pub fn new(socket: RecordSocket) -> (Self, RecordBatch) {
        let reader = RecordReader {
            socket: socket.socket,
            datagrams: Datagrams::new(),
            multicast: socket.multicast,
        };
        (reader, socket.early_records)
    }

    /// Readable when records are queued: the fd to wait on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Hands each queued record (its arrival time, type and text) to
    /// `each`, without waiting, until the socket's queue is empty or about
    /// `max` records came; returns how many.
    pub fn receive(
        &mut self,
        max: usize,
        stats: &SourceStats,
        each: &mut impl FnMut(Instant, u16, &[u8]),
    ) -> io::Result<usize> {
        let now = Instant::now();
        let fd = self.socket.as_raw_fd();
        let mut records = 0;
        loop {
            match self.datagrams.receive(fd) {
                Ok(count) => {
                    for datagram in self.datagrams.iter(count) {
                        records += split_records(datagram, self.multicast, &mut |t, text| {
                            each(now, t, text)
                        });
                    }
                    // Fewer than asked for: the queue was empty a moment
                    // ago, no need for an EAGAIN round trip.
                    if count < DATAGRAMS_PER_CALL || records >= max {
                        break;
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::ENOBUFS) => {
                    stats.enobufs.fetch_add(1, Ordering::Relaxed);
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        stats.count_batch(records);
        Ok(records)
    }
}

/// Reads records on a thread of its own until the pipeline is gone, so the
/// kernel keeps being drained while the pipeline is busy: each wake-up's
/// records (at most about `max_batch`) go on as one batch, dropped and
/// counted when the queue is full ([`Backpressure::Userspace`]).
pub fn spawn_record_reader(
    mut reader: RecordReader,
    tx: Sender<RecordBatch>,
    stats: Arc<SourceStats>,
    max_batch: usize,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("mapwatch-audit".into())
        .spawn(move || {
            loop {
                let mut ready = [PollFd::new(reader.fd(), PollFlags::POLLIN)];
                match poll(&mut ready, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!("waiting for audit records: {e}");
                        return;
                    }
                }
                let mut batch = RecordBatch::default();
                let read = reader.receive(max_batch, &stats, &mut |_, t, text| batch.push(t, text));
                if let Err(e) = read {
                    tracing::error!("reading audit records: {e}");
                    return;
                }
                if !batch.is_empty() && !send_or_drop(&tx, batch, &stats) {
                    return;
                }
            }
        })
}

/// Queues `batch`, or drops and counts it when the queue is full; false
/// once the pipeline is gone.
fn send_or_drop(tx: &Sender<RecordBatch>, batch: RecordBatch, stats: &SourceStats) -> bool {
    let count = batch.len() as u64;
    match tx.try_send(batch) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            stats.dropped_records.fetch_add(count, Ordering::Relaxed);
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// Datagrams received per system call: the records of a few exec events.
const DATAGRAMS_PER_CALL: usize = 32;

/// Buffers for `recvmmsg(2)`: one slot per datagram. Every audit record is
/// one datagram, so one call per wake-up instead of one per record.
struct Datagrams {
    buf: Vec<u8>,
    lens: [usize; DATAGRAMS_PER_CALL],
}

impl Datagrams {
    fn new() -> Self {
        Datagrams {
            buf: vec![0u8; RECORD_BUF_LEN * DATAGRAMS_PER_CALL],
            lens: [0; DATAGRAMS_PER_CALL],
        }
    }

    /// Receives what is queued, up to [`DATAGRAMS_PER_CALL`] datagrams,
    /// without waiting; returns how many.
    fn receive(&mut self, fd: RawFd) -> Result<usize, Errno> {
        let mut iovecs: [libc::iovec; DATAGRAMS_PER_CALL] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.buf[i * RECORD_BUF_LEN..].as_mut_ptr().cast(),
            iov_len: RECORD_BUF_LEN,
        });
        // SAFETY: an all-zero mmsghdr is valid (null name and control).
        let mut headers: [libc::mmsghdr; DATAGRAMS_PER_CALL] = unsafe { std::mem::zeroed() };
        for (header, iov) in headers.iter_mut().zip(iovecs.iter_mut()) {
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at one iovec of this frame, each
        // covering a disjoint RECORD_BUF_LEN slice of `self.buf`, all alive
        // for the call; the kernel writes at most iov_len bytes per slot.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                DATAGRAMS_PER_CALL as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let count = usize::try_from(received).map_err(|_| Errno::last())?;
        for (len, header) in self.lens.iter_mut().zip(&headers[..count]) {
            *len = (header.msg_len as usize).min(RECORD_BUF_LEN);
        }
        Ok(count)
    }

    /// The first `count` datagrams of the last [`Datagrams::receive`].
    fn iter(&self, count: usize) -> impl Iterator<Item = &[u8]> + '_ {
        self.lens[..count]
            .iter()
            .enumerate()
            .map(|(i, len)| &self.buf[i * RECORD_BUF_LEN..i * RECORD_BUF_LEN + len])
    }
}

/// Splits a datagram into records, handing each to `each`; returns how
/// many. Unicast records carry an `nlmsg_len` that omits the 16-byte header
/// (a kernel quirk kept for auditd's sake); multicast copies are correct.
pub fn split_records(datagram: &[u8], multicast: bool, each: &mut impl FnMut(u16, &[u8])) -> usize {
    let mut offset = 0;
    let mut records = 0;
    while offset + NLMSG_HDRLEN <= datagram.len() {
        let (len, msg_type, _) = header_fields(&datagram[offset..]);
        let payload_len = if multicast {
            len.saturating_sub(NLMSG_HDRLEN)
        } else {
            len
        };
        let start = offset + NLMSG_HDRLEN;
        let end = start.saturating_add(payload_len).min(datagram.len());
        if msg_type >= FIRST_RECORD_TYPE && msg_type != AUDIT_REPLACE {
            each(msg_type, &datagram[start..end]);
            records += 1;
        }
        offset = align4(end.max(start));
        if payload_len == 0 {
            break;
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(msg_type: u16, text: &[u8], header_in_len: bool) -> Vec<u8> {
        let len = text.len() + if header_in_len { NLMSG_HDRLEN } else { 0 };
        let mut d = Vec::new();
        d.extend_from_slice(&(len as u32).to_ne_bytes());
        d.extend_from_slice(&msg_type.to_ne_bytes());
        d.extend_from_slice(&0u16.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(text);
        d
    }

    #[test]
    fn unicast_quirk_framing() {
        let text = b"audit(1.000:1): argc=1 a0=\"x\"";
        let mut batch = RecordBatch::default();
        split_records(&datagram(1309, text, false), false, &mut |t, x| {
            batch.push(t, x)
        });
        split_records(&datagram(1309, text, true), true, &mut |t, x| {
            batch.push(t, x)
        });
        let records: Vec<_> = batch.iter().collect();
        assert_eq!(records, vec![(1309, &text[..]), (1309, &text[..])]);
    }

    #[test]
    fn truncated_and_replace_messages() {
        let mut batch = RecordBatch::default();
        let mut push = |t, x: &[u8]| batch.push(t, x);
        assert_eq!(
            split_records(
                &datagram(1300, b"audit(1.000:1): x=1", true),
                false,
                &mut push
            ),
            1
        );
        assert_eq!(
            split_records(
                &datagram(AUDIT_REPLACE, b"audit(1.000:2): pid=1", false),
                false,
                &mut push,
            ),
            0
        );
        assert_eq!(split_records(&[1, 2, 3], false, &mut push), 0);
        assert_eq!(batch.len(), 1);
    }
}
