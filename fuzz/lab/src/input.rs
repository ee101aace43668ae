//! The targets' input formats: total (any byte string is an input) and easy to write from
//! valid objects, so the seed corpora are real frames, entries and orders.

/// Datagrams one input delivers, at most (each may also advance time).
pub const MAX_RECORDS: usize = 16;
/// Bytes of a record's header: flags, neighbour, time step, length (u16, big endian).
pub const RECORD_HEADER: usize = 5;
/// Record flag: re-sign the datagram as its header's source before delivering it.
pub const RESIGN: u8 = 1;
/// Record flag: advance time by the record's step and fire every due timer first.
pub const TICK: u8 = 2;

/// One datagram of a [`crate::datagram`] input.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub flags: u8,
    /// Which neighbour of the node under test it arrives from (an index, taken modulo).
    pub from_ix: u8,
    /// Time to advance before it when [`TICK`] is set, in 10 ms steps.
    pub step_10ms: u8,
    pub bytes: &'a [u8],
}

/// Splits an input into records: `flags from step len:u16 bytes[len]`, repeated; a short
/// last record takes what is left.
pub fn records(mut data: &[u8]) -> Vec<Record<'_>> {
    let mut v = Vec::new();
    while data.len() >= RECORD_HEADER && v.len() < MAX_RECORDS {
        let len = usize::from(u16::from_be_bytes([data[3], data[4]]));
        let rest = &data[RECORD_HEADER..];
        let n = len.min(rest.len());
        v.push(Record {
            flags: data[0],
            from_ix: data[1],
            step_10ms: data[2],
            bytes: &rest[..n],
        });
        data = &rest[n..];
    }
    v
}

/// Appends one record (the inverse of [`records`]).
pub fn put_record(w: &mut Vec<u8>, flags: u8, from_ix: u8, step_10ms: u8, bytes: &[u8]) {
    let n = bytes.len().min(usize::from(u16::MAX));
    w.extend_from_slice(&[flags, from_ix, step_10ms]);
    w.extend_from_slice(&(n as u16).to_be_bytes());
    w.extend_from_slice(&bytes[..n]);
}

/// A reader of length-prefixed chunks (`len:u16 bytes[len]`); past the end every read
/// gives empty bytes or zero.
pub struct Chunks<'a>(pub &'a [u8]);

impl<'a> Chunks<'a> {
    pub fn bytes(&mut self) -> &'a [u8] {
        if self.0.len() < 2 {
            self.0 = &[];
            return &[];
        }
        let len = usize::from(u16::from_be_bytes([self.0[0], self.0[1]]));
        let rest = &self.0[2..];
        let n = len.min(rest.len());
        self.0 = &rest[n..];
        &rest[..n]
    }
    pub fn u8(&mut self) -> u8 {
        self.bytes().first().copied().unwrap_or(0)
    }
    pub fn u64(&mut self) -> u64 {
        let b = self.bytes();
        let mut a = [0u8; 8];
        let n = b.len().min(8);
        a[..n].copy_from_slice(&b[..n]);
        u64::from_be_bytes(a)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Appends one chunk (the inverse of [`Chunks::bytes`]).
pub fn put(w: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    w.extend_from_slice(&(n as u16).to_be_bytes());
    w.extend_from_slice(&b[..n]);
}

/// Appends a u64 chunk (read back by [`Chunks::u64`]).
pub fn put_u64(w: &mut Vec<u8>, x: u64) {
    put(w, &x.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_chunks_read_back_what_was_written() {
        let mut w = Vec::new();
        put_record(&mut w, RESIGN, 2, 7, b"abc");
        put_record(&mut w, TICK, 0, 1, b"");
        let r = records(&w);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].flags, r[0].from_ix, r[0].step_10ms), (RESIGN, 2, 7));
        assert_eq!(r[0].bytes, b"abc");
        assert_eq!(r[1].bytes, b"");
        let mut c = Vec::new();
        put(&mut c, b"xy");
        put_u64(&mut c, 42);
        let mut k = Chunks(&c);
        assert_eq!(k.bytes(), b"xy");
        assert_eq!(k.u64(), 42);
        assert!(k.is_empty());
        assert_eq!(k.bytes(), b"");
    }
}
