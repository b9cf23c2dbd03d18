//! berth-runc as the OCI runtime of engines nobody here wrote: podman
//! (`--runtime`) and a real dockerd (`runtimes` in daemon.json, used through
//! containerd's runc shim), driven by their own CLIs.

use berth_e2e::{Dockerd, Term, bin, require_root};

fn busybox_archive(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("busybox.tar");
    std::fs::write(&p, berth_fixtures::busybox_archive("busybox:latest")).unwrap();
    p
}

#[test]
fn dockerd_runs_containers_with_berth_runc() {
    require_root!();
    let runc = bin("berth-runc");
    let config = serde_json::json!({"runtimes": {"berth": {"path": runc}}}).to_string();
    let Some(d) = Dockerd::start_with_config(&config) else {
        return;
    };
    let archive = busybox_archive(d.dir());
    d.docker(["load", "-q", "-i", archive.to_str().unwrap()])
        .ok();
    let out = d.docker([
        "run",
        "--rm",
        "--runtime",
        "berth",
        "busybox",
        "sh",
        "-c",
        "echo hello; exit 3",
    ]);
    assert_eq!(out.code(), 3, "{out}");
    assert_eq!(out.stdout, "hello\n");
    let out = d.docker(["run", "--rm", "--runtime", "berth", "busybox", "nosuchcmd"]);
    assert_eq!(out.code(), 127, "{out}");
    assert!(out.stderr.contains("executable file not found"), "{out}");
    let out = d.docker(["run", "--rm", "-t", "--runtime", "berth", "busybox", "tty"]);
    assert_eq!(out.ok().trim(), "/dev/console");

    d.docker([
        "run",
        "-d",
        "--name",
        "svc",
        "--runtime",
        "berth",
        "busybox",
        "sleep",
        "100",
    ])
    .ok();
    let out = d.docker(["exec", "svc", "sh", "-c", "echo in exec; exit 4"]);
    assert_eq!((out.code(), out.stdout.as_str()), (4, "in exec\n"), "{out}");
    let out = d.docker(["exec", "-t", "svc", "tty"]);
    assert!(out.ok().starts_with("/dev/pts/"), "{out}");
    let out = d.docker(["inspect", "-f", "{{.HostConfig.Runtime}}", "svc"]);
    assert_eq!(out.ok().trim(), "berth");
    let t = std::time::Instant::now();
    d.docker(["stop", "-t", "1", "svc"]).ok();
    assert!(t.elapsed() < std::time::Duration::from_secs(8));
    let out = d.docker(["inspect", "-f", "{{.State.ExitCode}}", "svc"]);
    assert_eq!(out.ok().trim(), "137", "sleep as PID 1 ignores SIGTERM");
    d.docker(["rm", "svc"]).ok();

    // -it in a real terminal.
    let (env, cli) = d.cli_for_shell();
    let term = Term::new(d.dir(), &env);
    term.line(&format!(
        "{cli} run -it --rm --runtime berth busybox sh; echo EXIT:$?"
    ));
    term.wait_for("/ # ");
    term.line("echo R$((40+2)); exit 5");
    term.wait_for("R42");
    term.wait_for("EXIT:5");
}

#[test]
fn podman_runs_containers_with_berth_runc() {
    require_root!();
    if !berth_e2e::has_command("podman") {
        eprintln!("SKIPPED: podman is not installed");
        return;
    }
    let runc = bin("berth-runc");
    let dir = berth_e2e::short_tempdir("berth-e2e-podman-");
    let base = dir.path();
    std::fs::write(
        base.join("containers.conf"),
        format!(
            "[containers]\nnetns = \"none\"\ndefault_ulimits = [\"nofile=20000:20000\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"berth\"\n\
             tmp_dir = \"{tmp}\"\n[engine.runtimes]\nberth = [\"{runc}\"]\n",
            tmp = base.join("tmp").display(),
            runc = runc.display()
        ),
    )
    .unwrap();
    std::fs::write(
        base.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"overlay\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
            base.join("run").display(),
            base.join("graph").display()
        ),
    )
    .unwrap();
    let podman = |args: &[&str]| {
        let mut cmd = std::process::Command::new("podman");
        cmd.args(args)
            .env("CONTAINERS_CONF", base.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", base.join("storage.conf"));
        berth_e2e::Run::exec(cmd, None)
    };
    let archive = busybox_archive(base);
    podman(&["load", "-q", "-i", archive.to_str().unwrap()]).ok();
    let out = podman(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo from podman; exit 6",
    ]);
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (6, "from podman\n"),
        "{out}"
    );
    podman(&[
        "run",
        "-d",
        "--name",
        "p1",
        "busybox",
        "sh",
        "-c",
        "echo started; sleep 100",
    ])
    .ok();
    let out = podman(&["exec", "p1", "sh", "-c", "echo exec ok"]);
    assert_eq!(out.ok(), "exec ok\n");
    let out = berth_e2e::wait_for(std::time::Duration::from_secs(5), || {
        let out = podman(&["logs", "p1"]);
        (out.stdout == "started\n").then_some(out)
    });
    assert!(out.is_some(), "podman logs p1 shows the output");
    podman(&["stop", "-t", "1", "p1"]).ok();
    let out = podman(&["inspect", "-f", "{{.State.Status}}", "p1"]);
    assert_eq!(out.ok().trim(), "exited");
    podman(&["rm", "p1"]).ok();
    let out = podman(&["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(out.code(), 127, "{out}");
    // Leave nothing mounted in the temporary directory.
    let _ = podman(&["system", "reset", "-f"]);
}
