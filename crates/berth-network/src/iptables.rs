//! Living next to dockerd. A packet passes the base chains of every
//! table, and one drop anywhere wins; dockerd sets the iptables FORWARD
//! policy to DROP, which would drop berth's forwarded traffic after berth's
//! own table accepted it. So while that policy is DROP, berth puts accept
//! rules for its own bridges into the FORWARD chain (marked with the
//! comment `berth`, and only those are ever removed), and takes them out
//! again when the bridge goes or the daemon stops. Nothing else in that
//! chain is read for meaning, reordered or changed.

use std::process::{Command, Stdio};

use berth_types::{Error, Result};

const COMMENT: &str = "berth";

fn iptables(args: &[&str]) -> Result<String> {
    let child = crate::fwwatch::spawn_own(
        Command::new("iptables")
            .arg("-w")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| Error::internal(format!("iptables: {e}")))?;
    let pid = child.id();
    let out = child.wait_with_output();
    crate::fwwatch::reaped(pid);
    let out = out.map_err(|e| Error::internal(format!("iptables: {e}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether an iptables binary is there at all.
pub fn available() -> bool {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAVE.get_or_init(|| {
        Command::new("iptables")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The rules for one bridge, as `iptables -S` prints them (minus `-A FORWARD`).
fn rules(bridge: &str) -> Vec<Vec<String>> {
    let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        c(&[
            "-i",
            bridge,
            "-m",
            "comment",
            "--comment",
            COMMENT,
            "-j",
            "ACCEPT",
        ]),
        c(&[
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-m",
            "comment",
            "--comment",
            COMMENT,
            "-j",
            "ACCEPT",
        ]),
        c(&[
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "-m",
            "comment",
            "--comment",
            COMMENT,
            "-j",
            "ACCEPT",
        ]),
    ]
}

/// Bring the FORWARD chain in line: accepts for `bridges` while its
/// policy is DROP, none of berth's otherwise (and none for bridges that
/// are gone). Returns whether anything changed.
pub fn sync(bridges: &[String]) -> Result<bool> {
    if !available() {
        return Ok(false);
    }
    let listing = match iptables(&["-S", "FORWARD"]) {
        Ok(l) => l,
        // No filter table in this namespace: nothing drops, nothing to do.
        Err(_) => return Ok(false),
    };
    let drop = listing.lines().any(|l| l.trim() == "-P FORWARD DROP");
    let present: Vec<Vec<String>> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("-A FORWARD "))
        .filter(|l| l.contains(&format!("--comment {COMMENT} ")))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    let wanted: Vec<Vec<String>> = if drop {
        bridges.iter().flat_map(|b| rules(b)).collect()
    } else {
        vec![]
    };
    let mut changed = false;
    for r in &present {
        if !wanted.contains(r) {
            let mut args = vec!["-D", "FORWARD"];
            args.extend(r.iter().map(String::as_str));
            iptables(&args)?;
            changed = true;
        }
    }
    for r in wanted.iter().rev() {
        if !present.contains(r) {
            let mut args = vec!["-I", "FORWARD"];
            args.extend(r.iter().map(String::as_str));
            iptables(&args)?;
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_back_as_iptables_prints_them() {
        // `iptables -S` prints a rule with the same words it was given in
        // this order, which is what `sync` compares.
        let r = rules("berth0");
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[1].join(" "),
            "-o berth0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment berth -j ACCEPT"
        );
    }
}
