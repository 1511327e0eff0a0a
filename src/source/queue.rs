//! Bounded queues from reader threads to the pipeline's event loop.
//!
//! Contract: a std channel whose sender also rings an eventfd, so the
//! pipeline waits for the audit socket, its signals and every queue in one
//! `epoll_wait`. A ring after every send (and when the sender is dropped)
//! means the loop never sleeps with an item queued; it may wake once with
//! nothing left to take, which costs one empty drain.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
#[cfg(test)]
use std::sync::mpsc::RecvError;
use std::sync::mpsc::{self, SendError, TryRecvError, TrySendError};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// A queue of at most `bound` items.
pub fn bounded<T>(bound: usize) -> io::Result<(Sender<T>, Receiver<T>)> {
    let bell = Arc::new(EventFd::from_flags(
        EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
    )?);
    let (tx, rx) = mpsc::sync_channel(bound);
    Ok((
        Sender {
            tx: Some(tx),
            bell: bell.clone(),
        },
        Receiver { rx, bell },
    ))
}

pub struct Sender<T> {
    /// `None` only while dropping, so the ring comes after the disconnect.
    tx: Option<mpsc::SyncSender<T>>,
    bell: Arc<EventFd>,
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full (or the pipeline is gone).
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let Some(tx) = &self.tx else {
            return Err(TrySendError::Disconnected(item));
        };
        tx.try_send(item)?;
        self.ring();
        Ok(())
    }

    /// Queues `item`, waiting for room; fails only when the pipeline is gone.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let Some(tx) = &self.tx else {
            return Err(SendError(item));
        };
        tx.send(item)?;
        self.ring();
        Ok(())
    }

    fn ring(&self) {
        // Fails only when the counter would overflow, i.e. it is already
        // ringing.
        let _ = self.bell.write(1);
    }
}

impl<T> Drop for Sender<T> {
    /// The pipeline learns that this source has ended.
    fn drop(&mut self) {
        drop(self.tx.take());
        self.ring();
    }
}

pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    bell: Arc<EventFd>,
}

impl<T> Receiver<T> {
    /// Readable when something may be queued: the fd to wait on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    /// Silences the bell before the queue is drained: an item sent during
    /// the drain rings it again.
    pub fn silence(&self) {
        let _ = self.bell.read();
    }

    /// The next queued item, without waiting; `Disconnected` once the
    /// sender is gone and everything it sent was taken.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// The next item, waiting for it.
    #[cfg(test)]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.rx.recv()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use super::*;

    fn rung<T>(rx: &Receiver<T>) -> bool {
        let mut fds = [PollFd::new(rx.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).expect("poll") == 1
    }

    #[test]
    fn a_send_rings_and_silence_waits_for_the_next() {
        let (tx, rx) = bounded::<u32>(2).expect("queue");
        assert!(!rung(&rx));
        tx.try_send(1).expect("room");
        assert!(rung(&rx));
        rx.silence();
        assert!(!rung(&rx));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_full_queue_refuses_without_ringing() {
        let (tx, rx) = bounded::<u32>(1).expect("queue");
        tx.try_send(1).expect("room");
        rx.silence();
        assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
        assert!(!rung(&rx));
    }

    #[test]
    fn a_dropped_sender_rings_and_disconnects_after_the_last_item() {
        let (tx, rx) = bounded::<u32>(4).expect("queue");
        let sender = std::thread::spawn(move || {
            tx.send(7).expect("sent");
        });
        sender.join().expect("sender thread");
        assert!(rung(&rx));
        assert_eq!(rx.try_recv(), Ok(7));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn send_waits_for_room() {
        let (tx, rx) = bounded::<u32>(1).expect("queue");
        tx.send(1).expect("room");
        let sender = std::thread::spawn(move || tx.send(2).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(rx.recv(), Ok(1));
        assert!(sender.join().expect("sender thread"));
        assert_eq!(rx.recv(), Ok(2));
    }
}
