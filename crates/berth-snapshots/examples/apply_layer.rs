//! Applies one layer blob (plain, gzip or zstd tar) to a new directory and
//! reports the time taken:
//! `apply_layer [--pipelined] <blob> <empty-target-dir>`.
//!
//! `--pipelined` decompresses on a second thread, handing 1 MiB chunks to the
//! extracting thread, to measure what overlapping the two would gain.

use std::io::{BufReader, Read};
use std::sync::mpsc;
use std::time::Instant;

/// The receiving end of a decoder thread.
struct Chunks {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.cur = chunk?;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let pipelined = args.first().is_some_and(|a| a == "--pipelined");
    if pipelined {
        args.remove(0);
    }
    let [blob, target] = &args[..] else {
        eprintln!("usage: apply_layer [--pipelined] <blob> <empty-target-dir>");
        std::process::exit(2);
    };
    let start = Instant::now();
    let file = std::fs::File::open(blob).expect("open blob");
    let opts = berth_snapshots::ApplyOptions::default();
    let target = std::path::Path::new(target);
    let result = if pipelined {
        let (tx, rx) = mpsc::sync_channel(8);
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 20, file);
            let c = berth_snapshots::detect_compression(&mut r).expect("read blob");
            let mut d = berth_snapshots::decompress(r, c).expect("decoder");
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                match d.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        chunk.truncate(n);
                        if tx.send(Ok(chunk)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let chunks = Chunks {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        berth_snapshots::apply_tar(chunks, target, &opts)
    } else {
        let mut r = BufReader::with_capacity(1 << 20, file);
        let c = berth_snapshots::detect_compression(&mut r).expect("read blob");
        let tar = berth_snapshots::decompress(r, c).expect("decoder");
        berth_snapshots::apply_tar(tar, target, &opts)
    };
    match result {
        Ok(stats) => println!(
            "{} entries, {} bytes in {:.3}s{}",
            stats.entries,
            stats.size,
            start.elapsed().as_secs_f64(),
            if pipelined { " (pipelined)" } else { "" }
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
