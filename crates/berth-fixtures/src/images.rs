//! Ready-made images: busybox, the multi-layer edge-case image, many small images.

use std::path::Path;

use serde_json::json;

use crate::archive::docker_save_archive;
use crate::image::{BuiltImage, Compression, DEFAULT_PATH, ImageSpec, Layer, build_image, rfc3339};
use crate::rootfs::{PASSWD, busybox_rootfs_tar};
use crate::tarw::{Entry, LongNames, TarWriter};

fn busybox_spec_config() -> serde_json::Value {
    json!({"Cmd": ["sh"], "Env": [DEFAULT_PATH]})
}

fn add_rootfs_created_by(tar: &[u8]) -> String {
    format!(
        "/bin/sh -c #(nop) ADD file:{} in / ",
        berth_types::Digest::of(tar).hex()
    )
}

/// busybox as docker's `busybox:latest` looks: one layer (the
/// [`busybox_rootfs_tar`], gzip in the OCI form), `Cmd ["sh"]`, `Env [PATH=…]`.
/// Panics if busybox-static is missing (see [`crate::busybox_binary`]).
pub fn busybox_image() -> BuiltImage {
    let tar = busybox_rootfs_tar().expect("busybox rootfs (is busybox-static installed?)");
    let created_by = add_rootfs_created_by(&tar);
    let mut spec = ImageSpec::new(
        vec![Layer::new(tar, Compression::Gzip, created_by)],
        busybox_spec_config(),
    );
    spec.empty_layer_history
        .push(r#"/bin/sh -c #(nop)  CMD ["sh"]"#.to_string());
    build_image(&spec)
}

/// A path of more than 100 bytes, stored with a PAX `path` record.
pub const LONG_PAX_PATH: &str = "long/pax-directory-name-number-one-0123456789/pax-directory-name-number-two-0123456789/file-with-a-long-name-stored-via-pax.txt";
/// A path of more than 100 bytes, stored with a GNU `././@LongLink` entry.
pub const LONG_GNU_PATH: &str = "long/gnu-directory-name-number-one-0123456789/gnu-directory-name-number-two-0123456789/file-with-a-long-name-stored-via-gnu.txt";

/// `/etc/group` after layer 3 of the multilayer image.
pub const MULTILAYER_GROUP: &str =
    "root:x:0:\ndaemon:x:1:\nusers:x:100:\nnogroup:x:65534:\nberth:x:1000:\n";

fn dirs_of(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    (1..parts.len())
        .map(|i| parts[..i].join("/") + "/")
        .collect()
}

fn layer2_tar() -> Vec<u8> {
    let mut t = TarWriter::new(Vec::new());
    let mut put = |e: Entry<'_>| t.entry(&e).expect("tar into memory");
    put(Entry::dir("data/", 0o755));
    put(Entry::file("data/a", 0o644, b"a\n"));
    put(Entry::file("data/b", 0o644, b"b\n"));
    put(Entry::dir("etc/", 0o755));
    put(Entry::file("etc/motd", 0o644, b"motd v1\n"));
    put(Entry::dir("olddir/", 0o755));
    put(Entry::dir("olddir/sub/", 0o755));
    put(Entry::file("olddir/sub/y", 0o644, b"y\n"));
    put(Entry::file("olddir/x", 0o644, b"x\n"));
    t.finish().expect("tar into memory")
}

fn layer3_tar() -> Vec<u8> {
    let mut t = TarWriter::new(Vec::new());
    let mut put = |e: Entry<'_>| t.entry(&e).expect("tar into memory");
    // Whiteout of a whole directory.
    put(Entry::file(".wh.olddir", 0o644, b""));
    // Whiteout of a base file (a symlink to busybox).
    put(Entry::dir("bin/", 0o755));
    put(Entry::file("bin/.wh.false", 0o644, b""));
    // Opaque directory: data/a and data/b vanish, data/c appears.
    put(Entry::dir("data/", 0o755));
    put(Entry::file("data/.wh..wh..opq", 0o644, b""));
    put(Entry::file("data/c", 0o644, b"c\n"));
    // A replaced file and a deleted one (re-added by layer 4).
    put(Entry::dir("etc/", 0o755));
    put(Entry::file("etc/.wh.motd", 0o644, b""));
    put(Entry::file("etc/group", 0o644, MULTILAYER_GROUP.as_bytes()));
    // Files owned by uid/gid 1000.
    put(Entry::dir("home/", 0o755));
    put(Entry::dir("home/user/", 0o750).owner(1000, 1000));
    put(Entry::file("home/user/owned", 0o640, b"owned by 1000\n").owner(1000, 1000));
    // A hard link pair.
    put(Entry::dir("hl/", 0o755));
    put(Entry::file("hl/one", 0o644, b"hardlinked\n"));
    put(Entry::hardlink("hl/two", "hl/one"));
    // Long paths, one PAX, one GNU.
    for d in dirs_of(LONG_PAX_PATH) {
        put(Entry::dir(&d, 0o755));
    }
    put(Entry::file(LONG_PAX_PATH, 0o644, b"pax long path\n"));
    for d in dirs_of(LONG_GNU_PATH).into_iter().skip(1) {
        put(Entry::dir(&d, 0o755).long_names(LongNames::Gnu));
    }
    put(Entry::file(LONG_GNU_PATH, 0o644, b"gnu long path\n").long_names(LongNames::Gnu));
    // Names with a space and non-ASCII characters.
    put(Entry::dir("names/", 0o755));
    put(Entry::file("names/with space.txt", 0o644, b"space\n"));
    put(Entry::file(
        "names/\u{fc}n\u{ef}c\u{f6}d\u{e9}.txt",
        0o644,
        b"unicode\n",
    ));
    // Symlinks: relative, absolute, dangling.
    put(Entry::dir("sym/", 0o755));
    put(Entry::symlink("sym/abs", "/etc/passwd"));
    put(Entry::symlink("sym/dangling", "/nonexistent/target"));
    put(Entry::symlink("sym/rel", "../hl/one"));
    // A setuid file.
    put(Entry::dir("usr/", 0o755));
    put(Entry::dir("usr/bin/", 0o755));
    put(Entry::file(
        "usr/bin/suid",
        0o4755,
        b"#!/bin/sh\necho suid\n",
    ));
    // A PAX xattr.
    put(Entry::dir("xattr/", 0o755));
    put(Entry::file("xattr/file", 0o644, b"has xattr\n").pax("SCHILY.xattr.user.berth", b"test"));
    t.finish().expect("tar into memory")
}

fn layer4_tar() -> Vec<u8> {
    let mut t = TarWriter::new(Vec::new());
    let mut put = |e: Entry<'_>| t.entry(&e).expect("tar into memory");
    put(Entry::dir("etc/", 0o755));
    put(Entry::file("etc/motd", 0o644, b"motd v2\n"));
    put(Entry::dir("olddir/", 0o700));
    put(Entry::file("olddir/new", 0o600, b"new\n"));
    t.finish().expect("tar into memory")
}

/// A four-layer image exercising layer-merge edge cases.
///
/// Layers (all gzip in the OCI form):
/// 1. the busybox rootfs — the *same* layer (same diff ID) as
///    [`busybox_image`]'s, so the two images share it;
/// 2. `data/a`, `data/b`, `etc/motd` ("motd v1"), `olddir/x`, `olddir/sub/y`;
/// 3. the edge cases: whiteouts `.wh.olddir`, `bin/.wh.false`,
///    `etc/.wh.motd`; opaque `data/.wh..wh..opq` + `data/c`; a replaced
///    `etc/group`; `home/user/` and `home/user/owned` owned by 1000:1000;
///    hard links `hl/one` ⇔ `hl/two`; [`LONG_PAX_PATH`] (PAX) and
///    [`LONG_GNU_PATH`] (GNU long names); `names/with space.txt` and a
///    non-ASCII name; symlinks `sym/rel -> ../hl/one`,
///    `sym/abs -> /etc/passwd`, `sym/dangling`; `usr/bin/suid` mode 04755;
///    `xattr/file` with PAX `SCHILY.xattr.user.berth=test`;
/// 4. re-adds `etc/motd` ("motd v2") and `olddir/` (mode 0700) with only `olddir/new`.
///
/// The merged view ([`multilayer_expectations`]): `etc/motd` = "motd v2";
/// `bin/false` gone while `bin/true` and `bin/busybox` remain; `data/` holds
/// only `c`; `etc/group` = [`MULTILAYER_GROUP`]; `etc/passwd` unchanged;
/// `olddir/` holds only `new` (`x` and `sub/` stay deleted); no `.wh.` names
/// anywhere; the rest of layer 3 as written. Config: `Cmd ["sh"]`, PATH env,
/// `WorkingDir /data`, label `berth.fixture=multilayer`.
pub fn multilayer_image() -> BuiltImage {
    let base = busybox_rootfs_tar().expect("busybox rootfs (is busybox-static installed?)");
    let base_created = add_rootfs_created_by(&base);
    let mut config = busybox_spec_config();
    config["WorkingDir"] = json!("/data");
    config["Labels"] = json!({"berth.fixture": "multilayer"});
    let mut spec = ImageSpec::new(
        vec![
            Layer::new(base, Compression::Gzip, base_created),
            Layer::new(
                layer2_tar(),
                Compression::Gzip,
                "/bin/sh -c #(nop) COPY dir:base-data in / ",
            ),
            Layer::new(
                layer3_tar(),
                Compression::Gzip,
                "/bin/sh -c #(nop) COPY dir:edge-cases in / ",
            ),
            Layer::new(
                layer4_tar(),
                Compression::Gzip,
                "/bin/sh -c #(nop) COPY dir:re-add in / ",
            ),
        ],
        config,
    );
    spec.empty_layer_history
        .push(r#"/bin/sh -c #(nop)  CMD ["sh"]"#.to_string());
    build_image(&spec)
}

/// One fact about an extracted or merged tree. Paths are relative to the
/// tree's root, without a leading `/`. `mode` is the permission bits
/// including setuid/setgid/sticky (`st_mode & 0o7777`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    File {
        path: String,
        content: Vec<u8>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Dir {
        path: String,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Absent {
        path: String,
    },
    /// Both are regular files with the same inode.
    HardLinked(String, String),
    Symlink {
        path: String,
        target: String,
    },
    Xattr {
        path: String,
        name: String,
        value: Vec<u8>,
    },
}

fn file(path: &str, content: &[u8]) -> Expect {
    Expect::File {
        path: path.into(),
        content: content.into(),
        mode: None,
        uid: None,
        gid: None,
    }
}
fn absent(path: &str) -> Expect {
    Expect::Absent { path: path.into() }
}
fn symlink(path: &str, target: &str) -> Expect {
    Expect::Symlink {
        path: path.into(),
        target: target.into(),
    }
}

/// What the merged rootfs of [`multilayer_image`] must look like.
pub fn multilayer_expectations() -> Vec<Expect> {
    vec![
        // Layer 1 survives where untouched.
        Expect::File {
            path: "bin/busybox".into(),
            content: std::fs::read(crate::busybox_binary().expect("busybox"))
                .expect("read busybox"),
            mode: Some(0o755),
            uid: Some(0),
            gid: Some(0),
        },
        symlink("bin/sh", "busybox"),
        symlink("bin/true", "busybox"),
        file("etc/passwd", PASSWD.as_bytes()),
        Expect::Dir {
            path: "tmp".into(),
            mode: Some(0o1777),
            uid: Some(0),
            gid: Some(0),
        },
        // Whiteouts.
        absent("bin/false"),
        absent("olddir/x"),
        absent("olddir/sub"),
        absent("olddir/sub/y"),
        // Opaque directory.
        absent("data/a"),
        absent("data/b"),
        file("data/c", b"c\n"),
        // Replaced and re-added files.
        file("etc/group", MULTILAYER_GROUP.as_bytes()),
        file("etc/motd", b"motd v2\n"),
        Expect::Dir {
            path: "olddir".into(),
            mode: Some(0o700),
            uid: Some(0),
            gid: Some(0),
        },
        Expect::File {
            path: "olddir/new".into(),
            content: b"new\n".to_vec(),
            mode: Some(0o600),
            uid: None,
            gid: None,
        },
        // No whiteout markers leak into the tree.
        absent(".wh.olddir"),
        absent("bin/.wh.false"),
        absent("etc/.wh.motd"),
        absent("data/.wh..wh..opq"),
        // Ownership, modes, links, names.
        Expect::Dir {
            path: "home/user".into(),
            mode: Some(0o750),
            uid: Some(1000),
            gid: Some(1000),
        },
        Expect::File {
            path: "home/user/owned".into(),
            content: b"owned by 1000\n".to_vec(),
            mode: Some(0o640),
            uid: Some(1000),
            gid: Some(1000),
        },
        file("hl/one", b"hardlinked\n"),
        file("hl/two", b"hardlinked\n"),
        Expect::HardLinked("hl/one".into(), "hl/two".into()),
        symlink("sym/rel", "../hl/one"),
        symlink("sym/abs", "/etc/passwd"),
        symlink("sym/dangling", "/nonexistent/target"),
        Expect::File {
            path: "usr/bin/suid".into(),
            content: b"#!/bin/sh\necho suid\n".to_vec(),
            mode: Some(0o4755),
            uid: Some(0),
            gid: Some(0),
        },
        file(LONG_PAX_PATH, b"pax long path\n"),
        file(LONG_GNU_PATH, b"gnu long path\n"),
        file("names/with space.txt", b"space\n"),
        file("names/\u{fc}n\u{ef}c\u{f6}d\u{e9}.txt", b"unicode\n"),
        file("xattr/file", b"has xattr\n"),
        Expect::Xattr {
            path: "xattr/file".into(),
            name: "user.berth".into(),
            value: b"test".to_vec(),
        },
    ]
}

/// Checks `expects` against a real directory tree (an extracted rootfs or an
/// overlay mount). Returns every failure, one line each. `Expect::Xattr` is
/// not checked here (std has no xattr call); check it with your own
/// `getxattr` (overlayfs on a non-xattr-capable upper may drop `user.*`).
pub fn check_tree(root: &Path, expects: &[Expect]) -> Result<(), Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let mut fails = Vec::new();
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p));
    let check_owner = |fails: &mut Vec<String>,
                       p: &str,
                       m: &std::fs::Metadata,
                       mode: &Option<u32>,
                       uid: &Option<u32>,
                       gid: &Option<u32>| {
        if let Some(want) = mode
            && m.mode() & 0o7777 != *want
        {
            fails.push(format!("{p}: mode {:o}, want {want:o}", m.mode() & 0o7777));
        }
        if let Some(want) = uid
            && m.uid() != *want
        {
            fails.push(format!("{p}: uid {}, want {want}", m.uid()));
        }
        if let Some(want) = gid
            && m.gid() != *want
        {
            fails.push(format!("{p}: gid {}, want {want}", m.gid()));
        }
    };
    for e in expects {
        match e {
            Expect::File {
                path,
                content,
                mode,
                uid,
                gid,
            } => match meta(path) {
                Ok(m) if m.file_type().is_file() => {
                    match std::fs::read(root.join(path)) {
                        Ok(c) if c == *content => {}
                        Ok(c) => fails.push(format!(
                            "{path}: content differs ({} bytes, want {})",
                            c.len(),
                            content.len()
                        )),
                        Err(err) => fails.push(format!("{path}: {err}")),
                    }
                    check_owner(&mut fails, path, &m, mode, uid, gid);
                }
                Ok(m) => fails.push(format!("{path}: not a regular file ({:?})", m.file_type())),
                Err(err) => fails.push(format!("{path}: {err}")),
            },
            Expect::Dir {
                path,
                mode,
                uid,
                gid,
            } => match meta(path) {
                Ok(m) if m.is_dir() => check_owner(&mut fails, path, &m, mode, uid, gid),
                Ok(m) => fails.push(format!("{path}: not a directory ({:?})", m.file_type())),
                Err(err) => fails.push(format!("{path}: {err}")),
            },
            Expect::Absent { path } => {
                if meta(path).is_ok() {
                    fails.push(format!("{path}: exists, want absent"));
                }
            }
            Expect::HardLinked(a, b) => match (meta(a), meta(b)) {
                (Ok(ma), Ok(mb)) => {
                    if !(ma.is_file()
                        && mb.is_file()
                        && ma.ino() == mb.ino()
                        && ma.dev() == mb.dev())
                    {
                        fails.push(format!("{a} and {b}: not the same inode"));
                    }
                }
                _ => fails.push(format!("{a} and {b}: missing")),
            },
            Expect::Symlink { path, target } => match std::fs::read_link(root.join(path)) {
                Ok(t) if t.as_os_str() == target.as_str() => {}
                Ok(t) => fails.push(format!("{path}: symlink to {}, want {target}", t.display())),
                Err(err) => fails.push(format!("{path}: not a symlink: {err}")),
            },
            Expect::Xattr { .. } => {}
        }
    }
    if fails.is_empty() { Ok(()) } else { Err(fails) }
}

/// `n` small distinct images tagged `many-<i>:latest`: one layer each
/// holding `many/<i>` ("image <i>\n"), label `berth.fixture.index=<i>`, and
/// `created` one minute apart from 2024-01-01 (so listings have an order).
pub fn many_images(n: usize) -> Vec<(BuiltImage, Vec<String>)> {
    (0..n)
        .map(|i| {
            let mut t = TarWriter::new(Vec::new());
            t.entry(&Entry::dir("many/", 0o755))
                .expect("tar into memory");
            let content = format!("image {i}\n");
            t.entry(&Entry::file(
                &format!("many/{i}"),
                0o644,
                content.as_bytes(),
            ))
            .expect("tar into memory");
            let tar = t.finish().expect("tar into memory");
            let mut spec = ImageSpec::new(
                vec![Layer::new(
                    tar,
                    Compression::Gzip,
                    format!("COPY many/{i} /many/"),
                )],
                json!({"Cmd": ["/many"], "Labels": {"berth.fixture.index": i.to_string()}}),
            );
            spec.created = rfc3339(crate::FIXED_MTIME + 60 * i as u64);
            (build_image(&spec), vec![format!("many-{i}:latest")])
        })
        .collect()
}

/// A docker-save archive of [`many_images`]`(n)`.
pub fn many_images_archive(n: usize) -> Vec<u8> {
    docker_save_archive(&many_images(n))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    /// One node of an in-memory merged tree.
    #[derive(Clone, Debug)]
    pub(crate) struct Node {
        pub kind: char, // f d l h(ardlink resolved to file) c
        pub content: Vec<u8>,
        pub target: String,
        pub mode: u32,
        pub uid: u64,
        pub gid: u64,
        pub inode: usize,
        pub xattrs: BTreeMap<String, Vec<u8>>,
    }

    /// Applies layers the way overlayfs/docker do, in memory: whiteouts,
    /// opaque dirs, hard links (shared "inode" numbers).
    pub(crate) fn merge(layers: &[&[u8]]) -> BTreeMap<String, Node> {
        let mut tree: BTreeMap<String, Node> = BTreeMap::new();
        let mut next_inode = 0usize;
        for layer in layers {
            let mut ar = tar::Archive::new(*layer);
            for e in ar.entries().unwrap() {
                let mut e = e.unwrap();
                let path = e
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string();
                let (dir, base) = match path.rsplit_once('/') {
                    Some((d, b)) => (format!("{d}/"), b.to_string()),
                    None => (String::new(), path.clone()),
                };
                if base == ".wh..wh..opq" {
                    let prefix = dir.clone();
                    tree.retain(|k, _| !k.starts_with(&prefix));
                    continue;
                }
                if let Some(victim) = base.strip_prefix(".wh.") {
                    let victim = format!("{dir}{victim}");
                    let prefix = format!("{victim}/");
                    tree.retain(|k, _| *k != victim && !k.starts_with(&prefix));
                    continue;
                }
                let h = e.header().clone();
                let mut xattrs = BTreeMap::new();
                if let Some(p) = e.pax_extensions().unwrap() {
                    for r in p {
                        let r = r.unwrap();
                        if let Some(name) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                            xattrs.insert(name.to_string(), r.value_bytes().to_vec());
                        }
                    }
                }
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                let target = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let ty = h.entry_type();
                let node = if ty.is_hard_link() {
                    tree[&target].clone()
                } else {
                    next_inode += 1;
                    let kind = if ty.is_dir() {
                        'd'
                    } else if ty.is_symlink() {
                        'l'
                    } else if ty.is_character_special() {
                        'c'
                    } else {
                        'f'
                    };
                    Node {
                        kind,
                        content,
                        target,
                        mode: h.mode().unwrap(),
                        uid: h.uid().unwrap(),
                        gid: h.gid().unwrap(),
                        inode: next_inode,
                        xattrs,
                    }
                };
                // A non-directory replaces a whole subtree.
                if node.kind != 'd' {
                    let prefix = format!("{path}/");
                    tree.retain(|k, _| !k.starts_with(&prefix));
                }
                tree.insert(path, node);
            }
        }
        tree
    }

    pub(crate) fn check_merged(tree: &BTreeMap<String, Node>, expects: &[Expect]) {
        for e in expects {
            match e {
                Expect::File {
                    path,
                    content,
                    mode,
                    uid,
                    gid,
                } => {
                    let n = tree.get(path).unwrap_or_else(|| panic!("{path} missing"));
                    assert_eq!(n.kind, 'f', "{path}");
                    assert_eq!(&n.content, content, "{path}");
                    if let Some(m) = mode {
                        assert_eq!(n.mode, *m, "{path}");
                    }
                    if let Some(u) = uid {
                        assert_eq!(n.uid, *u as u64, "{path}");
                    }
                    if let Some(g) = gid {
                        assert_eq!(n.gid, *g as u64, "{path}");
                    }
                }
                Expect::Dir {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    let n = tree.get(path).unwrap_or_else(|| panic!("{path} missing"));
                    assert_eq!(n.kind, 'd', "{path}");
                    if let Some(m) = mode {
                        assert_eq!(n.mode, *m, "{path}");
                    }
                    if let Some(u) = uid {
                        assert_eq!(n.uid, *u as u64, "{path}");
                    }
                    if let Some(g) = gid {
                        assert_eq!(n.gid, *g as u64, "{path}");
                    }
                }
                Expect::Absent { path } => assert!(!tree.contains_key(path), "{path} present"),
                Expect::HardLinked(a, b) => assert_eq!(tree[a].inode, tree[b].inode, "{a} {b}"),
                Expect::Symlink { path, target } => {
                    assert_eq!(tree[path].kind, 'l', "{path}");
                    assert_eq!(&tree[path].target, target, "{path}");
                }
                Expect::Xattr { path, name, value } => {
                    assert_eq!(tree[path].xattrs.get(name), Some(value), "{path} {name}")
                }
            }
        }
    }

    #[test]
    fn multilayer_merges_as_documented() {
        let img = multilayer_image();
        assert_eq!(img.layers.len(), 4);
        let layers: Vec<&[u8]> = img.layers.iter().map(|l| &l.uncompressed[..]).collect();
        let tree = merge(&layers);
        check_merged(&tree, &multilayer_expectations());
        assert!(tree.keys().all(|k| !k.contains(".wh.")), "whiteouts leaked");
        assert!(tree.keys().any(|k| k.len() > 100));
        // The base layer is busybox's.
        assert_eq!(img.diff_ids[0], busybox_image().diff_ids[0]);
        let cfg = img.config();
        assert_eq!(cfg["config"]["WorkingDir"], "/data");
        assert_eq!(cfg["history"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn multilayer_layer3_uses_both_long_name_encodings() {
        let tar = layer3_tar();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut types = Vec::new();
        for e in ar.entries().unwrap().raw(true) {
            types.push(e.unwrap().header().entry_type());
        }
        assert!(types.contains(&tar::EntryType::XHeader));
        assert!(types.contains(&tar::EntryType::GNULongName));
        assert!(types.contains(&tar::EntryType::Link));
    }

    #[test]
    fn check_tree_works_on_a_real_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("berth-fixtures-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/f"), b"hi").unwrap();
        std::fs::set_permissions(dir.join("a/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(dir.join("a/f"), dir.join("a/g")).unwrap();
        std::os::unix::fs::symlink("f", dir.join("a/s")).unwrap();
        let ok = vec![
            Expect::File {
                path: "a/f".into(),
                content: b"hi".to_vec(),
                mode: Some(0o640),
                uid: None,
                gid: None,
            },
            Expect::HardLinked("a/f".into(), "a/g".into()),
            Expect::Symlink {
                path: "a/s".into(),
                target: "f".into(),
            },
            Expect::Dir {
                path: "a".into(),
                mode: None,
                uid: None,
                gid: None,
            },
            Expect::Absent {
                path: "a/nope".into(),
            },
        ];
        assert_eq!(check_tree(&dir, &ok), Ok(()));
        let bad = vec![
            Expect::File {
                path: "a/f".into(),
                content: b"ho".to_vec(),
                mode: Some(0o644),
                uid: None,
                gid: None,
            },
            Expect::Absent { path: "a/g".into() },
            Expect::Symlink {
                path: "a/f".into(),
                target: "x".into(),
            },
        ];
        assert_eq!(check_tree(&dir, &bad).unwrap_err().len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn many_images_are_distinct() {
        let imgs = many_images(20);
        let ids: std::collections::BTreeSet<_> = imgs.iter().map(|(i, _)| i.id()).collect();
        assert_eq!(ids.len(), 20);
        assert_eq!(imgs[7].1, vec!["many-7:latest".to_string()]);
        assert_eq!(imgs[1].0.config()["created"], "2024-01-01T00:01:00Z");
    }
}
