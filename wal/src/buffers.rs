//! Payload buffers handed back by the writer for the next append to reuse.
//!
//! Every admitted batch is encoded into a payload of about a megabyte, and the writer is done
//! with it once the group is written. Freeing it and allocating the next one anew made the
//! allocator take fresh pages from the kernel now and then, and a first touch is slow (a page
//! fault and a clear per page; on the VMs measured here ~2 ms per MiB, because the hypervisor
//! reclaims memory the guest has freed): an admission that hit it waited 5-10 ms. A few
//! buffers kept here cover every append in flight at the ingest rates measured.

use parking_lot::Mutex;

/// Buffers kept for reuse; more are freed. Appends in flight are bounded by the producers'
/// in-flight batches (8 with the benchmark's 4 producers × 2).
pub const PAYLOAD_BUFFERS_MAX: usize = 16;
/// A buffer with more capacity than this is freed rather than kept, so one huge batch does
/// not pin its memory forever.
pub const PAYLOAD_BUFFER_BYTES_MAX: usize = 32 << 20;

#[derive(Default)]
pub struct PayloadBuffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl PayloadBuffers {
    /// An empty buffer, reused if one is free.
    pub fn take(&self) -> Vec<u8> {
        self.free.lock().pop().unwrap_or_default()
    }

    /// Keeps `buffer` for a later [`Self::take`] if there is room and it is not too large.
    pub fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > PAYLOAD_BUFFER_BYTES_MAX {
            return;
        }
        buffer.clear();
        let mut free = self.free.lock();
        if free.len() < PAYLOAD_BUFFERS_MAX {
            free.push(buffer);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_the_pool_is_bounded() {
        let pool = PayloadBuffers::default();
        assert_eq!(pool.take().capacity(), 0, "an empty pool hands out a new buffer");
        let mut b = Vec::with_capacity(1000);
        b.extend_from_slice(b"abc");
        let ptr = b.as_ptr();
        pool.give(b);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same allocation is reused");
        for _ in 0..PAYLOAD_BUFFERS_MAX + 5 {
            pool.give(Vec::with_capacity(10));
        }
        assert_eq!(pool.len(), PAYLOAD_BUFFERS_MAX);
        pool.give(Vec::with_capacity(PAYLOAD_BUFFER_BYTES_MAX + 1));
        pool.give(Vec::new());
        assert_eq!(pool.len(), PAYLOAD_BUFFERS_MAX, "oversized and empty buffers are not kept");
    }
}
