//! Builds through the real docker CLI's legacy builder (`DOCKER_BUILDKIT=0
//! docker build`) and `berth build` against berthd: a multi-stage build of
//! a small program (a shell script "compiled" from a template with sed in
//! one stage, copied into a busybox final stage) with ARG/ENV substitution,
//! `.dockerignore` and USER/WORKDIR/EXPOSE/HEALTHCHECK/ENTRYPOINT in the
//! config; the image runs, `docker history` shows the steps, it pushes to
//! a registry; the cache (every step reused, a changed file rebuilds from
//! the step that copies it, `--no-cache`, across a daemon restart,
//! `builder prune`, `system df`); and bad input — a syntax error, an
//! unknown instruction, a missing or escaping COPY source, a failing RUN,
//! an unreachable ADD URL — each a clear error with nothing tagged, no
//! container or staging left, and the daemon still serving.

use std::path::{Path, PathBuf};

use berth_e2e::{Daemon, Registry, Run, arg, require_root};
use serde_json::Value;

const DOCKERFILE: &str = r#"# a program "compiled" in one stage, shipped in another
ARG BASE=busybox
FROM $BASE AS compile
ARG GREETING=hello
ENV OUT=/out SRC=/src
WORKDIR $SRC
COPY src/ ./
RUN mkdir -p $OUT && sed "s/@GREETING@/$GREETING/" greet.sh.in > $OUT/greet \
 && chmod 755 $OUT/greet && ls -a $SRC > $OUT/files

FROM busybox
LABEL org.example.app=greet
COPY --from=compile /out/ /app/
USER 1000:1000
WORKDIR /app
EXPOSE 8080/tcp
HEALTHCHECK --interval=5s --timeout=2s CMD true
ENTRYPOINT ["/app/greet"]
CMD ["world"]
"#;

/// Steps in DOCKERFILE, as `Step N/M` counts them.
const STEPS: usize = 16;

fn write_context(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("secret")).unwrap();
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.join(".dockerignore"), "**/*.tmp\nsecret\n").unwrap();
    std::fs::write(
        dir.join("src/greet.sh.in"),
        "#!/bin/sh\necho \"@GREETING@, $1\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/notes.tmp"), "ignored\n").unwrap();
    std::fs::write(dir.join("secret/key"), "ignored\n").unwrap();
}

fn docker_build(d: &Daemon, args: &[&str]) -> Run {
    let mut cmd = d.docker_command(["build"].iter().chain(args.iter()));
    cmd.env("DOCKER_BUILDKIT", "0");
    Run::exec(cmd, None)
}

fn context(d: &Daemon, name: &str) -> PathBuf {
    let dir = d.path(name);
    write_context(&dir);
    dir
}

fn config(d: &Daemon, name: &str) -> Value {
    d.inspect(name)["Config"].clone()
}

/// Waits for removed containers' directories (deleted in the background
/// from tmp/) to go, then checks the data root.
fn assert_no_garbage(d: &Daemon) {
    let t = std::time::Instant::now();
    while !d.store().tmp.is_empty() && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    d.assert_no_garbage();
}

fn containers(d: &Daemon) -> String {
    d.docker(["ps", "-aq"]).ok().to_string()
}

#[test]
fn multi_stage_build_runs_caches_and_shows_history() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let ctx = context(&d, "ctx");
    let out = docker_build(
        &d,
        &["--build-arg", "GREETING=hi", "-t", "greet:v1", arg(&ctx)],
    );
    let text = out.ok();
    assert!(
        text.contains(&format!("Step 1/{STEPS} : ARG BASE=busybox")),
        "{out}"
    );
    assert!(
        text.contains(&format!("Step 2/{STEPS} : FROM $BASE AS compile")),
        "{out}"
    );
    assert!(text.contains(" ---> Running in "), "{out}");
    assert!(text.contains("Removing intermediate container "), "{out}");
    assert!(text.contains("Successfully built "), "{out}");
    assert!(text.contains("Successfully tagged greet:v1"), "{out}");
    assert!(!text.contains("Using cache"), "{out}");

    // The program runs, built with the build arg, without ignored files.
    assert_eq!(d.docker(["run", "--rm", "greet:v1"]).ok(), "hi, world\n");
    assert_eq!(
        d.docker([
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            "greet:v1",
            "/app/files"
        ])
        .ok(),
        ".\n..\ngreet.sh.in\n"
    );
    let c = config(&d, "greet:v1");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/app/greet"]));
    assert_eq!(c["Cmd"], serde_json::json!(["world"]));
    assert_eq!(c["Labels"]["org.example.app"], "greet");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Timeout"], 2_000_000_000u64);
    // ENV of the first stage does not leak into the second.
    assert!(!c["Env"].to_string().contains("OUT="), "{c}");

    let hist = d.docker([
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "greet:v1",
    ]);
    let h = hist.ok();
    for want in [
        "/bin/sh -c #(nop)  CMD [\"world\"]",
        "/bin/sh -c #(nop)  ENTRYPOINT [\"/app/greet\"]",
        "/bin/sh -c #(nop)  HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"5s\" \"2s\" \"0s\" '\\x00'}",
        "/bin/sh -c #(nop)  EXPOSE 8080/tcp",
        "/bin/sh -c #(nop) WORKDIR /app",
        "/bin/sh -c #(nop)  USER 1000:1000",
        "/bin/sh -c #(nop) COPY dir:",
        "/bin/sh -c #(nop)  LABEL org.example.app=greet",
    ] {
        assert!(h.contains(want), "history lacks {want:?}:\n{h}");
    }
    // Intermediate images only show with -a; the first stage's last image
    // is dangling, as with dockerd.
    let shown = d.docker(["images", "-q"]).ok().lines().count();
    let tagged = d
        .docker(["images", "-q", "--filter", "dangling=false"])
        .ok()
        .lines()
        .count();
    let all = d.docker(["images", "-aq"]).ok().lines().count();
    assert_eq!(tagged, 2, "busybox and greet:v1");
    assert_eq!(shown, 3, "and the compile stage's image");
    assert!(all > shown, "intermediate images exist");
    let id = d.inspect("greet:v1")["Id"].as_str().unwrap().to_string();

    // Nothing changed: every step but the FROMs comes from the cache.
    let again = docker_build(
        &d,
        &["--build-arg", "GREETING=hi", "-t", "greet:v1", arg(&ctx)],
    );
    let text = again.ok();
    assert_eq!(
        text.matches(" ---> Using cache").count(),
        STEPS - 3,
        "{again}"
    );
    assert!(!text.contains("Running in"), "{again}");
    assert_eq!(d.inspect("greet:v1")["Id"], id.as_str());
    // berth build agrees (its own context tar, same content).
    let b = d.berth([
        "build",
        "--build-arg",
        "GREETING=hi",
        "-t",
        "greet:v1",
        arg(&ctx),
    ]);
    assert_eq!(
        b.ok().matches(" ---> Using cache").count(),
        STEPS - 3,
        "{b}"
    );
    assert_eq!(d.inspect("greet:v1")["Id"], id.as_str());

    // A different build arg changes the RUN that uses it, not what is before.
    let other = docker_build(
        &d,
        &["--build-arg", "GREETING=hey", "-t", "greet:v2", arg(&ctx)],
    );
    let text = other.ok();
    let (before, after) = text.split_once("RUN mkdir").unwrap();
    assert_eq!(before.matches("Using cache").count(), 4, "{other}");
    assert!(
        after.split("Step").next().unwrap().contains("Running in"),
        "{other}"
    );
    assert_eq!(
        d.docker(["run", "--rm", "greet:v2", "you"]).ok(),
        "hey, you\n"
    );

    // Changing a copied file rebuilds from the COPY that copies it.
    std::fs::write(
        ctx.join("src/greet.sh.in"),
        "#!/bin/sh\necho \"@GREETING@ there, $1\"\n",
    )
    .unwrap();
    // An ignored file changing changes nothing.
    std::fs::write(ctx.join("src/notes.tmp"), "still ignored\n").unwrap();
    let changed = docker_build(
        &d,
        &["--build-arg", "GREETING=hi", "-t", "greet:v1", arg(&ctx)],
    );
    let text = changed.ok();
    let (before, after) = text.split_once("COPY src/ ./").unwrap();
    assert_eq!(before.matches("Using cache").count(), 3, "{changed}");
    assert!(
        !after.split("Step").next().unwrap().contains("Using cache"),
        "{changed}"
    );
    assert_eq!(
        d.docker(["run", "--rm", "greet:v1"]).ok(),
        "hi there, world\n"
    );

    // --no-cache rebuilds every step.
    let fresh = docker_build(
        &d,
        &[
            "--no-cache",
            "--build-arg",
            "GREETING=hi",
            "-t",
            "greet:v1",
            arg(&ctx),
        ],
    );
    assert!(!fresh.ok().contains("Using cache"), "{fresh}");
    assert_eq!(
        d.docker(["run", "--rm", "greet:v1"]).ok(),
        "hi there, world\n"
    );

    // --target stops at a stage.
    let t = d.berth([
        "build",
        "--target",
        "compile",
        "-q",
        "-t",
        "greet:compile",
        arg(&ctx),
    ]);
    assert!(t.ok().trim().starts_with("sha256:"), "{t}");
    assert_eq!(config(&d, "greet:compile")["WorkingDir"], "/src");

    assert_eq!(containers(&d), "", "build containers are removed");
    assert_no_garbage(&d);
}

#[test]
fn cache_survives_restart_and_builder_prune_empties_it() {
    require_root!();
    let mut d = Daemon::start();
    d.load_busybox();
    let ctx = d.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nENV X=1\n",
    )
    .unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    docker_build(&d, &["-t", "c:1", arg(&ctx)]).ok();
    d.restart();
    let again = docker_build(&d, &["-t", "c:1", arg(&ctx)]);
    assert_eq!(again.ok().matches("Using cache").count(), 3, "{again}");

    let df = d.get_json("/system/df");
    let caches = df["BuildCache"].as_array().unwrap();
    assert_eq!(caches.len(), 3, "{df}");
    assert!(
        caches
            .iter()
            .any(|c| c["Description"].as_str().unwrap().contains("cat /a.txt")),
        "{df}"
    );

    let sdf = d.docker(["system", "df"]);
    let line = sdf
        .ok()
        .lines()
        .find(|l| l.starts_with("Build Cache"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(line.split_whitespace().nth(2), Some("3"), "{sdf}");
    // Without -a, cache behind a tagged image stays.
    let p = d.docker(["builder", "prune", "-f"]);
    assert!(p.ok().contains("Total reclaimed space"), "{p}");
    let p = d.berth(["builder", "prune", "-f"]);
    assert!(p.ok().contains("Total reclaimed space"), "{p}");
    assert_eq!(
        d.get_json("/system/df")["BuildCache"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // -a forgets every step; the tagged image and its parents stay.
    let p = d.berth(["builder", "prune", "-af"]);
    assert!(p.ok().contains("Deleted build cache objects:"), "{p}");
    assert_eq!(
        d.get_json("/system/df")["BuildCache"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // --cache-from finds the steps in the image's chain instead.
    let from = docker_build(&d, &["--cache-from", "c:1", "-t", "c:1", arg(&ctx)]);
    assert_eq!(from.ok().matches("Using cache").count(), 3, "{from}");
    // An image without its parent chain here (saved and loaded, as a pulled
    // one) serves too, by its history.
    let saved = d.path("c1.tar");
    d.docker(["save", "-o", arg(&saved), "c:1"]).ok();
    d.docker(["rmi", "c:1"]).ok();
    d.berth(["builder", "prune", "-af"]).ok();
    assert_eq!(d.docker(["images", "-aq"]).ok().lines().count(), 1);
    d.docker(["load", "-i", arg(&saved)]).ok();
    let loaded = d.inspect("c:1")["Id"].clone();
    let from = docker_build(&d, &["--cache-from", "c:1", "-t", "c:1", arg(&ctx)]);
    assert_eq!(from.ok().matches("Using cache").count(), 3, "{from}");
    assert_eq!(
        d.inspect("c:1")["Id"],
        loaded,
        "the loaded image is the result"
    );
    assert_eq!(
        d.docker(["run", "--rm", "c:1", "cat", "/b.txt"]).ok(),
        "a\n"
    );
    d.docker(["rmi", "c:1"]).ok();
    d.berth(["builder", "prune", "-af"]).ok();
    assert_eq!(
        d.docker(["images", "-aq"]).ok().lines().count(),
        1,
        "only busybox is left"
    );
    let cold = docker_build(&d, &["-t", "c:1", arg(&ctx)]);
    assert!(!cold.ok().contains("Using cache"), "{cold}");
    d.docker(["rmi", "c:1"]).ok();
    d.berth(["builder", "prune", "-af"]).ok();
    assert_eq!(
        d.docker(["images", "-aq"]).ok().lines().count(),
        1,
        "only busybox is left"
    );
    assert_no_garbage(&d);
}

#[test]
fn built_image_pushes_to_a_registry() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    d.load_busybox();
    let ctx = context(&d, "ctx");
    let name = reg.name("team/greet:v1");
    let out = docker_build(&d, &["--network", "none", "-t", &name, arg(&ctx)]);
    assert!(
        out.ok().contains(&format!("Successfully tagged {name}")),
        "{out}"
    );
    let push = d.docker(["push", &name]);
    assert!(push.ok().contains("digest: sha256:"), "{push}");
    // What the registry holds runs in a fresh daemon.
    let d2 = Daemon::start_host_network();
    d2.docker(["pull", &name]).ok();
    assert_eq!(
        d2.docker(["run", "--rm", &name, "reg"]).ok(),
        "hello, reg\n"
    );
}

/// Each bad build: a clear error, the exit status, nothing tagged, no
/// container or staging left, the daemon serving.
#[test]
fn bad_input_fails_cleanly() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let cases: &[(&str, &[&str], &str, i32)] = &[
        (
            "FROM busybox\nENV\n",
            &[],
            "dockerfile parse error line 2: ENV requires at least one argument",
            1,
        ),
        (
            "FROM busybox\nFOO bar\n",
            &[],
            "dockerfile parse error line 2: unknown instruction: FOO",
            1,
        ),
        (
            "FROM busybox\nCOPY nope /x\n",
            &[],
            "COPY failed: file not found in build context or excluded by .dockerignore: stat nope: file does not exist",
            1,
        ),
        (
            "FROM busybox\nCOPY ../x /x\n",
            &[],
            "COPY failed: forbidden path outside the build context: ../x ()",
            1,
        ),
        (
            "FROM busybox\nRUN echo partial > /p\nRUN exit 3\n",
            &["--force-rm"],
            "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
            3,
        ),
        (
            "FROM busybox\nADD http://127.0.0.1:1/x /x\n",
            &[],
            "ADD failed: Get \"http://127.0.0.1:1/x\"",
            1,
        ),
        (
            "FROM busybox\nCOPY secret /x\n",
            &[],
            "excluded by .dockerignore",
            1,
        ),
    ];
    for (i, (dockerfile, extra, want, code)) in cases.iter().enumerate() {
        let ctx = d.path(&format!("bad{i}"));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(ctx.join("secret"), "s").unwrap();
        std::fs::write(ctx.join(".dockerignore"), "secret\n").unwrap();
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["-t", "bad:1", arg(&ctx)]);
        let out = docker_build(&d, &args);
        let err = out.fails_with(*code);
        assert!(err.contains(want), "case {i}: want {want:?}\n{out}");
        assert!(
            !d.docker(["images", "--format", "{{.Repository}}"])
                .ok()
                .contains("bad"),
            "case {i}: something was tagged"
        );
        assert_eq!(containers(&d), "", "case {i}: a build container is left");
        // berth build reports the same error and status.
        let b = d.berth(
            std::iter::once("build")
                .chain(args.iter().copied())
                .collect::<Vec<_>>(),
        );
        assert!(b.fails_with(*code).contains(want), "case {i} (berth): {b}");
    }
    // Without --force-rm, the failed RUN's container stays, as with docker.
    let ctx = d.path("bad-keep");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN exit 5\n").unwrap();
    docker_build(&d, &[arg(&ctx)]).fails_with(5);
    assert_eq!(containers(&d).lines().count(), 1);
    d.docker(["container", "prune", "-f"]).ok();
    assert_eq!(
        d.docker(["version", "--format", "{{.Server.Os}}"]).ok(),
        "linux\n"
    );
    assert_no_garbage(&d);
}

/// Serves `body` for every GET on 127.0.0.1 (a thread of the test).
fn serve(body: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    port
}

#[test]
fn add_unpacks_archives_fetches_urls_and_copy_sets_owners() {
    require_root!();
    use sha2::Digest as _;
    const BODY: &[u8] = b"downloaded\n";
    let port = serve(BODY);
    let sum = hex::encode(sha2::Sha256::digest(BODY));
    let d = Daemon::start_host_network();
    d.load_busybox();
    let ctx = d.path("ctx");
    std::fs::create_dir_all(ctx.join("tree/x")).unwrap();
    std::fs::write(ctx.join("tree/x/y"), "in archive\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args([
            "czf",
            arg(&ctx.join("files.tar.gz")),
            "-C",
            arg(&ctx.join("tree")),
            "x",
        ])
        .status()
        .unwrap();
    assert!(tar.success());
    std::fs::remove_dir_all(ctx.join("tree")).unwrap();
    std::fs::write(ctx.join("plain.txt"), "plain\n").unwrap();
    std::fs::write(ctx.join("a.md"), "a\n").unwrap();
    std::fs::write(ctx.join("b.md"), "b\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             ADD files.tar.gz /opt/\n\
             ADD --checksum=sha256:{sum} http://127.0.0.1:{port}/hello.txt /hello.txt\n\
             ADD http://127.0.0.1:{port}/dir/hello.txt /dl/\n\
             COPY --chown=1000:1000 --chmod=640 plain.txt /plain.txt\n\
             COPY *.md /docs/\n"
        ),
    )
    .unwrap();
    let out = docker_build(&d, &["--network", "none", "-t", "add:1", arg(&ctx)]);
    assert!(out.ok().contains("Successfully tagged add:1"), "{out}");
    let r = d.docker([
        "run",
        "--rm",
        "--network",
        "none",
        "add:1",
        "sh",
        "-c",
        "cat /opt/x/y /hello.txt /dl/hello.txt /docs/a.md /docs/b.md; stat -c '%u:%g %a' /plain.txt; stat -c %a /hello.txt",
    ]);
    assert_eq!(
        r.ok(),
        "in archive\ndownloaded\ndownloaded\na\nb\n1000:1000 640\n600\n"
    );
    // A wrong checksum is refused.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\nADD --checksum=sha256:{} http://127.0.0.1:{port}/hello.txt /h\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let bad = docker_build(&d, &["--network", "none", "-t", "add:2", arg(&ctx)]);
    assert!(bad.fails().contains("digest mismatch"), "{bad}");
    assert_no_garbage(&d);
}

/// docker-py's `images.build` (the legacy API it speaks) against berthd.
#[test]
fn docker_py_builds() {
    require_root!();
    let probe = std::process::Command::new("python3")
        .args(["-c", "import docker"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: docker-py is not installed (pip install docker)");
        return;
    }
    let d = Daemon::start();
    d.load_busybox();
    let ctx = context(&d, "ctx");
    let script = format!(
        r#"
import docker, sys
c = docker.from_env()
img, logs = c.images.build(path={ctx:?}, tag="py:1", buildargs={{"GREETING": "py"}}, rm=True)
text = "".join(l.get("stream", "") for l in logs)
assert "Successfully built" in text, text
assert "py:1" in img.tags, img.tags
open({bad:?}, "w").write("FROM busybox\nRUN exit 7\n")
try:
    c.images.build(path={badctx:?}, tag="py:bad", forcerm=True)
    sys.exit("a failing build succeeded")
except docker.errors.BuildError as e:
    print(e.msg)
"#,
        ctx = arg(&ctx),
        bad = arg(&d.path("badctx/Dockerfile")),
        badctx = arg(&d.path("badctx")),
    );
    std::fs::create_dir_all(d.path("badctx")).unwrap();
    let (env, _) = d.cli_for_shell(true);
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", &script]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = Run::exec(cmd, None);
    assert_eq!(
        out.ok(),
        "The command '/bin/sh -c exit 7' returned a non-zero code: 7\n"
    );
    assert_eq!(d.docker(["run", "--rm", "py:1"]).ok(), "py, world\n");
    assert_eq!(containers(&d), "");
}

/// A base image's ONBUILD triggers run in the child's build; independent
/// stages run side by side, their output still in stage order.
#[test]
fn onbuild_triggers_and_parallel_stages() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let base = d.path("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("Dockerfile"),
        "FROM busybox\nONBUILD COPY trigger.txt /trigger.txt\nONBUILD RUN echo triggered > /t2\n",
    )
    .unwrap();
    d.berth(["build", "-t", "onb:base", arg(&base)]).ok();
    let ctx = d.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("trigger.txt"), "from the trigger\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS a\nRUN sleep 1 && echo a > /a\n\
         FROM busybox AS b\nRUN sleep 1 && echo b > /b\n\
         FROM onb:base\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=0 /a /a0\n",
    )
    .unwrap();
    let t = std::time::Instant::now();
    let out = docker_build(&d, &["-t", "onb:child", arg(&ctx)]);
    let took = t.elapsed();
    let text = out.ok();
    assert!(text.contains("# Executing 2 build triggers"), "{out}");
    let pos = |s: &str| text.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{out}"));
    assert!(pos("Step 1/8 : FROM busybox AS a") < pos("Step 3/8 : FROM busybox AS b"));
    assert!(pos("Step 3/8 : FROM busybox AS b") < pos("Step 5/8 : FROM onb:base"));
    eprintln!("two 1 s stages and the rest took {took:?}");
    assert_eq!(
        d.docker([
            "run",
            "--rm",
            "onb:child",
            "cat",
            "/trigger.txt",
            "/t2",
            "/a",
            "/b",
            "/a0"
        ])
        .ok(),
        "from the trigger\ntriggered\na\nb\na\n"
    );
    // The triggers ran; the child has none left.
    assert_eq!(config(&d, "onb:child")["OnBuild"], Value::Null);
}

/// On a terminal `berth build` shows one line per step with its outcome.
#[test]
fn berth_build_on_a_terminal_shows_steps() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let ctx = d.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo from-the-run\nENV A=1\n",
    )
    .unwrap();
    let (env, cli) = d.cli_for_shell(false);
    let t = berth_e2e::Term::new(d.dir(), &env);
    t.line(&format!(
        "{cli} build -t tty:1 {}; echo EXIT:$((40+2))",
        arg(&ctx)
    ));
    let screen = t.wait_for("EXIT:42");
    assert!(
        screen.contains("[2/3] RUN echo from-the-run DONE"),
        "{screen}"
    );
    assert!(screen.contains("  from-the-run"), "{screen}");
    assert!(screen.contains("Successfully tagged tty:1"), "{screen}");
    t.line(&format!(
        "{cli} build -t tty:1 {}; echo EXIT:$((50+2))",
        arg(&ctx)
    ));
    let screen = t.wait_for("EXIT:52");
    assert!(screen.contains("[3/3] ENV A=1 CACHED"), "{screen}");
}

/// Heredocs, SHELL, STOPSIGNAL, VOLUME, MAINTAINER and build-time labels.
#[test]
fn heredocs_and_config_instructions() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let ctx = d.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         MAINTAINER someone\n\
         ARG WHO=heredoc\n\
         COPY <<EOF /etc/motd\nhello \"$WHO\"\nEOF\n\
         RUN <<EOF\necho \"ran  $WHO\" > /ran\nEOF\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         RUN test \"$WHO\" = heredoc && echo shell-ok > /shell\n\
         STOPSIGNAL SIGINT\n\
         VOLUME /data\n",
    )
    .unwrap();
    let out = docker_build(
        &d,
        &["--label", "built.by=e2e test", "-t", "h:1", arg(&ctx)],
    );
    assert!(out.ok().contains("LABEL built.by=e2e test"), "{out}");
    assert_eq!(
        d.docker(["run", "--rm", "h:1", "cat", "/etc/motd", "/ran", "/shell"])
            .ok(),
        // COPY keeps the quotes and expands; RUN's shell sees the quotes
        "hello \"heredoc\"\nran  heredoc\nshell-ok\n"
    );
    let img = d.inspect("h:1");
    assert_eq!(img["Author"], "someone");
    let c = &img["Config"];
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(c["Labels"]["built.by"], "e2e test");
    assert_eq!(containers(&d), "");
    assert_no_garbage(&d);
}

/// `docker build -t TAG` of a RUN that sleeps, returned once the step has
/// started (its "started" line was read).
fn start_sleeping_build(d: &Daemon, tag: &str) -> std::process::Child {
    use std::io::BufRead;
    let ctx = d.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo started; sleep 60\n",
    )
    .unwrap();
    let mut cmd = d.docker_command(["build", "-t", tag, arg(&ctx)]);
    cmd.env("DOCKER_BUILDKIT", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Read through a borrow: the pipe stays open with the child.
    let lines = std::io::BufReader::new(child.stdout.as_mut().unwrap()).lines();
    for l in lines {
        if l.unwrap().contains("started") {
            break;
        }
    }
    child
}

/// A client that goes away mid-RUN stops the build: the container is
/// killed and removed, nothing is tagged, the staging is gone.
#[test]
fn client_going_away_cancels_the_build() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let mut child = start_sleeping_build(&d, "gone:1");
    child.kill().unwrap();
    child.wait().unwrap();
    let t = std::time::Instant::now();
    while !containers(&d).is_empty() || !d.store().tmp.is_empty() {
        assert!(
            t.elapsed().as_secs() < 20,
            "the build container or staging is still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!d.docker(["images"]).ok().contains("gone"));
    assert_no_garbage(&d);
}

/// berthd killed mid-build: at the next start its staging is gone, the
/// interrupted step's container can be removed, and builds work again.
#[test]
fn daemon_killed_mid_build_leaves_no_staging() {
    require_root!();
    let mut d = Daemon::start();
    d.load_busybox();
    let mut child = start_sleeping_build(&d, "k:1");
    let ctx = d.path("ctx");
    assert!(
        !d.store().tmp.is_empty(),
        "the context is staged under tmp/"
    );
    d.kill9();
    let _ = child.wait();
    d.start_again();
    assert!(d.store().tmp.is_empty(), "tmp/ is emptied at start");
    eprintln!("after restart: {}", d.docker(["ps", "-a"]).ok());
    for id in containers(&d).lines() {
        d.docker(["rm", "-f", id]).ok();
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN echo fine\n").unwrap();
    docker_build(&d, &["-t", "k:1", arg(&ctx)]).ok();
    assert!(!d.docker(["images"]).ok().is_empty());
    assert_no_garbage(&d);
}

/// `berth build -` (a Dockerfile or a tar on stdin), `-f` outside the
/// context, `--iidfile`.
#[test]
fn berth_build_stdin_and_dockerfile_outside_the_context() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let out = d.berth_stdin(
        ["build", "-q", "-t", "stdin:1", "-"],
        b"FROM busybox\nENV FROM_STDIN=1\n",
    );
    assert!(out.ok().starts_with("sha256:"), "{out}");
    assert!(
        config(&d, "stdin:1")["Env"]
            .to_string()
            .contains("FROM_STDIN=1")
    );
    let ctx = d.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f.txt"), "context file\n").unwrap();
    let df = d.path("elsewhere.Dockerfile");
    std::fs::write(&df, "FROM busybox\nCOPY f.txt /f.txt\n").unwrap();
    let iid = d.path("iid");
    d.berth([
        "build",
        "-f",
        arg(&df),
        "--iidfile",
        arg(&iid),
        "-t",
        "out:1",
        arg(&ctx),
    ])
    .ok();
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(d.inspect("out:1")["Id"], id.as_str());
    assert_eq!(
        d.docker(["run", "--rm", "out:1", "cat", "/f.txt"]).ok(),
        "context file\n"
    );
    // A tar context on stdin.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY f.txt /g.txt\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["cf", "-", "-C", arg(&ctx), "."])
        .output()
        .unwrap()
        .stdout;
    d.berth_stdin(["build", "-t", "tar:1", "-"], &tar).ok();
    assert_eq!(
        d.docker(["run", "--rm", "tar:1", "cat", "/g.txt"]).ok(),
        "context file\n"
    );
}
