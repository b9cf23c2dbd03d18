//! A big multi-layer image, generated deterministically and streamed.
//!
//! Nothing is held in memory beyond a 64 KiB buffer and each layer's file
//! list: every layer tar is generated twice from its seed — once into a
//! hasher (for its diff ID and size, which the config and the tar headers
//! need first) and once into the archive.

use std::borrow::Cow;
use std::io::{self, Write};

use berth_types::{DiffId, Digest, Sha256Writer};
use serde_json::json;

use crate::archive::{Body, SaveImage, SaveLayer, docker_save_plan, parse_tag};
use crate::image::{DEFAULT_PATH, ImageSpec, config_json};
use crate::tarw::{Counting, Entry, TarWriter};

/// xorshift64* — small, fast, seedable; not for cryptography.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds diverge and 0 is fine.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// 16 symbols: one nibble of randomness per byte of "text" (gzip gets ~55%).
const ALPHABET: &[u8; 16] = b" etaoinsrhdlu\ncm";

/// Writes `size` bytes of file content from `seed`: 4 KiB blocks, three in
/// four text-like (compressible), one in four random (incompressible).
fn write_content(seed: u64, size: u64, w: &mut dyn Write) -> io::Result<()> {
    let mut rng = XorShift::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for block in buf[..n].chunks_mut(4096) {
            if rng.next_u64().is_multiple_of(4) {
                rng.fill(block);
            } else {
                for chunk in block.chunks_mut(16) {
                    let mut v = rng.next_u64();
                    for b in chunk {
                        *b = ALPHABET[(v & 15) as usize];
                        v >>= 4;
                    }
                }
            }
        }
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// A big image: `layers` data layers of about `total_mb / layers` MiB each
/// (files of 4 KiB to 4 MiB under `opt/big/l<i>/<group>/`), optionally on
/// top of the busybox rootfs. See [`big_image`].
#[derive(Clone, Debug)]
pub struct BigImage {
    pub total_mb: usize,
    pub layers: usize,
    pub seed: u64,
    /// Put the busybox rootfs under the data layers (one more layer), so the
    /// image can run `sh`.
    pub busybox_base: bool,
}

/// What [`BigImage::write_docker_save`] wrote.
#[derive(Clone, Debug)]
pub struct BigImageSummary {
    pub config_digest: Digest,
    pub diff_ids: Vec<DiffId>,
    pub layer_sizes: Vec<u64>,
    /// Bytes of file content in the data layers (≥ `total_mb` MiB).
    pub content_bytes: u64,
    pub archive_bytes: u64,
}

struct PlannedFile {
    path: String,
    size: u64,
    seed: u64,
}

const GROUPS: &[&str] = &[
    "assets",
    "bin",
    "cache",
    "lib",
    "logs",
    "share/data",
    "share/doc",
    "var",
];

/// A big image of at least `total_mb` MiB of file content in `layers` layers
/// (at least 1), generated from `seed`. Write it with
/// [`BigImage::write_docker_save`] (streams, bounded memory).
pub fn big_image(total_mb: usize, layers: usize, seed: u64) -> BigImage {
    BigImage {
        total_mb,
        layers: layers.max(1),
        seed,
        busybox_base: false,
    }
}

impl BigImage {
    /// Number of layers in the image (data layers plus the busybox base, if any).
    pub fn layer_count(&self) -> usize {
        self.layers + usize::from(self.busybox_base)
    }

    fn files(&self, data_layer: usize) -> (Vec<String>, Vec<PlannedFile>) {
        let per_layer = (self.total_mb as u64 * 1024 * 1024).div_ceil(self.layers as u64);
        let mut rng =
            XorShift::new(self.seed ^ (data_layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut files = Vec::new();
        let mut used = vec![false; GROUPS.len()];
        let mut sum = 0;
        while sum < per_layer {
            let size = match rng.next_u64() % 20 {
                0 => rng.range(1 << 20, 4 << 20),
                1..=5 => rng.range(64 << 10, 1 << 20),
                _ => rng.range(4 << 10, 64 << 10),
            };
            let g = (rng.next_u64() % GROUPS.len() as u64) as usize;
            used[g] = true;
            let path = format!(
                "opt/big/l{data_layer}/{}/f{:05}.dat",
                GROUPS[g],
                files.len()
            );
            files.push(PlannedFile {
                path,
                size,
                seed: rng.next_u64(),
            });
            sum += size;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut dirs = vec![
            "opt/".to_string(),
            "opt/big/".to_string(),
            format!("opt/big/l{data_layer}/"),
        ];
        for (g, name) in GROUPS.iter().enumerate() {
            if used[g] {
                if let Some((parent, _)) = name.split_once('/') {
                    dirs.push(format!("opt/big/l{data_layer}/{parent}/"));
                }
                dirs.push(format!("opt/big/l{data_layer}/{name}/"));
            }
        }
        dirs.sort();
        dirs.dedup();
        (dirs, files)
    }

    /// Writes layer `index` (0-based, counting the busybox base if any) as an
    /// uncompressed tar.
    pub fn write_layer<W: Write + ?Sized>(&self, index: usize, w: &mut W) -> io::Result<()> {
        if self.busybox_base && index == 0 {
            let tar = crate::busybox_rootfs_tar().map_err(io::Error::other)?;
            return w.write_all(&tar);
        }
        let data_layer = index - usize::from(self.busybox_base);
        let (dirs, files) = self.files(data_layer);
        let mut t = TarWriter::new(w);
        for d in &dirs {
            t.entry(&Entry::dir(d, 0o755))?;
        }
        for f in &files {
            t.file_stream(&Entry::file(&f.path, 0o644, &[]), f.size, |w| {
                write_content(f.seed, f.size, w)
            })?;
        }
        t.finish()?;
        Ok(())
    }

    /// Diff ID and size of layer `index`, by generating it into a hasher.
    pub fn layer_digest(&self, index: usize) -> io::Result<(DiffId, u64)> {
        let mut h = Sha256Writer::new(io::sink());
        self.write_layer(index, &mut h)?;
        let (_, d, n) = h.finish();
        Ok((DiffId(d), n))
    }

    fn content_bytes(&self) -> u64 {
        (0..self.layers)
            .map(|l| self.files(l).1.iter().map(|f| f.size).sum::<u64>())
            .sum()
    }

    fn config(&self, diff_ids: &[DiffId]) -> Vec<u8> {
        let mut spec = ImageSpec::new(
            Vec::new(),
            json!({
                "Cmd": if self.busybox_base { json!(["sh"]) } else { json!(["/opt/big"]) },
                "Env": [DEFAULT_PATH],
                "Labels": {
                    "berth.fixture": "big",
                    "berth.fixture.seed": self.seed.to_string(),
                    "berth.fixture.total_mb": self.total_mb.to_string(),
                },
            }),
        );
        spec.empty_layer_history
            .push(r#"/bin/sh -c #(nop)  CMD ["sh"]"#.to_string());
        let created_by: Vec<String> = (0..self.layer_count())
            .map(|i| {
                if self.busybox_base && i == 0 {
                    "/bin/sh -c #(nop) ADD file:busybox in / ".to_string()
                } else {
                    let l = i - usize::from(self.busybox_base);
                    format!("/bin/sh -c #(nop) COPY dir:big-{l} in /opt/big/l{l}/ ")
                }
            })
            .collect();
        config_json(&spec, &created_by, diff_ids)
    }

    /// Writes the image as a docker 25+ `docker save` archive tagged `tag`,
    /// streaming: memory stays bounded whatever `total_mb` is.
    pub fn write_docker_save<W: Write + ?Sized>(
        &self,
        w: &mut W,
        tag: &str,
    ) -> anyhow::Result<BigImageSummary> {
        let digests: Vec<(DiffId, u64)> = (0..self.layer_count())
            .map(|i| self.layer_digest(i))
            .collect::<io::Result<_>>()?;
        let diff_ids: Vec<DiffId> = digests.iter().map(|(d, _)| *d).collect();
        let config = self.config(&diff_ids);
        let config_digest = Digest::of(&config);
        let layers = digests
            .iter()
            .enumerate()
            .map(|(i, (d, size))| SaveLayer {
                diff_id: *d,
                body: Body::Stream {
                    size: *size,
                    write: Box::new(move |w: &mut dyn Write| self.write_layer(i, w)),
                },
            })
            .collect();
        let image = SaveImage {
            config_json: Cow::Owned(config),
            layers,
            tags: vec![parse_tag(tag)?],
        };
        let mut counting = Counting { w, n: 0 };
        docker_save_plan(vec![image])?.write(&mut counting)?;
        Ok(BigImageSummary {
            config_digest,
            diff_ids,
            layer_sizes: digests.iter().map(|(_, s)| *s).collect(),
            content_bytes: self.content_bytes(),
            archive_bytes: counting.n,
        })
    }
}

/// [`big_image`]`(total_mb, layers, seed)` written as a docker-save archive
/// to `w`, streaming.
pub fn write_big_image_docker_save<W: Write + ?Sized>(
    w: &mut W,
    total_mb: usize,
    layers: usize,
    seed: u64,
    tag: &str,
) -> anyhow::Result<BigImageSummary> {
    big_image(total_mb, layers, seed).write_docker_save(w, tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_deterministic_and_spread() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = XorShift::new(1);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = XorShift::new(1);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert_ne!(XorShift::new(1).next_u64(), XorShift::new(2).next_u64());
        let mut r = XorShift::new(0);
        let ones: u32 = (0..1000).map(|_| r.next_u64().count_ones()).sum();
        assert!((30_000..34_000).contains(&ones), "{ones}");
    }

    #[test]
    fn content_is_compressible_ish() {
        let mut data = Vec::new();
        write_content(5, 1 << 20, &mut data).unwrap();
        assert_eq!(data.len(), 1 << 20);
        let gz = crate::Compression::Gzip.compress(&data);
        let ratio = gz.len() as f64 / data.len() as f64;
        assert!((0.4..0.9).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn small_big_image_layers_are_valid_and_deterministic() {
        let img = big_image(3, 2, 42);
        let mut l0 = Vec::new();
        img.write_layer(0, &mut l0).unwrap();
        let (d, n) = img.layer_digest(0).unwrap();
        assert_eq!(d.0, Digest::of(&l0));
        assert_eq!(n, l0.len() as u64);
        let mut ar = tar::Archive::new(&l0[..]);
        let mut files = 0;
        let mut bytes = 0;
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            if e.header().entry_type().is_file() {
                files += 1;
                bytes += e.header().size().unwrap();
            }
        }
        assert!(files > 3, "{files}");
        assert!(bytes >= 3 * 1024 * 1024 / 2, "{bytes}");
        assert_ne!(img.layer_digest(1).unwrap().0, d);
        assert_ne!(big_image(3, 2, 43).layer_digest(0).unwrap().0, d);
    }
}
