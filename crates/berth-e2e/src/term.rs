//! A real terminal for interactive tests: a detached tmux session on a
//! private server socket, running a host shell in which the test types
//! commands (`docker run -it …`, `berth start -ai …`) and reads the screen.
//!
//! Dropping it kills its tmux server (only that one: the socket is ours).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a screen may take to show what the test waits for.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Term {
    socket: PathBuf,
}

impl Term {
    /// A 120x40 terminal running `/bin/sh` with the prompt `host$ ` in
    /// `dir`; the tmux socket is made in `dir` too.
    #[track_caller]
    pub fn new(dir: &Path, env: &[(&str, String)]) -> Term {
        let socket = dir.join("tmux.sock");
        let t = Term { socket };
        let mut cmd = t.tmux();
        cmd.args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
        ]);
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        cmd.args(["-e", "TERM=xterm", "-c"])
            .arg(dir)
            .args(["/bin/sh"]);
        let out = cmd.output().expect("run tmux (apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // dash ignores PS1 from the environment when run as root.
        t.line("PS1='host''$ '");
        t.wait_for("host$ ");
        t
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// Types `text` and presses Enter.
    #[track_caller]
    pub fn line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    /// Sends tmux key names (`C-p`, `Enter`) or, after `-l`, literal text.
    #[track_caller]
    pub fn keys(&self, keys: &[&str]) {
        let out = self
            .tmux()
            .args(["send-keys", "-t", "0"])
            .args(keys)
            .output()
            .expect("tmux send-keys");
        assert!(out.status.success(), "tmux send-keys {keys:?}");
    }

    /// The visible screen plus scrollback, as text.
    pub fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-J", "-S", "-200", "-t", "0"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen contains `needle`; the screen then.
    #[track_caller]
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_count(needle, 1)
    }

    /// Waits until the screen contains `needle` at least `n` times.
    #[track_caller]
    pub fn wait_count(&self, needle: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.matches(needle).count() >= n {
                return s;
            }
            if start.elapsed() > SCREEN_TIMEOUT {
                panic!("the terminal never showed {needle:?} ({n}x); screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
        let _ = std::fs::remove_file(&self.socket);
    }
}
