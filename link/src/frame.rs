//! What a datagram is on a lab's link, for drivers that carry datagrams rather than frames.
//!
//! The wire engine shapes whole Ethernet frames: an agent's datagram of `n` bytes crosses
//! a veth link as a frame of `n + 42` bytes (Ethernet 14, IPv4 20 without options, UDP 8;
//! the agents' datagrams are at most 1400 bytes, so never fragmented). Rate and byte
//! limits count those bytes, and a corrupted bit can land anywhere in them. A driver that
//! carries datagrams (the simulator) offers [`udp_frame_len`] to the shaper and asks
//! [`corruption_of`] what the receiving host would make of a flipped bit, so a link means
//! the same thing there as on the wire.
//!
//! The receiving host checks almost every bit: the destination MAC (a frame for another
//! host is not taken), the EtherType, the IPv4 header checksum, and the UDP checksum over
//! the pseudo-header, the UDP header and the payload (the wire engine completes an
//! offloaded checksum before it flips the bit, so the damage is visible). Only the source
//! MAC (bits 48..96) is checked by nobody: such a frame is delivered intact.
//! `orchestrator/tests/wire_e2e.rs` (`corrupted_frames_fail_the_receivers_checks`) measures
//! this on a real link.

/// Bytes a UDP/IPv4 datagram gains on an Ethernet link: 14 + 20 + 8.
pub const UDP_FRAME_OVERHEAD_BYTES: usize = 42;

/// Bits of the source MAC address in an Ethernet frame: nobody checks them.
const SOURCE_MAC_BITS: std::ops::Range<usize> = 48..96;

/// Length of the frame that carries a UDP datagram of `payload_len` bytes on a lab link.
pub fn udp_frame_len(payload_len: usize) -> usize {
    payload_len + UDP_FRAME_OVERHEAD_BYTES
}

/// What the receiving host does with a UDP frame whose bit `bit` (0 = most significant bit
/// of the first byte, as [`crate::shaper::Delivery::corrupt_bit`] counts) was flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The bit is in the source MAC: the datagram arrives intact.
    Unnoticed,
    /// A MAC, EtherType, IP or UDP check fails: the host drops the frame, the datagram
    /// never reaches the socket.
    Dropped,
}

/// See [`Corruption`].
pub fn corruption_of(bit: usize) -> Corruption {
    if SOURCE_MAC_BITS.contains(&bit) {
        Corruption::Unnoticed
    } else {
        Corruption::Dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_source_mac_bits_go_unnoticed() {
        assert_eq!(udp_frame_len(100), 142);
        assert_eq!(corruption_of(0), Corruption::Dropped, "destination MAC");
        assert_eq!(corruption_of(47), Corruption::Dropped);
        assert_eq!(corruption_of(48), Corruption::Unnoticed, "source MAC");
        assert_eq!(corruption_of(95), Corruption::Unnoticed);
        assert_eq!(corruption_of(96), Corruption::Dropped, "EtherType");
        assert_eq!(corruption_of(42 * 8 + 5), Corruption::Dropped, "payload");
        let unnoticed = (0..udp_frame_len(58) * 8)
            .filter(|b| corruption_of(*b) == Corruption::Unnoticed)
            .count();
        assert_eq!(unnoticed, 48);
    }
}
