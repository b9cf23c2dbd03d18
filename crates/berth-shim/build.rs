//! Link the shim binary statically and position-dependent:
//!
//! - with PIE every pointer in its read-only data (vtables, string tables)
//!   is relocated at startup, turning ~250 KiB of file pages into private
//!   dirty memory per container;
//! - without ld.so and libc.so mapped it has fewer resident pages, and it
//!   runs inside any container rootfs, which `--init` needs (the shim is
//!   bind-mounted as the container's `/sbin/docker-init`).
//!
//! rustc links glibc targets dynamically unless `crt-static` is set, and
//! that is a target-wide flag (it would make every build script and proc
//! macro static too). So the binary gets `-static`, and a directory of
//! linker scripts that point the libraries rustc asks for (`-lc`,
//! `-lgcc_s`, …) at their static archives. Only the binary: the crate's
//! unit tests link as usual.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rustc-link-arg-bins=-static");
    let dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("static-libs");
    std::fs::create_dir_all(&dir).expect("create static-libs");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let archive = |name: &str| -> String {
        let out = Command::new(&cc)
            .arg(format!("-print-file-name={name}"))
            .output()
            .expect("run the C compiler to find static libraries");
        let path = String::from_utf8(out.stdout).expect("utf-8 path");
        let path = path.trim().to_string();
        assert!(
            path.starts_with('/'),
            "{name} not found: the static glibc (libc6-dev) is needed to link berth-shim"
        );
        path
    };
    let (eh, gcc, libc) = (
        archive("libgcc_eh.a"),
        archive("libgcc.a"),
        archive("libc.a"),
    );
    let script = |lib: &str, body: String| {
        std::fs::write(dir.join(format!("lib{lib}.so")), body).expect("write linker script");
    };
    script("gcc_s", format!("INPUT({eh})\n"));
    script("c", format!("GROUP({libc} {eh} {gcc})\n"));
    for lib in ["util", "rt", "pthread", "m", "dl"] {
        script(lib, format!("INPUT({})\n", archive(&format!("lib{lib}.a"))));
    }
    println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
}
