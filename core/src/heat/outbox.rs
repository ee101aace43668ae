//! Class-A first: the order the node's outbox sends frames in while the thermal
//! subsystem is on.

/// Puts Class-A frames (everything but workload: membership, routing, time, thermal
/// signals, leases) before workload frames (`Data`, `Kv`, object-store shards), keeping
/// each class's order: the node's outbox sends control before data (issue 15). The class is
/// [`crate::wire::is_class_a`], the one the agents mark DSCP CS6 for the links' priority
/// queues; it reads the kind byte of each encoded frame, so forwarded frames are ordered
/// too.
pub fn class_a_first(q: &mut std::collections::VecDeque<crate::io::Transmit>) {
    let workload = |t: &crate::io::Transmit| !crate::wire::is_class_a(&t.bytes);
    if q.iter().any(workload) {
        let (mut a, b): (std::collections::VecDeque<_>, std::collections::VecDeque<_>) =
            q.drain(..).partition(|t| !workload(t));
        a.extend(b);
        *q = a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Transmit;

    #[test]
    fn class_a_frames_leave_before_workload_in_their_own_order() {
        let t = |to: u32, kind: u8| Transmit {
            to,
            bytes: vec![b'L', b'C', 2, kind],
        };
        let mut q: std::collections::VecDeque<Transmit> = [
            t(1, crate::wire::KIND_DATA),
            t(2, 1),
            t(3, crate::wire::KIND_KV),
            t(4, crate::wire::KIND_HEAT),
            t(5, 5),
        ]
        .into();
        class_a_first(&mut q);
        let order: Vec<u32> = q.iter().map(|t| t.to).collect();
        assert_eq!(order, vec![2, 4, 5, 1, 3]);
    }
}
