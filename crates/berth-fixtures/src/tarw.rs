//! A small deterministic tar writer with full control over header bytes.
//!
//! The `tar` crate's `Builder` refuses `..` and absolute paths, which the
//! malicious fixtures need, and picks long-name encodings itself. This writer
//! formats headers with `tar::Header` but copies names in raw, chooses PAX or
//! GNU long names per entry, and streams file bodies of a declared size.

use std::io::{self, Write};

use tar::{EntryType, Header};

/// Every fixture entry's mtime: 2024-01-01T00:00:00Z.
pub const FIXED_MTIME: u64 = 1_704_067_200;

/// How a name longer than the 100-byte header field is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongNames {
    /// A PAX extended header (`path=` / `linkpath=`), as Go's archive/tar (and so docker) writes.
    Pax,
    /// A GNU `././@LongLink` entry (type `L` / `K`), as GNU tar writes.
    Gnu,
}

/// What an entry is.
#[derive(Clone, Copy, Debug)]
pub enum Kind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a [u8]),
    Hardlink(&'a [u8]),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One entry to write. Paths and link targets are raw bytes, written as-is.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    pub path: &'a [u8],
    pub kind: Kind<'a>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Extra PAX records, e.g. `("SCHILY.xattr.user.berth", b"test")`.
    pub pax: Vec<(&'a str, &'a [u8])>,
    pub long_names: LongNames,
}

impl<'a> Entry<'a> {
    fn new(path: &'a [u8], kind: Kind<'a>, mode: u32) -> Self {
        Entry {
            path,
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: FIXED_MTIME,
            pax: Vec::new(),
            long_names: LongNames::Pax,
        }
    }
    pub fn file(path: &'a str, mode: u32, data: &'a [u8]) -> Self {
        Self::new(path.as_bytes(), Kind::File(data), mode)
    }
    pub fn dir(path: &'a str, mode: u32) -> Self {
        Self::new(path.as_bytes(), Kind::Dir, mode)
    }
    pub fn symlink(path: &'a str, target: &'a str) -> Self {
        Self::new(path.as_bytes(), Kind::Symlink(target.as_bytes()), 0o777)
    }
    pub fn hardlink(path: &'a str, target: &'a str) -> Self {
        Self::new(path.as_bytes(), Kind::Hardlink(target.as_bytes()), 0o644)
    }
    pub fn raw(path: &'a [u8], kind: Kind<'a>, mode: u32) -> Self {
        Self::new(path, kind, mode)
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn pax(mut self, key: &'a str, value: &'a [u8]) -> Self {
        self.pax.push((key, value));
        self
    }
    pub fn long_names(mut self, l: LongNames) -> Self {
        self.long_names = l;
        self
    }
}

/// Writes tar entries to `W`. Call [`TarWriter::finish`] to write the two
/// zero blocks that end an archive.
pub struct TarWriter<W: Write> {
    w: W,
}

const BLOCK: usize = 512;
const ZEROS: [u8; BLOCK] = [0; BLOCK];

fn pad_len(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let digits = |n: usize| n.to_string().len();
    let mut len = base + digits(base);
    while base + digits(len) != len {
        len = base + digits(len);
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn put_name(field: &mut [u8], name: &[u8]) {
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> Self {
        TarWriter { w }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&ZEROS)?;
        self.w.write_all(&ZEROS)?;
        Ok(self.w)
    }

    fn write_padded(&mut self, data: &[u8]) -> io::Result<()> {
        self.w.write_all(data)?;
        self.w.write_all(&ZEROS[..pad_len(data.len() as u64)])
    }

    /// Writes an entry whose body (if a file) is `data`.
    pub fn entry(&mut self, e: &Entry<'_>) -> io::Result<()> {
        let data: &[u8] = match e.kind {
            Kind::File(d) => d,
            _ => &[],
        };
        self.header(e, data.len() as u64)?;
        if !data.is_empty() {
            self.write_padded(data)?;
        }
        Ok(())
    }

    /// Writes a regular-file entry of `size` bytes whose body `body` streams
    /// into the writer it is given. Fails if `body` writes a different amount.
    pub fn file_stream(
        &mut self,
        e: &Entry<'_>,
        size: u64,
        body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.header(e, size)?;
        let mut counting = Counting {
            w: &mut self.w,
            n: 0,
        };
        body(&mut counting)?;
        let n = counting.n;
        if n != size {
            return Err(io::Error::other(format!(
                "streamed body of {} was {n} bytes, header said {size}",
                String::from_utf8_lossy(e.path)
            )));
        }
        self.w.write_all(&ZEROS[..pad_len(size)])
    }

    fn header(&mut self, e: &Entry<'_>, size: u64) -> io::Result<()> {
        let (ty, link): (EntryType, Option<&[u8]>) = match e.kind {
            Kind::File(_) => (EntryType::Regular, None),
            Kind::Dir => (EntryType::Directory, None),
            Kind::Symlink(t) => (EntryType::Symlink, Some(t)),
            Kind::Hardlink(t) => (EntryType::Link, Some(t)),
            Kind::Char(..) => (EntryType::Char, None),
            Kind::Block(..) => (EntryType::Block, None),
            Kind::Fifo => (EntryType::Fifo, None),
        };
        let long_path = e.path.len() > 100;
        let long_link = link.is_some_and(|l| l.len() > 100);
        let gnu = e.long_names == LongNames::Gnu && (long_path || long_link);

        // Extended headers first.
        let mut records = Vec::new();
        if !gnu {
            if long_path {
                records.extend(pax_record("path", e.path));
            }
            if long_link && let Some(l) = link {
                records.extend(pax_record("linkpath", l));
            }
        }
        for (k, v) in &e.pax {
            records.extend(pax_record(k, v));
        }
        if !records.is_empty() {
            let base = e
                .path
                .rsplit(|b| *b == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or(b"x");
            let mut name = b"PaxHeaders.0/".to_vec();
            name.extend_from_slice(base);
            name.truncate(99);
            let mut h = Header::new_ustar();
            put_name(&mut h.as_old_mut().name, &name);
            h.set_entry_type(EntryType::XHeader);
            h.set_size(records.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(e.mtime);
            h.set_cksum();
            self.w.write_all(h.as_bytes())?;
            self.write_padded(&records)?;
        }
        if gnu {
            if long_path {
                self.gnu_long(EntryType::GNULongName, e.path)?;
            }
            if long_link && let Some(l) = link {
                self.gnu_long(EntryType::GNULongLink, l)?;
            }
        }

        let mut h = if gnu {
            Header::new_gnu()
        } else {
            Header::new_ustar()
        };
        put_name(&mut h.as_old_mut().name, e.path);
        if let Some(l) = link {
            put_name(&mut h.as_old_mut().linkname, l);
        }
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = e.kind {
            h.set_device_major(ma)?;
            h.set_device_minor(mi)?;
        }
        h.set_cksum();
        self.w.write_all(h.as_bytes())
    }

    fn gnu_long(&mut self, ty: EntryType, name: &[u8]) -> io::Result<()> {
        let mut data = name.to_vec();
        data.push(0);
        let mut h = Header::new_gnu();
        put_name(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        self.w.write_all(h.as_bytes())?;
        self.write_padded(&data)
    }
}

/// Counts bytes on the way to the inner writer.
pub struct Counting<W> {
    pub w: W,
    pub n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"abc"), b"12 path=abc\n");
        for n in 0..300 {
            let v = vec![b'x'; n];
            let r = pax_record("k", &v);
            let len: usize = std::str::from_utf8(&r[..r.iter().position(|b| *b == b' ').unwrap()])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, r.len());
        }
    }

    #[test]
    fn tar_crate_reads_what_we_write() {
        let long = "d".repeat(120) + "/file";
        let mut t = TarWriter::new(Vec::new());
        t.entry(&Entry::file("a", 0o4755, b"hello")).unwrap();
        t.entry(&Entry::file(&long, 0o644, b"pax")).unwrap();
        t.entry(&Entry::file(&long, 0o644, b"gnu").long_names(LongNames::Gnu))
            .unwrap();
        t.entry(&Entry::symlink("s", &long)).unwrap();
        t.entry(
            &Entry::file("x", 0o600, b"")
                .pax("SCHILY.xattr.user.k", b"v")
                .owner(7, 8),
        )
        .unwrap();
        t.entry(&Entry::raw(b"../up", Kind::File(b"u"), 0o644))
            .unwrap();
        t.entry(&Entry::raw(b"c", Kind::Char(1, 3), 0o666)).unwrap();
        t.file_stream(&Entry::file("big", 0o644, b""), 1000, |w| {
            w.write_all(&[7u8; 1000])
        })
        .unwrap();
        assert!(
            t.file_stream(&Entry::file("bad", 0o644, b""), 10, |w| w
                .write_all(b"short"))
                .is_err()
        );
        let bytes = t.finish().unwrap();
        // The failed stream left a header behind; parse only up to it.
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap().raw(false) {
            let mut e = match e {
                Ok(e) => e,
                Err(_) => break,
            };
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let xattr = e
                .pax_extensions()
                .unwrap()
                .map(|p| {
                    p.filter_map(|r| r.ok())
                        .map(|r| r.key().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_else(Vec::<String>::new);
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let mode = e.header().mode().unwrap();
            let uid = e.header().uid().unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.push((path, link, mode, uid, body, xattr));
            if seen.len() == 8 {
                break;
            }
        }
        assert_eq!(seen[0].0, "a");
        assert_eq!(seen[0].2, 0o4755);
        assert_eq!(seen[1].0, long);
        assert_eq!(seen[1].4, b"pax");
        assert_eq!(seen[2].0, long);
        assert_eq!(seen[2].4, b"gnu");
        assert_eq!(seen[3].1.as_deref(), Some(long.as_str()));
        assert_eq!(seen[4].3, 7);
        assert_eq!(seen[4].5, vec!["SCHILY.xattr.user.k".to_string()]);
        assert_eq!(seen[5].0, "../up");
        assert_eq!(seen[7].4.len(), 1000);
    }
}
