//! What each signal asks of the service, and READY=1 to systemd.

use nix::sys::signal::{SigSet, Signal};

/// The signals the service acts on ([`Request::of_signal`]).
pub(super) fn service_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        set.add(sig);
    }
    set
}

/// What a signal asks of the service. Left at its default, SIGHUP (a
/// dropped ssh session) would kill the process without removing its rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Request {
    Stop(&'static str),
    Reload,
    Stats,
}

impl Request {
    pub(super) fn of_signal(signo: u32) -> Option<Self> {
        let signal = Signal::try_from(i32::try_from(signo).ok()?).ok()?;
        Some(match signal {
            Signal::SIGTERM => Request::Stop("SIGTERM"),
            Signal::SIGINT => Request::Stop("SIGINT"),
            Signal::SIGQUIT => Request::Stop("SIGQUIT"),
            Signal::SIGHUP => Request::Reload,
            Signal::SIGUSR1 => Request::Stats,
            _ => return None,
        })
    }
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
pub(super) fn notify_systemd(message: &[u8]) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.as_encoded_bytes();
    let addr = match path.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path)),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(message, &addr));
    if let Err(e) = sent {
        tracing::warn!("notifying systemd: {e}");
    }
}
