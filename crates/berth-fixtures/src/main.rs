//! `berth-fixtures`: writes berth's test images and archives to files, for
//! shell-driven tests and benchmarks (`docker load -i`, `docker import`, …).
//! Everything it writes comes from the `berth_fixtures` library.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_fixtures as fx;
use clap::{Parser, Subcommand};
use fx::ArchiveFormat;

#[derive(Parser)]
#[command(
    name = "berth-fixtures",
    about = "Write berth's test images and archives",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// busybox (from the host's busybox-static) as an image archive.
    Busybox {
        /// docker-save (docker 25+), legacy (docker < 25) or oci (pure OCI layout).
        #[arg(long, default_value = "docker-save")]
        format: ArchiveFormat,
        /// Repository tag(s) to record; repeatable.
        #[arg(long = "tag", default_value = "busybox:latest")]
        tags: Vec<String>,
        /// Output file, `-` for stdout.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// The bare busybox rootfs tar (for `docker import`).
    Rootfs {
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// The four-layer image of whiteouts, opaque dirs, hard links, long names, xattrs.
    Multilayer {
        #[arg(long, default_value = "docker-save")]
        format: ArchiveFormat,
        #[arg(long = "tag", default_value = "multilayer:latest")]
        tags: Vec<String>,
        /// Also include busybox:latest (which shares the base layer).
        #[arg(long)]
        with_busybox: bool,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// A big multi-layer image, streamed as a docker-save archive.
    Big {
        /// At least this many MiB of file content.
        #[arg(long, default_value_t = 120)]
        mb: usize,
        /// Number of data layers.
        #[arg(long, default_value_t = 4)]
        layers: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "big:latest")]
        tag: String,
        /// Put the busybox rootfs underneath (one more layer) so the image runs `sh`.
        #[arg(long)]
        busybox: bool,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Many small distinct images tagged many-<i>:latest, in one archive.
    Many {
        #[arg(long, default_value_t = 200)]
        count: usize,
        #[arg(long, default_value = "docker-save")]
        format: ArchiveFormat,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// A malicious image (tiny base + hostile layer) tagged malicious-NAME:latest.
    Malicious {
        /// One of `berth-fixtures list`'s malicious names.
        name: String,
        /// Write only the bare malicious layer tar (for `docker import`).
        #[arg(long)]
        raw: bool,
        #[arg(long, default_value = "docker-save")]
        format: ArchiveFormat,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// A corrupt docker-save archive.
    Corrupt {
        /// One of `berth-fixtures list`'s corrupt names.
        name: String,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Check a merged/extracted rootfs of the multilayer image against its
    /// expectations (xattrs are not checked); exits non-zero on a mismatch.
    CheckMultilayer {
        /// The root of the merged tree (e.g. an overlay mount).
        root: PathBuf,
    },
    /// List the malicious and corrupt fixture names with what they test.
    List,
    /// Write the standard set (busybox in all formats, rootfs, multilayer,
    /// many, every malicious and corrupt archive) into a directory.
    All {
        #[arg(short = 'd', long = "dir")]
        dir: PathBuf,
        /// Image count of many.tar.
        #[arg(long, default_value_t = 200)]
        many: usize,
    },
}

/// Writes to `path` (or stdout for `-`) through a temporary file renamed
/// into place, so a concurrent reader never sees a half-written fixture.
fn output(path: &Path, f: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let stdout = io::stdout();
        let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
        f(&mut w)?;
        w.flush()?;
        return Ok(());
    }
    let name = path.file_name().context("output path has no file name")?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        f(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn bytes_to(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    output(path, |w| Ok(w.write_all(bytes)?))
}

fn check_name(kind: &str, name: &str, known: &[&str]) -> anyhow::Result<()> {
    if !known.contains(&name) {
        bail!(
            "unknown {kind} fixture {name:?}; known: {}",
            known.join(", ")
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-fixtures: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let needs_busybox = match &cli.cmd {
        Cmd::Busybox { .. }
        | Cmd::Rootfs { .. }
        | Cmd::Multilayer { .. }
        | Cmd::CheckMultilayer { .. }
        | Cmd::All { .. } => true,
        Cmd::Big { busybox, .. } => *busybox,
        _ => false,
    };
    if needs_busybox {
        // Fail with a clear message rather than the library's panic.
        fx::busybox_binary()?;
    }
    match cli.cmd {
        Cmd::Busybox {
            format,
            tags,
            output: o,
        } => {
            let img = fx::busybox_image();
            output(&o, |w| fx::write_archive(format, w, &[(img, tags)]))
        }
        Cmd::Rootfs { output: o } => bytes_to(&o, &fx::busybox_rootfs_tar()?),
        Cmd::Multilayer {
            format,
            tags,
            with_busybox,
            output: o,
        } => {
            let mut images = vec![(fx::multilayer_image(), tags)];
            if with_busybox {
                images.push((fx::busybox_image(), vec!["busybox:latest".to_string()]));
            }
            output(&o, |w| fx::write_archive(format, w, &images))
        }
        Cmd::Big {
            mb,
            layers,
            seed,
            tag,
            busybox,
            output: o,
        } => {
            let mut big = fx::big_image(mb, layers, seed);
            big.busybox_base = busybox;
            output(&o, |w| {
                let s = big.write_docker_save(w, &tag)?;
                eprintln!(
                    "{tag}: {} layers, {} MiB of content, {} bytes of archive, id {}",
                    s.diff_ids.len(),
                    s.content_bytes >> 20,
                    s.archive_bytes,
                    s.config_digest
                );
                Ok(())
            })
        }
        Cmd::Many {
            count,
            format,
            output: o,
        } => {
            let images = fx::many_images(count);
            output(&o, |w| fx::write_archive(format, w, &images))
        }
        Cmd::Malicious {
            name,
            raw,
            format,
            output: o,
        } => {
            check_name("malicious", &name, fx::MALICIOUS_NAMES)?;
            if raw {
                return bytes_to(&o, &fx::malicious_layer(&name).expect("checked"));
            }
            let images = [(
                fx::malicious_image(&name),
                vec![format!("malicious-{name}:latest")],
            )];
            output(&o, |w| fx::write_archive(format, w, &images))
        }
        Cmd::Corrupt { name, output: o } => {
            check_name("corrupt", &name, fx::CORRUPT_NAMES)?;
            bytes_to(&o, &fx::corrupt_archive(&name).expect("checked"))
        }
        Cmd::CheckMultilayer { root } => {
            match fx::check_tree(&root, &fx::multilayer_expectations()) {
                Ok(()) => {
                    eprintln!(
                        "{}: matches the multilayer image's merged view",
                        root.display()
                    );
                    Ok(())
                }
                Err(fails) => {
                    for f in &fails {
                        eprintln!("{f}");
                    }
                    bail!("{}: {} mismatches", root.display(), fails.len())
                }
            }
        }
        Cmd::List => {
            println!("malicious (berth-fixtures malicious NAME):");
            for n in fx::MALICIOUS_NAMES {
                println!("  {n:<18} {}", fx::malicious_description(n).unwrap_or(""));
            }
            println!("corrupt (berth-fixtures corrupt NAME):");
            for n in fx::CORRUPT_NAMES {
                println!("  {n}");
            }
            Ok(())
        }
        Cmd::All { dir, many } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let bb = fx::busybox_image();
            let tags = vec!["busybox:latest".to_string()];
            for (file, format) in [
                ("busybox.tar", ArchiveFormat::DockerSave),
                ("busybox-legacy.tar", ArchiveFormat::Legacy),
                ("busybox-oci.tar", ArchiveFormat::Oci),
            ] {
                let images = [(bb.clone(), tags.clone())];
                output(&dir.join(file), |w| fx::write_archive(format, w, &images))?;
            }
            bytes_to(&dir.join("rootfs.tar"), &fx::busybox_rootfs_tar()?)?;
            let ml = [(
                fx::multilayer_image(),
                vec!["multilayer:latest".to_string()],
            )];
            output(&dir.join("multilayer.tar"), |w| {
                fx::write_docker_save_archive(w, &ml)
            })?;
            bytes_to(&dir.join("many.tar"), &fx::many_images_archive(many))?;
            for n in fx::MALICIOUS_NAMES {
                bytes_to(
                    &dir.join(format!("malicious-{n}.tar")),
                    &fx::malicious_archive(n),
                )?;
            }
            for (n, bytes) in fx::corrupt_archives() {
                bytes_to(&dir.join(format!("corrupt-{n}.tar")), &bytes)?;
            }
            eprintln!("wrote fixtures to {}", dir.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "berth-fixtures",
            "busybox",
            "--format",
            "legacy",
            "--tag",
            "a:b",
            "--tag",
            "c",
            "-o",
            "-",
        ])
        .unwrap();
        match cli.cmd {
            Cmd::Busybox {
                format,
                tags,
                output,
            } => {
                assert_eq!(format, ArchiveFormat::Legacy);
                assert_eq!(tags, ["a:b", "c"]);
                assert_eq!(output, Path::new("-"));
            }
            _ => panic!("wrong command"),
        }
        assert!(
            Cli::try_parse_from(["berth-fixtures", "busybox", "--format", "zip", "-o", "x"])
                .is_err()
        );
        let cli = Cli::try_parse_from(["berth-fixtures", "big", "-o", "f"]).unwrap();
        assert!(matches!(
            cli.cmd,
            Cmd::Big {
                mb: 120,
                layers: 4,
                ..
            }
        ));
    }

    #[test]
    fn output_replaces_the_file_atomically() {
        let dir = std::env::temp_dir().join(format!("berth-fixtures-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.tar");
        bytes_to(&f, b"one").unwrap();
        bytes_to(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert!(output(&f, |_| anyhow::bail!("boom")).is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temp file left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
