//! OCI hooks run by the runtime in its own namespaces: prestart and
//! createRuntime after `create`, poststart after `start`, poststop after
//! `delete`. Each gets the container's state JSON on stdin; a failing
//! prestart/createRuntime hook fails `create`, a failing poststart or
//! poststop hook is reported. createContainer and startContainer (run in
//! the container's namespaces) are not supported yet.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};

use crate::Fail;

fn list(spec: &Spec, kind: &str) -> Vec<Hook> {
    let Some(h) = spec.hooks() else {
        return Vec::new();
    };
    #[allow(deprecated)]
    let v = match kind {
        "prestart" => h.prestart(),
        "createRuntime" => h.create_runtime(),
        "poststart" => h.poststart(),
        "poststop" => h.poststop(),
        _ => &None,
    };
    v.clone().unwrap_or_default()
}

pub fn run(spec: &Spec, kind: &str, state: &serde_json::Value) -> Result<(), Fail> {
    for hook in list(spec, kind) {
        let args = hook.args().clone().unwrap_or_default();
        let mut cmd = Command::new(hook.path());
        if let Some((a0, rest)) = args.split_first() {
            use std::os::unix::process::CommandExt;
            cmd.arg0(a0).args(rest);
        }
        cmd.env_clear();
        for e in hook.env().clone().unwrap_or_default() {
            if let Some((k, v)) = e.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| Fail(format!("{kind} hook {}: {e}", hook.path().display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(state.to_string().as_bytes());
        }
        let timeout = hook.timeout().map(|t| Duration::from_secs(t.max(1) as u64));
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if timeout.is_some_and(|t| start.elapsed() > t) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Fail(format!(
                    "{kind} hook {} timed out",
                    hook.path().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(Fail(format!(
                "{kind} hook {} failed ({status}): {}",
                hook.path().display(),
                err.trim()
            )));
        }
    }
    Ok(())
}
