//! Request/reply on a netlink audit socket: status, rule list, rule
//! changes, registration. Records that arrive on the same socket while a
//! reply is awaited (the registered one) are handed to the caller.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_audit::{AuditMessage, RuleMessage, StatusMessage};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_AUDIT};
use nix::sys::socket::{MsgFlags, recv, setsockopt, sockopt};

use super::rules::{is_ours, our_excluded_type};

/// Kernel audit record types start here; lower ones are netlink and audit
/// control messages (acks, status replies).
pub(super) const FIRST_RECORD_TYPE: u16 = 1100;
pub(super) const AUDIT_REPLACE: u16 = 1329;
pub(super) const NLMSG_HDRLEN: usize = 16;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A netlink audit socket speaking request/reply.
pub struct AuditSocket {
    pub(super) socket: Socket,
    seq: u32,
}

impl AuditSocket {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_AUDIT)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0),
        )
        .map_err(io::Error::from)?;
        Ok(AuditSocket { socket, seq: 0 })
    }

    fn send(&mut self, message: AuditMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Receives the replies to request `seq` until `done` says so. Messages
    /// that are records (on the registered socket) go to `on_record`.
    fn replies(
        &mut self,
        seq: u32,
        on_record: &mut dyn FnMut(u16, &[u8]),
        mut done: impl FnMut(&NetlinkPayload<AuditMessage>) -> bool,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let len = recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(io::Error::from)?;
            let mut offset = 0;
            while offset + NLMSG_HDRLEN <= len {
                let (msg_len, msg_type, msg_seq) = header_fields(&buf[offset..len]);
                if msg_type >= FIRST_RECORD_TYPE && msg_seq != seq {
                    // A record: the unicast framing omits the header from nlmsg_len.
                    let end = (offset + NLMSG_HDRLEN + msg_len).min(len);
                    on_record(msg_type, &buf[offset + NLMSG_HDRLEN..end]);
                    offset = align4(end);
                    continue;
                }
                let end = (offset + msg_len.max(NLMSG_HDRLEN)).min(len);
                let message = NetlinkMessage::<AuditMessage>::deserialize(&buf[offset..end]);
                offset = align4(end);
                let Ok(message) = message else { continue };
                if message.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(err) = &message.payload
                    && let Some(code) = err.code
                {
                    return Err(io::Error::from_raw_os_error(-code.get()));
                }
                if done(&message.payload) {
                    return Ok(());
                }
            }
        }
    }

    /// Sends a request that only expects an acknowledgement.
    pub(super) fn request_ack(
        &mut self,
        message: AuditMessage,
        on_record: &mut dyn FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        let seq = self.send(message, NLM_F_REQUEST | NLM_F_ACK)?;
        self.replies(seq, on_record, |p| matches!(p, NetlinkPayload::Error(_)))
    }

    pub fn status(&mut self) -> io::Result<StatusMessage> {
        let seq = self.send(AuditMessage::GetStatus(None), NLM_F_REQUEST)?;
        let mut status = None;
        self.replies(seq, &mut |_, _| {}, |p| {
            if let NetlinkPayload::InnerMessage(AuditMessage::GetStatus(Some(s))) = p {
                status = Some(s.clone());
                true
            } else {
                false
            }
        })?;
        status.ok_or_else(|| io::Error::other("no status in the kernel's reply"))
    }

    pub fn set_status(&mut self, status: StatusMessage) -> io::Result<()> {
        self.request_ack(AuditMessage::SetStatus(status), &mut |_, _| {})
    }

    pub fn list_rules(&mut self) -> io::Result<Vec<RuleMessage>> {
        let seq = self.send(AuditMessage::ListRules(None), NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut rules = Vec::new();
        self.replies(seq, &mut |_, _| {}, |p| match p {
            NetlinkPayload::InnerMessage(AuditMessage::ListRules(Some(rule))) => {
                rules.push(rule.clone());
                false
            }
            NetlinkPayload::Done(_) => true,
            _ => false,
        })?;
        Ok(rules)
    }

    pub fn add_rule(&mut self, rule: RuleMessage) -> io::Result<()> {
        self.request_ack(AuditMessage::AddRule(rule), &mut |_, _| {})
    }

    pub fn delete_rule(&mut self, rule: RuleMessage) -> io::Result<()> {
        self.request_ack(AuditMessage::DelRule(rule), &mut |_, _| {})
    }

    /// Record types that mapwatch's exclusions (see [`UNUSED_RECORD_TYPES`])
    /// drop right now.
    pub fn excluded_record_types(&mut self) -> io::Result<Vec<u32>> {
        Ok(self
            .list_rules()?
            .iter()
            .filter_map(our_excluded_type)
            .collect())
    }

    /// Deletes every rule of ours: those carrying our key and our
    /// record-type exclusions (known by their shape); returns how many.
    pub fn delete_our_rules(&mut self) -> io::Result<usize> {
        let stale: Vec<RuleMessage> = self.list_rules()?.into_iter().filter(is_ours).collect();
        let count = stale.len();
        for rule in stale {
            match self.delete_rule(rule) {
                // Deleted meanwhile by someone else (`auditctl -D`).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(count)
    }
}

pub(super) fn header_fields(buf: &[u8]) -> (usize, u16, u32) {
    let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let msg_type = u16::from_ne_bytes([buf[4], buf[5]]);
    let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
    (len, msg_type, seq)
}

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}
