//! The store's work in a twin run (issue 16): the puts still to send, those waiting for an
//! answer, and what was recorded; kept apart from [`super::objects`] (which drives it from
//! the [`super::driver::Twin`]) so that the driver can hold it without importing the
//! driver's own extension.
use std::collections::BTreeMap;
use std::time::Duration;

use lightcone_core::store::Class;
use lightcone_core::time::Instant;

use crate::experiment::action::ObjectLoad;
use crate::experiment::record::{ObjectPut, ObjectReadBack};

/// How long a put or a read may wait for its answer (the lab client's timeout).
pub(super) const OBJECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One put still to send: when, by which node, which object of which step.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) at: Instant,
    pub(super) node: u32,
    pub(super) load: usize,
    pub(super) i: u32,
}

/// A put sent and not answered yet.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) object: String,
    pub(super) hashes: Vec<String>,
    pub(super) sent: Instant,
}

/// The store's work in a twin run.
#[derive(Debug, Default)]
pub struct StoreWork {
    /// The class every put uses (the topology's `store:` section).
    pub class: Option<Class>,
    pub seed: u64,
    pub(super) loads: Vec<(u64, ObjectLoad)>,
    /// Due puts, in time order.
    pub(super) jobs: Vec<Job>,
    pub(super) pending: BTreeMap<(u32, u64), Pending>,
    /// Read answers by (node, request).
    pub reads: BTreeMap<(u32, u64), Result<Vec<u8>, String>>,
    pub objects: Vec<ObjectPut>,
    pub object_reads: Vec<ObjectReadBack>,
}

impl StoreWork {
    /// When the driver must next act for the store: a put due, or a put's deadline.
    pub fn due(&self) -> Option<Instant> {
        let job = self.jobs.first().map(|j| j.at);
        let deadline = self.pending.values().map(|p| p.sent + OBJECT_TIMEOUT).min();
        [job, deadline].into_iter().flatten().min()
    }
}
