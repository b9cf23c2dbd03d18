//! The heart of berth, typed into a real terminal (tmux): `run -i -t
//! busybox /bin/sh`, a command, a file, `exit`; `start -ai` brings the same
//! container back with its file; detach with ctrl-p ctrl-q; `exec -it` into
//! it; `rm` removes it with its read-write layer. Once with berth's CLI and
//! once with the real docker CLI against berthd.
//!
//! Typed commands compute what the test waits for (`echo S$((1+1))` prints
//! `S2`), so the echo of the typing itself never matches.

use berth_e2e::{Daemon, Term, require_root};

fn interactive_flow(docker: bool) {
    let d = Daemon::start();
    d.load_busybox();
    let (env, cli) = d.cli_for_shell(docker);
    let t = Term::new(d.dir(), &env);

    t.line(&format!(
        "{cli} run -i -t --name tty1 busybox /bin/sh; echo EXIT:$?"
    ));
    t.wait_for("/ # ");
    t.line("echo hel''lo-$((6*7)); stty size");
    let screen = t.wait_for("hello-42");
    t.wait_for("40 120");
    assert!(!screen.contains("EXIT:0"), "{screen}");
    t.line("echo k$((3+4)) > /keep.txt; exit");
    t.wait_for("EXIT:0");

    let ps = d.docker(["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.ok().starts_with("tty1 Exited (0)"), "{ps}");
    let id = d.get_json("/containers/tty1/json")["Id"]
        .as_str()
        .unwrap()
        .to_string();

    // The same container again, with its file.
    t.line(&format!("{cli} start -ai tty1; echo EXIT:$?"));
    t.line("cat /keep.txt; echo S$((1+1))");
    let screen = t.wait_for("S2");
    assert!(screen.contains("k7"), "{screen}");
    assert_eq!(d.get_json("/containers/tty1/json")["Id"], id.as_str());

    // ctrl-p ctrl-q detaches and leaves it running.
    t.keys(&["C-p"]);
    t.keys(&["C-q"]);
    t.wait_count("EXIT:0", 2);
    assert_eq!(
        d.get_json("/containers/tty1/json")["State"]["Running"],
        true
    );

    t.line(&format!("{cli} exec -it tty1 sh; echo EXIT:$?"));
    t.line("cat /keep.txt; tty; echo E$((2+3))");
    let screen = t.wait_for("E5");
    // The exec's tty is one of the container's own ptys.
    assert!(screen.contains("/dev/pts/0"), "{screen}");
    assert_eq!(screen.matches("k7").count(), 2, "{screen}");
    t.line("exit 4");
    t.wait_for("EXIT:4");

    t.line(&format!("{cli} rm -f tty1; echo EXIT:$?"));
    t.wait_count("EXIT:0", 3);
    assert!(
        !d.root.join("containers").join(&id).exists(),
        "the container's directory (its read-write layer) is gone"
    );
    let ps = d.docker(["ps", "-aq"]);
    assert_eq!(ps.ok(), "");
}

#[test]
fn interactive_shell_with_the_berth_cli() {
    require_root!();
    interactive_flow(false);
}

#[test]
fn interactive_shell_with_the_docker_cli() {
    require_root!();
    interactive_flow(true);
}
