//! Trust without a global authority (issue 17): a transparency log per cell ([`log`]) and
//! the authorities' threshold key ([`threshold`]).

pub mod log;
pub mod threshold;
