//! Capabilities: Docker's default set and applying an OCI
//! `LinuxCapabilities` to the current (single-threaded, child) process with
//! the `caps` crate.

use std::str::FromStr;

use berth_types::Error;
use caps::{CapSet, CapsHashSet};
use oci_spec::runtime::{Capability, LinuxCapabilities};

/// Docker's default capability set (moby daemon/pkg/oci/caps/defaults.go).
pub fn default_capabilities() -> Vec<Capability> {
    vec![
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
}

/// An OCI capability as the `caps` crate names it; None if this kernel
/// interface does not know it.
fn to_caps(c: &Capability) -> Option<caps::Capability> {
    caps::Capability::from_str(&format!("CAP_{c}")).ok()
}

/// The capability sets to give the process, resolved in the parent before
/// forking.
#[derive(Debug, Clone)]
pub(crate) struct CapPlan {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

impl CapPlan {
    /// Resolve the spec's sets. A capability the runtime itself does not
    /// hold (not in our bounding set, e.g. CAP_SYS_RESOURCE on this host) or
    /// that the kernel does not know cannot be granted; it is left out, as
    /// runc leaves out unknown ones.
    pub(crate) fn new(c: &LinuxCapabilities) -> Result<CapPlan, Error> {
        let have = caps::read(None, CapSet::Bounding)
            .map_err(|e| Error::internal(format!("read capability bounding set: {e}")))?;
        let conv = |s: &Option<oci_spec::runtime::Capabilities>| -> CapsHashSet {
            s.iter()
                .flatten()
                .filter_map(to_caps)
                .filter(|c| have.contains(c))
                .collect()
        };
        let permitted = conv(c.permitted());
        // E must be a subset of P, or capset fails.
        let effective = conv(c.effective())
            .intersection(&permitted)
            .copied()
            .collect();
        Ok(CapPlan {
            bounding: conv(c.bounding()),
            effective,
            permitted,
            inheritable: conv(c.inheritable()),
            ambient: conv(c.ambient()),
        })
    }

    /// Drop everything outside the bounding set. Needs CAP_SETPCAP, so this
    /// runs before the uid switch and before `apply_sets`.
    pub(crate) fn apply_bounding(&self) -> Result<(), Error> {
        for cap in caps::all() {
            if !self.bounding.contains(&cap)
                && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
            {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| Error::internal(format!("drop {cap} from bounding set: {e}")))?;
            }
        }
        Ok(())
    }

    /// Set inheritable, effective, permitted (in that order, so that each
    /// capset call keeps E ⊆ P), then raise the ambient capabilities.
    pub(crate) fn apply_sets(&self) -> Result<(), Error> {
        caps::set(None, CapSet::Inheritable, &self.inheritable)
            .map_err(|e| Error::internal(format!("set inheritable capabilities: {e}")))?;
        caps::set(None, CapSet::Effective, &self.effective)
            .map_err(|e| Error::internal(format!("set effective capabilities: {e}")))?;
        caps::set(None, CapSet::Permitted, &self.permitted)
            .map_err(|e| Error::internal(format!("set permitted capabilities: {e}")))?;
        // An ambient capability must be in both P and I; the kernel refuses
        // others. runc only warns there; we skip them the same way.
        let _ = caps::clear(None, CapSet::Ambient);
        for cap in &self.ambient {
            if self.permitted.contains(cap) && self.inheritable.contains(cap) {
                let _ = caps::raise(None, CapSet::Ambient, *cap);
            }
        }
        Ok(())
    }
}

/// Whether the current process may raise hard rlimits.
pub(crate) fn have_sys_resource() -> bool {
    caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_dockers_mask() {
        let mask: u64 = default_capabilities()
            .iter()
            .map(|c| to_caps(c).expect("known cap").bitmask())
            .fold(0, |a, b| a | b);
        assert_eq!(format!("{mask:016x}"), "00000000a80425fb");
    }

    #[test]
    fn names_convert() {
        assert_eq!(
            to_caps(&Capability::SysAdmin),
            Some(caps::Capability::CAP_SYS_ADMIN)
        );
        assert_eq!(
            to_caps(&Capability::NetBindService),
            Some(caps::Capability::CAP_NET_BIND_SERVICE)
        );
        assert_eq!(
            to_caps(&Capability::DacReadSearch),
            Some(caps::Capability::CAP_DAC_READ_SEARCH)
        );
    }
}
