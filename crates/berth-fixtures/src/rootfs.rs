//! The busybox rootfs, built from the machine's busybox-static.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::tarw::{Entry, TarWriter};

/// Where busybox is looked for, in order (after `$BERTH_BUSYBOX`).
pub const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Applets the rootfs must have; tests rely on them.
pub const REQUIRED_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "true", "false", "sleep", "env", "id", "ps", "top", "mkdir", "rm",
    "touch", "wc", "head", "tail", "hostname", "grep", "sed", "seq", "yes", "mount", "ip", "ping",
    "nc", "wget", "vi", "kill", "stat",
];

/// `/etc/passwd` of the busybox rootfs.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// `/etc/group` of the busybox rootfs.
pub const GROUP: &str = "root:x:0:\ndaemon:x:1:\nusers:x:100:\nnogroup:x:65534:\n";

/// The busybox binary to put in images: `$BERTH_BUSYBOX` if set, else the
/// first of [`BUSYBOX_PATHS`] that exists. It must be statically linked
/// (Debian's `busybox-static`), since the image has no libc.
pub fn busybox_binary() -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("BERTH_BUSYBOX") {
        Some(p) => vec![PathBuf::from(p)],
        None => BUSYBOX_PATHS.iter().map(PathBuf::from).collect(),
    };
    for p in &candidates {
        if p.is_file() {
            let head = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            if has_interpreter(&head) {
                bail!(
                    "{} is dynamically linked; berth's test images need a static busybox \
                     (apt-get install busybox-static)",
                    p.display()
                );
            }
            return Ok(p.clone());
        }
    }
    bail!(
        "busybox not found (looked at {}); install busybox-static (apt-get install busybox-static) \
         or set BERTH_BUSYBOX",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whether an ELF64 little-endian image has a PT_INTERP program header
/// (i.e. is dynamically linked). Anything unparsable counts as static.
fn has_interpreter(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= elf.len() && u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

/// The applets `busybox --list` reports, sorted, without `busybox` itself.
pub fn busybox_applets(busybox: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list failed: {}", busybox.display(), out.status);
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox" && *a != "." && *a != "..")
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    let missing: Vec<&str> = REQUIRED_APPLETS
        .iter()
        .copied()
        .filter(|a| !applets.iter().any(|x| x == a))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} lacks applets the tests need: {}",
            busybox.display(),
            missing.join(" ")
        );
    }
    Ok(applets)
}

/// An uncompressed tar of a minimal busybox rootfs (see the crate docs).
/// Byte-identical across runs on the same machine.
pub fn busybox_rootfs_tar() -> anyhow::Result<Vec<u8>> {
    let bb = busybox_binary()?;
    let binary = std::fs::read(&bb).with_context(|| format!("reading {}", bb.display()))?;
    let applets = busybox_applets(&bb)?;
    let links: Vec<String> = applets.iter().map(|a| format!("bin/{a}")).collect();

    let mut t = TarWriter::new(Vec::with_capacity(binary.len() + 64 * 1024));
    t.entry(&Entry::dir("bin/", 0o755))?;
    // Go's (and docker's) walk order: sorted names within a directory.
    let mut bin: Vec<(&str, bool)> = links.iter().map(|l| (l.as_str(), true)).collect();
    bin.push(("bin/busybox", false));
    bin.sort();
    for (path, is_link) in bin {
        if is_link {
            t.entry(&Entry::symlink(path, "busybox"))?;
        } else {
            t.entry(&Entry::file(path, 0o755, &binary))?;
        }
    }
    t.entry(&Entry::dir("dev/", 0o755))?;
    t.entry(&Entry::dir("etc/", 0o755))?;
    t.entry(&Entry::file("etc/group", 0o644, GROUP.as_bytes()))?;
    t.entry(&Entry::file("etc/passwd", 0o644, PASSWD.as_bytes()))?;
    t.entry(&Entry::dir("home/", 0o755))?;
    t.entry(&Entry::dir("proc/", 0o555))?;
    t.entry(&Entry::dir("root/", 0o700))?;
    t.entry(&Entry::dir("sys/", 0o555))?;
    t.entry(&Entry::dir("tmp/", 0o1777))?;
    t.entry(&Entry::dir("usr/", 0o755))?;
    t.entry(&Entry::dir("usr/bin/", 0o755))?;
    t.entry(&Entry::dir("var/", 0o755))?;
    Ok(t.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    #[test]
    fn rootfs_has_the_promised_shape() {
        let tar = busybox_rootfs_tar().unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut entries = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let h = e.header().clone();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            assert_eq!(h.mtime().unwrap(), crate::FIXED_MTIME);
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            entries.insert(path, (h.entry_type(), h.mode().unwrap(), link, body));
        }
        for d in [
            "bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr/bin", "var",
        ] {
            assert!(entries[d].0.is_dir(), "{d}");
        }
        assert_eq!(entries["tmp"].1, 0o1777);
        let bb = &entries["bin/busybox"];
        assert!(bb.0.is_file());
        assert_eq!(bb.1, 0o755);
        assert_eq!(bb.3, std::fs::read(busybox_binary().unwrap()).unwrap());
        for a in REQUIRED_APPLETS {
            let e = &entries[&format!("bin/{a}")];
            assert!(e.0.is_symlink(), "{a}");
            assert_eq!(e.2.as_deref(), Some("busybox"));
        }
        assert!(
            String::from_utf8_lossy(&entries["etc/passwd"].3)
                .starts_with("root:x:0:0:root:/root:/bin/sh\n")
        );
        assert!(
            String::from_utf8_lossy(&entries["etc/passwd"].3).contains("nobody:x:65534:65534:")
        );
        for g in ["root:", "daemon:", "nogroup:", "users:"] {
            assert!(String::from_utf8_lossy(&entries["etc/group"].3).contains(g));
        }
        assert!(!entries.contains_key("etc/hostname"));
    }

    #[test]
    fn rootfs_is_deterministic() {
        assert_eq!(busybox_rootfs_tar().unwrap(), busybox_rootfs_tar().unwrap());
    }

    #[test]
    fn the_installed_busybox_is_static() {
        let bb = busybox_binary().unwrap();
        assert!(!has_interpreter(&std::fs::read(bb).unwrap()));
        // A dynamically linked binary of this machine is detected as such.
        if let Ok(ls) = std::fs::read("/bin/ls") {
            assert!(has_interpreter(&ls));
        }
    }
}
