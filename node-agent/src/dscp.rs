//! Marking datagrams with their traffic class (issue 15): Class-A traffic (control and
//! safety, [`lightcone_core::wire::is_class_a`]) leaves with DSCP CS6, workload data with
//! the default (0), so that a link with strict-priority classes — the wire engine, or a
//! prio qdisc in front of netem — sends control before data. The mark is per datagram, an
//! `IP_TOS` control message on `sendmsg` (Linux `ip_cmsg_send`), so one socket serves both.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The TOS byte of Class-A datagrams: DSCP CS6 (48) in the upper six bits.
pub const CLASS_A_TOS: u8 = 48 << 2;

/// The TOS byte a datagram leaves with.
pub fn tos_of(datagram: &[u8]) -> u8 {
    if lightcone_core::wire::is_class_a(datagram) {
        CLASS_A_TOS
    } else {
        0
    }
}

/// `try_send_to`, marked with the datagram's class. IPv6 peers (the lab numbers IPv4) go
/// unmarked.
pub fn try_send_marked(sock: &UdpSocket, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
    match to {
        SocketAddr::V4(v4) => sock.try_io(Interest::WRITABLE, || {
            sendmsg_tos(sock.as_raw_fd(), datagram, v4, tos_of(datagram))
        }),
        SocketAddr::V6(_) => sock.try_send_to(datagram, to),
    }
}

/// One non-blocking `sendmsg` of `buf` to `to` with an `IP_TOS` control message.
fn sendmsg_tos(fd: RawFd, buf: &[u8], to: SocketAddrV4, tos: u8) -> io::Result<usize> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsg carrying an int, 8-byte aligned.
    let mut control = [0u64; 4];
    let int_len = std::mem::size_of::<libc::c_int>() as libc::c_uint;
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe { (libc::CMSG_SPACE(int_len), libc::CMSG_LEN(int_len)) };
    debug_assert!(space as usize <= std::mem::size_of_val(&control));
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&sin as *const libc::sockaddr_in).cast_mut().cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` bytes we own, so the first header fits in it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IP;
        (*cmsg).cmsg_type = libc::IP_TOS;
        (*cmsg).cmsg_len = len as _;
        std::ptr::write_unaligned(
            libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
            libc::c_int::from(tos),
        );
    }
    // SAFETY: a valid msghdr on a socket we own.
    let rc = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over loopback the receiver sees the TOS each datagram was sent with
    /// (`IP_RECVTOS`): CS6 for a control frame, 0 for garbage (data).
    #[tokio::test]
    async fn datagrams_leave_with_their_class_mark() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let on: libc::c_int = 1;
        // SAFETY: an int socket option on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVTOS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let header = lightcone_core::wire::Header {
            kind: 0,
            ttl: 4,
            src: 1,
            dst: lightcone_core::wire::Dest::Node(2),
            seq: 1,
            hlc: 1,
            src_epoch: 1,
            dst_epoch: 1,
        };
        let control =
            lightcone_core::wire::encode(&header, &lightcone_core::wire::Payload::Boot, &key);
        let data = lightcone_core::wire::encode(
            &header,
            &lightcone_core::wire::Payload::Data(b"work".to_vec()),
            &key,
        );
        tx.writable().await.unwrap();
        for d in [&control, &data] {
            try_send_marked(&tx, d, to).expect("sent");
        }
        let mut seen = Vec::new();
        for _ in 0..2 {
            let mut buf = [0u8; 2048];
            let mut cbuf = [0u64; 8];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: zeroed msghdr, pointers to our buffers.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
            // SAFETY: a blocking recvmsg into our buffers.
            let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut msg, 0) };
            assert!(n > 0);
            let mut tos = None;
            // SAFETY: walking the control messages the kernel wrote.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TOS {
                        tos = Some(*libc::CMSG_DATA(c));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            seen.push((n as usize, tos));
        }
        assert_eq!(
            seen,
            [(control.len(), Some(CLASS_A_TOS)), (data.len(), Some(0))]
        );
    }
}
