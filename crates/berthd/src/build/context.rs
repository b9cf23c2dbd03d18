//! The build context: the tar a client sends (plain, gzip or zstd),
//! extracted into a staging directory under the data root's `tmp/`, and the
//! file walks COPY and ADD make over it (or over an image's root).
//!
//! ```text
//! <data-root>/tmp/build-<random>/
//!   context/     the extracted context (confined: nothing lands outside it)
//!   layer-N.tar  a COPY/ADD step's layer before it is committed
//!   mnt-N/       a read-only overlay of an image (COPY --from, chown lookups)
//! ```
//!
//! The whole directory goes when the build ends (the [`Staging`] guard),
//! and `tmp/` is emptied at every daemon start, so a killed daemon leaves
//! nothing behind either.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use berth_dockerfile::dockerignore::Matcher;
use berth_snapshots::{ApplyOptions, apply_tar, decompress, detect_compression};
use berth_types::{Error, Result};
use sha2::{Digest as _, Sha256};

/// A staging directory under `tmp/`, removed (unmounting what is mounted
/// below it first) when dropped.
pub struct Staging {
    pub dir: PathBuf,
    mounts: Mutex<Vec<PathBuf>>,
    seq: std::sync::atomic::AtomicU64,
}

impl Staging {
    pub fn new(tmp: &Path) -> Result<Staging> {
        let dir = tmp.join(format!("build-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&dir)?;
        Ok(Staging {
            dir,
            mounts: Mutex::new(Vec::new()),
            seq: Default::default(),
        })
    }

    /// A fresh path inside the staging directory.
    pub fn path(&self, prefix: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!("{prefix}-{n}"))
    }

    /// Mount `layer_dirs` (top first) read-only; unmounted when the staging
    /// goes (or by [`Staging::unmount`]).
    pub fn mount_image(&self, layer_dirs: &[PathBuf]) -> Result<PathBuf> {
        let target = self.path("mnt");
        fs::create_dir_all(&target)?;
        if layer_dirs.is_empty() {
            return Ok(target); // scratch: an empty directory
        }
        if layer_dirs.len() == 1 {
            // overlayfs needs two lower dirs for a read-only mount; one
            // layer is its own root (read it, never write).
            return Ok(layer_dirs[0].clone());
        }
        berth_snapshots::mount_overlay_readonly(layer_dirs, &target)?;
        self.mounts.lock().unwrap().push(target.clone());
        Ok(target)
    }

    pub fn unmount(&self, target: &Path) {
        let mut m = self.mounts.lock().unwrap();
        if let Some(i) = m.iter().position(|p| p == target) {
            m.remove(i);
            if let Err(e) = berth_snapshots::unmount(target) {
                tracing::warn!(path = %target.display(), error = %e, "unmount build view");
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for m in self.mounts.lock().unwrap().drain(..) {
            if let Err(e) = berth_snapshots::unmount(&m) {
                tracing::warn!(path = %m.display(), error = %e, "unmount build view");
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "remove build staging");
        }
    }
}

/// The extracted context and what COPY needs to know about it.
pub struct Context {
    pub dir: PathBuf,
    pub ignore: Matcher,
    /// Content hashes of context files, by path relative to the context.
    hashes: Mutex<HashMap<PathBuf, [u8; 32]>>,
}

/// Read a context tar (plain, gzip or zstd) from `body` into `staging`.
pub fn receive(staging: &Staging, body: impl Read) -> Result<Context> {
    let dir = staging.dir.join("context");
    fs::create_dir(&dir)?;
    let mut r = BufReader::with_capacity(256 << 10, body);
    let c = detect_compression(&mut r)
        .map_err(|e| Error::invalid(format!("reading build context: {e}")))?;
    let mut r = decompress(r, c)?;
    apply_tar(&mut r, &dir, &ApplyOptions::default())
        .map_err(|e| Error::invalid(format!("invalid build context: {}", e.message)))?;
    let ignore = match fs::read_to_string(dir.join(".dockerignore")) {
        Ok(t) => Matcher::new(&t)
            .map_err(|e| Error::invalid(format!("failed to parse .dockerignore: {e:?}")))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Matcher::new("").expect("empty"),
        Err(e) => return Err(e.into()),
    };
    Ok(Context {
        dir,
        ignore,
        hashes: Mutex::new(HashMap::new()),
    })
}

/// Lexically clean a relative path; `None` when `..` climbs above the root.
pub fn clean_rel(p: &str) -> Option<PathBuf> {
    let mut out: Vec<OsString> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::Normal(n) => out.push(n.to_os_string()),
        }
    }
    Some(out.iter().collect())
}

/// Resolve `rel` inside `root`, following symlinks without ever leaving
/// `root` (`..` and absolute links stop at it, as in a chroot). With
/// `follow_last` false the last component is not followed.
pub fn resolve_in_root(root: &Path, rel: &Path, follow_last: bool) -> io::Result<PathBuf> {
    let mut queue: std::collections::VecDeque<OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(cur.iter());
        candidate.push(&name);
        let last = queue.is_empty();
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (!last || follow_last) => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    cur.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => queue.push_front(n.to_os_string()),
                        Component::ParentDir => queue.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            _ => cur.push(name),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(cur.iter());
    Ok(out)
}

/// Shell-style pattern match of one path component (`*`, `?`, `[...]`).
pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// One thing to copy: a file, directory or symlink at `path`, going to
/// `dest` (relative to the image root).
#[derive(Debug, Clone)]
pub struct Item {
    pub path: PathBuf,
    pub dest: PathBuf,
    pub meta: fs::Metadata,
}

/// The sources of a COPY/ADD inside `root`, expanded (wildcards) and
/// resolved. `context` applies the context's rules: `..` escaping is an
/// error and `.dockerignore` hides files.
pub struct Source {
    /// Resolved on disk.
    pub path: PathBuf,
    /// Relative to `root`.
    pub rel: PathBuf,
}

pub fn expand_sources(
    root: &Path,
    written: &str,
    ctx: Option<&Context>,
    what: &str,
) -> Result<Vec<Source>> {
    let rel = match clean_rel(written) {
        Some(r) => r,
        None if ctx.is_some() => {
            return Err(Error::invalid(format!(
                "{what} failed: forbidden path outside the build context: {written} ()"
            )));
        }
        None => PathBuf::new(),
    };
    let not_found = || {
        if ctx.is_some() {
            Error::invalid(format!(
                "{what} failed: file not found in build context or excluded by .dockerignore: stat {written}: file does not exist"
            ))
        } else {
            Error::invalid(format!(
                "{what} failed: stat {written}: file does not exist"
            ))
        }
    };
    let excluded = |rel: &Path| -> bool {
        ctx.is_some_and(|c| {
            let s = rel.to_string_lossy();
            !s.is_empty() && c.ignore.excluded(&s)
        })
    };
    if !has_wildcards(written) {
        let path = resolve_in_root(root, &rel, true)?;
        let rel_resolved = path.strip_prefix(root).unwrap_or(&rel).to_path_buf();
        if fs::symlink_metadata(&path).is_err() || excluded(&rel) {
            return Err(not_found());
        }
        return Ok(vec![Source {
            path,
            rel: rel_resolved,
        }]);
    }
    // Wildcards: match component by component.
    let mut found: Vec<PathBuf> = vec![PathBuf::new()];
    for comp in rel.components() {
        let comp = comp.as_os_str().to_string_lossy().to_string();
        let mut next = Vec::new();
        for base in &found {
            if has_wildcards(&comp) {
                let dir = resolve_in_root(root, base, true)?;
                let Ok(rd) = fs::read_dir(&dir) else { continue };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect();
                names.sort();
                for n in names {
                    if glob_match::glob_match(&comp, &n) {
                        next.push(base.join(n));
                    }
                }
            } else {
                next.push(base.join(&comp));
            }
        }
        found = next;
    }
    let mut out = Vec::new();
    for rel in found {
        if excluded(&rel) {
            continue;
        }
        let path = resolve_in_root(root, &rel, true)?;
        if fs::symlink_metadata(&path).is_ok() {
            out.push(Source {
                rel: path.strip_prefix(root).unwrap_or(&rel).to_path_buf(),
                path,
            });
        }
    }
    if out.is_empty() {
        return Err(not_found());
    }
    Ok(out)
}

/// Every entry under `src` (itself first), with the destination path each
/// gets when `src` goes to `dest`: a directory's contents go into `dest`.
/// `.dockerignore` (when `ctx` is given) hides entries by their path
/// relative to the context root.
pub fn walk(src: &Source, dest: &Path, ctx: Option<&Context>, out: &mut Vec<Item>) -> Result<()> {
    let meta = fs::metadata(&src.path).or_else(|_| fs::symlink_metadata(&src.path))?;
    out.push(Item {
        path: src.path.clone(),
        dest: dest.to_path_buf(),
        meta: meta.clone(),
    });
    if meta.is_dir() {
        walk_dir(&src.path, &src.rel, dest, ctx, out)?;
    }
    Ok(())
}

fn walk_dir(
    dir: &Path,
    rel: &Path,
    dest: &Path,
    ctx: Option<&Context>,
    out: &mut Vec<Item>,
) -> Result<()> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let r = rel.join(&name);
        let meta = e.metadata()?;
        if let Some(c) = ctx
            && c.ignore.excluded(&r.to_string_lossy())
        {
            if meta.is_dir() && c.ignore.may_reinclude_under(&r.to_string_lossy()) {
                // An exception may bring back something below: descend,
                // without the directory entry itself.
                walk_dir(&e.path(), &r, &dest.join(&name), ctx, out)?;
            }
            continue;
        }
        out.push(Item {
            path: e.path(),
            dest: dest.join(&name),
            meta: meta.clone(),
        });
        if meta.is_dir() {
            walk_dir(&e.path(), &r, &dest.join(&name), ctx, out)?;
        }
    }
    Ok(())
}

impl Context {
    /// sha256 of a context file's bytes, computed once per build.
    pub fn file_hash(&self, path: &Path) -> Result<[u8; 32]> {
        if let Some(h) = self.hashes.lock().unwrap().get(path) {
            return Ok(*h);
        }
        let h = hash_file(path)?;
        self.hashes.lock().unwrap().insert(path.to_path_buf(), h);
        Ok(h)
    }
}

pub fn hash_file(path: &Path) -> Result<[u8; 32]> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// The content hash of what a COPY/ADD copies: every item's destination,
/// type, mode, owner and bytes (not its mtime), as the cache key needs.
pub fn hash_items(
    items: &[Item],
    ctx: Option<&Context>,
    owner: Option<(u32, u32)>,
) -> Result<String> {
    let mut h = Sha256::new();
    for it in items {
        h.update(it.dest.as_os_str().as_encoded_bytes());
        h.update([0]);
        let (uid, gid) = owner.unwrap_or((it.meta.uid(), it.meta.gid()));
        h.update(format!("{:o} {uid} {gid}", it.meta.mode()).as_bytes());
        let ft = it.meta.file_type();
        if ft.is_file() {
            let fh = match ctx {
                Some(c) => c.file_hash(&it.path)?,
                None => hash_file(&it.path)?,
            };
            h.update(fh);
        } else if ft.is_symlink() {
            h.update(fs::read_link(&it.path)?.as_os_str().as_encoded_bytes());
        }
        h.update([0]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A layer tar being written for a COPY/ADD step.
pub struct LayerTar<W: Write> {
    b: tar::Builder<W>,
    /// Directories already in the tar.
    dirs: std::collections::HashSet<PathBuf>,
}

/// How copied entries are owned and moded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attrs {
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<u32>,
}

impl<W: Write> LayerTar<W> {
    pub fn new(w: W) -> LayerTar<W> {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Complete);
        b.follow_symlinks(false);
        LayerTar {
            b,
            dirs: Default::default(),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_uid(uid as u64);
        h.set_gid(gid as u64);
        h.set_mtime(mtime);
        h.set_size(0);
        h
    }

    /// A directory entry (`dest` relative to the image root).
    pub fn dir(&mut self, dest: &Path, mode: u32, uid: u32, gid: u32, mtime: u64) -> Result<()> {
        if dest.as_os_str().is_empty() || !self.dirs.insert(dest.to_path_buf()) {
            return Ok(());
        }
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid, mtime);
        let name = format!("{}/", dest.display());
        self.b.append_data(&mut h, name, io::empty())?;
        Ok(())
    }

    /// Add `data` as a regular file.
    #[allow(clippy::too_many_arguments)]
    pub fn file(
        &mut self,
        dest: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
        size: u64,
        data: impl Read,
    ) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, mtime);
        h.set_size(size);
        self.b.append_data(&mut h, dest, data)?;
        Ok(())
    }

    pub fn symlink(
        &mut self,
        dest: &Path,
        target: &Path,
        uid: u32,
        gid: u32,
        mtime: u64,
    ) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, uid, gid, mtime);
        self.b.append_link(&mut h, dest, target)?;
        Ok(())
    }

    /// Add one walked item.
    pub fn item(&mut self, it: &Item, attrs: Attrs) -> Result<()> {
        let m = &it.meta;
        let (uid, gid) = attrs.owner.unwrap_or((m.uid(), m.gid()));
        let mtime = m.mtime().max(0) as u64;
        let ft = m.file_type();
        if ft.is_dir() {
            let mode = attrs.chmod.unwrap_or(m.mode());
            self.dir(&it.dest, mode, uid, gid, mtime)
        } else if ft.is_symlink() {
            let target = fs::read_link(&it.path)?;
            self.symlink(&it.dest, &target, uid, gid, mtime)
        } else if ft.is_file() {
            let mode = attrs.chmod.unwrap_or(m.mode());
            let f = fs::File::open(&it.path)?;
            self.file(&it.dest, mode, uid, gid, mtime, m.len(), f)
        } else {
            Ok(()) // sockets, fifos and devices are not copied
        }
    }

    pub fn finish(self) -> Result<()> {
        let mut w = self.b.into_inner()?;
        w.flush()?;
        Ok(())
    }
}

/// Unix permission bits of a `--chmod` value (octal only, as Docker's
/// legacy builder and BuildKit's default).
pub fn parse_chmod(s: &str) -> Result<u32> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| Error::invalid(format!("invalid chmod parameter {s:?}: must be octal")))
}

/// Whether `path` (inside an image root) is an existing directory.
pub fn is_dir_in(root: &Path, rel: &Path) -> bool {
    resolve_in_root(root, rel, true)
        .and_then(fs::metadata)
        .is_ok_and(|m| m.is_dir())
}

/// `user[:group]` to numbers, names looked up in the image's
/// /etc/passwd and /etc/group.
pub fn resolve_owner(root: &Path, spec: &str) -> Result<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Result<(u32, Option<u32>)> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok((n, None));
        }
        let p = resolve_in_root(root, Path::new(file), true)?;
        let text = fs::read_to_string(&p).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[0] == name {
                let id = f[2].parse().unwrap_or(0);
                let grp = f[3].parse().ok();
                return Ok((id, grp));
            }
        }
        Err(Error::invalid(format!(
            "unable to convert uid/gid chown string to host mapping: can't find {} {name} in {file}",
            if file.ends_with("passwd") {
                "uid for user"
            } else {
                "gid for group"
            }
        )))
    };
    let (uid, primary) = lookup("etc/passwd", u)?;
    let gid = match g {
        Some(g) => lookup("etc/group", g)?.0,
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_rel_refuses_escapes() {
        assert_eq!(clean_rel("a/./b/../c"), Some(PathBuf::from("a/c")));
        assert_eq!(clean_rel("/x"), Some(PathBuf::from("x")));
        assert_eq!(clean_rel("../x"), None);
        assert_eq!(clean_rel("a/../../x"), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("real/up")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("abs/sub"), true).unwrap(),
            r.join("real/sub")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("real/up/passwd"), true).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("abs"), false).unwrap(),
            r.join("abs")
        );
    }

    #[test]
    fn owners_resolve_from_the_image() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_owner(d.path(), "app").unwrap(), (1000, 1001));
        assert_eq!(resolve_owner(d.path(), "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_owner(d.path(), "12:34").unwrap(), (12, 34));
        assert!(resolve_owner(d.path(), "nobody").is_err());
    }
}
