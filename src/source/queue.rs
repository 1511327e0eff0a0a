//! Bounded queues from reader threads to the pipeline's event loop.
//!
//! Contract: a std channel whose sender also rings an eventfd, so the
//! pipeline waits for the audit socket, its signals and every queue in one
//! `epoll_wait`. A ring after every send (and when the sender is dropped)
//! and [`Receiver::drain`] silencing the bell before it takes what is
//! queued mean the loop never sleeps with an item queued; it may wake once
//! with nothing left to take, which costs one empty drain.

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
            tx,
            bell: Bell(bell.clone()),
        },
        Receiver { rx, bell },
    ))
}

pub struct Sender<T> {
    tx: mpsc::SyncSender<T>,
    /// Declared after `tx`, so it is dropped (and rings) after the channel
    /// is disconnected: the pipeline then sees the end, not an empty queue.
    bell: Bell,
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full (or the pipeline is gone).
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(item)?;
        self.bell.ring();
        Ok(())
    }

    /// Queues `item`, waiting for room; fails only when the pipeline is gone.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        self.tx.send(item)?;
        self.bell.ring();
        Ok(())
    }
}

/// The sender's side of the eventfd; rings once more when dropped.
struct Bell(Arc<EventFd>);

impl Bell {
    fn ring(&self) {
        // Fails only when the counter would overflow, i.e. it is already
        // ringing.
        let _ = self.0.write(1);
    }
}

impl Drop for Bell {
    fn drop(&mut self) {
        self.ring();
    }
}

/// Whether a queue's sender is still there after a [`Receiver::drain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    Open,
    /// The sender is gone and everything it sent was taken.
    Ended,
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

    /// Hands every queued item to `each`, without waiting. The bell is
    /// silenced first, so an item sent during the drain rings it again.
    pub fn drain(&self, mut each: impl FnMut(T)) -> Drained {
        let _ = self.bell.read();
        loop {
            match self.rx.try_recv() {
                Ok(item) => each(item),
                Err(TryRecvError::Empty) => return Drained::Open,
                Err(TryRecvError::Disconnected) => return Drained::Ended,
            }
        }
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

    fn drained<T>(rx: &Receiver<T>) -> (Vec<T>, Drained) {
        let mut items = Vec::new();
        let drained = rx.drain(|item| items.push(item));
        (items, drained)
    }

    #[test]
    fn a_send_rings_and_a_drain_silences_until_the_next() {
        let (tx, rx) = bounded::<u32>(2).expect("queue");
        assert!(!rung(&rx));
        tx.try_send(1).expect("room");
        assert!(rung(&rx));
        assert_eq!(drained(&rx), (vec![1], Drained::Open));
        assert!(!rung(&rx));
        tx.try_send(2).expect("room");
        assert!(rung(&rx));
        assert_eq!(drained(&rx), (vec![2], Drained::Open));
    }

    #[test]
    fn a_full_queue_refuses_without_ringing() {
        let (tx, rx) = bounded::<u32>(1).expect("queue");
        tx.try_send(1).expect("room");
        let _ = rx.bell.read();
        assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
        assert!(!rung(&rx));
        assert_eq!(drained(&rx), (vec![1], Drained::Open));
    }

    #[test]
    fn a_dropped_sender_rings_and_ends_after_the_last_item() {
        let (tx, rx) = bounded::<u32>(4).expect("queue");
        tx.send(7).expect("sent");
        assert_eq!(drained(&rx), (vec![7], Drained::Open));
        assert!(!rung(&rx));
        let sender = std::thread::spawn(move || {
            tx.send(8).expect("sent");
        });
        sender.join().expect("sender thread");
        assert!(rung(&rx));
        assert_eq!(drained(&rx), (vec![8], Drained::Ended));
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
