//! Response bodies: small in-memory ones, and blob files streamed in large
//! chunks read ahead on a blocking thread (never the whole blob in memory).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::Metrics;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio_stream_shim::ReceiverStream;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Size of one read of a blob file.
pub const CHUNK: usize = 256 << 10;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn json(v: &serde_json::Value) -> Body {
    full(serde_json::to_vec(v).expect("json values serialize"))
}

/// A body fed by a channel: the sender pushes chunks (or an error, which
/// aborts the response).
pub fn channel(depth: usize) -> (tokio::sync::mpsc::Sender<io::Result<Bytes>>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(depth);
    let stream = ReceiverStream::new(rx).map(|r| r.map(Frame::data));
    (tx, StreamBody::new(stream).boxed_unsync())
}

/// Streams `len` bytes of `file` from `offset`, reading ahead up to three
/// chunks; what was handed to the connection is counted in `metrics`.
pub fn file(file: File, offset: u64, len: u64, metrics: Arc<Metrics>) -> Body {
    let (tx, body) = channel(3);
    tokio::task::spawn_blocking(move || {
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = CHUNK.min((end - pos) as usize);
            let mut buf = vec![0u8; n];
            let r = file.read_exact_at(&mut buf, pos);
            let failed = r.is_err();
            let item = r.map(|_| Bytes::from(buf));
            if tx.blocking_send(item).is_err() || failed {
                return; // the client went away, or the read failed (sent as an error)
            }
            metrics.bytes_sent.fetch_add(n as u64, Relaxed);
            pos += n as u64;
        }
    });
    body
}

/// A minimal `Stream` over a tokio mpsc receiver (tokio-stream's wrapper,
/// without the extra dependency).
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

    impl<T> ReceiverStream<T> {
        pub fn new(rx: tokio::sync::mpsc::Receiver<T>) -> Self {
            ReceiverStream(rx)
        }
    }

    impl<T> futures_util::Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn streams_a_file_range() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let m = Arc::new(Metrics::default());
        let b = file(f, 5, (data.len() - 10) as u64, m.clone());
        let got = b.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[5..data.len() - 5]);
        assert_eq!(m.bytes_sent.load(Relaxed), (data.len() - 10) as u64);
    }
}
