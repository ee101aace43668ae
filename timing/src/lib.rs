//! Clock and time-reference models (see the timing issue).
