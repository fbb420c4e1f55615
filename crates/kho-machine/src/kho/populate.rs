//! `kho_populate`: the first KHO step of the new kernel's boot, right after
//! `memblock_init` (Linux: `kho_populate()` in
//! `kernel/liveupdate/kexec_handover.c`, called from x86's `add_kho()`).

use std::sync::Arc;

use kho::{KHO_FDT_MAX_SIZE, KhoFdt, KhoVersion};

use super::{Kho, KhoError, KhoIn, OnCorruption, PeerScheme};
use crate::boot::Machine;
use crate::kexec::KhoHandover;
use crate::physio::read_bytes;

/// `kho_populate`: validates the root FDT of `handover`, adds each scratch
/// area to `memblock.memory` and marks it `KHO_SCRATCH` (`memblock_add`
/// then `memblock_mark_kho_scratch`, torvalds/linux@40735a68; the areas lie
/// in RAM `memblock_init` added, so the add inserts nothing and they keep
/// node 0), reserves the scratch array and switches memblock to
/// scratch-only allocation.
///
/// `scheme` names the tracker that wrote the handover: `None` for the
/// built-in radix tree (`kho-v2`..`kho-v4`); a [`PeerScheme`] parses the
/// root FDT itself (its own compatible), and [`super::kho_memory_init`]
/// accounts the memory through it.
///
/// Never fails the boot: on any error the marks made are undone and the
/// returned [`Kho`] is disabled with the reason.
pub fn kho_populate(
    machine: &mut Machine<'_>,
    handover: &KhoHandover,
    scheme: Option<Arc<dyn PeerScheme>>,
) -> Kho {
    kho_populate_with(machine, handover, scheme, OnCorruption::Reject)
}

/// [`kho_populate`] with `on_corruption`. **Ours**, under
/// [`OnCorruption::Salvage`]: a root FDT that cannot be read, parsed or
/// used (its compatible) while the setup_data gave the scratch areas still
/// marks scratch, reserves the scratch array and switches to scratch-only
/// allocation: KHO is off ([`Kho::error`] says why), and
/// [`super::kho_memory_init`] reserves all RAM outside scratch (nothing
/// says where the preserved memory is), so the boot goes on from scratch.
pub fn kho_populate_with(
    machine: &mut Machine<'_>,
    handover: &KhoHandover,
    scheme: Option<Arc<dyn PeerScheme>>,
    on_corruption: OnCorruption,
) -> Kho {
    let mut kho = match populate(machine, handover, scheme.as_deref()) {
        Ok(k) => Kho {
            incoming: Some(k),
            scheme,
            ..Kho::default()
        },
        Err(
            e @ (KhoError::FdtRead { .. }
            | KhoError::Fdt { .. }
            | KhoError::Compatible { .. }
            | KhoError::Scheme { .. }),
        ) if on_corruption == OnCorruption::Salvage => match mark_scratch(machine, handover) {
            Ok(()) => Kho {
                unreadable_fdt: Some(handover.scratch.clone()),
                ..Kho::disabled(e)
            },
            Err(_) => Kho::disabled(e),
        },
        Err(e) => Kho::disabled(e),
    };
    kho.on_corruption = on_corruption;
    kho
}

fn populate(
    machine: &mut Machine<'_>,
    h: &KhoHandover,
    scheme: Option<&dyn PeerScheme>,
) -> Result<KhoIn, KhoError> {
    let fdt = h.fdt;
    let len = usize::try_from(fdt.size())
        .unwrap_or(usize::MAX)
        .min(KHO_FDT_MAX_SIZE);
    let bytes = read_bytes(machine.mem(), fdt.start(), len)
        .map_err(|source| KhoError::FdtRead { fdt, source })?;
    let (version, root, subnodes) = match scheme {
        Some(s) => {
            let p = s.parse_fdt(&bytes).map_err(|source| KhoError::Scheme {
                scheme: s.name(),
                source,
            })?;
            (p.version, p.root, p.subnodes)
        }
        None => {
            let parsed = KhoFdt::parse(&bytes).map_err(|source| KhoError::Fdt { fdt, source })?;
            let version = parsed.version();
            if !matches!(version, KhoVersion::V2 | KhoVersion::V3 | KhoVersion::V4) {
                return Err(KhoError::Compatible {
                    fdt,
                    found: version,
                });
            }
            let subnodes = parsed
                .subnodes()
                .map(|n| (n.name().to_owned(), n.data(), n.size()))
                .collect();
            (version, parsed.root(), subnodes)
        }
    };
    mark_scratch(machine, h)?;
    Ok(KhoIn {
        fdt,
        version,
        root,
        subnodes,
        scratch_array: h.scratch_array,
        scratch: h.scratch.clone(),
    })
}

/// Each scratch area added and marked `KHO_SCRATCH`, the scratch array
/// reserved, scratch-only allocation on; on an error the marks made are
/// undone.
fn mark_scratch(machine: &mut Machine<'_>, h: &KhoHandover) -> Result<(), KhoError> {
    let mb = &mut machine.memblock;
    let mut marked = 0usize;
    let mut result = Ok(());
    for area in &h.scratch {
        if let Err(source) = mb
            .memblock_add(area.start(), area.size())
            .and_then(|()| mb.memblock_mark_kho_scratch(area.start(), area.size()))
        {
            result = Err(KhoError::Memblock {
                what: "marking scratch",
                range: *area,
                source,
            });
            break;
        }
        marked += 1;
    }
    if result.is_ok() {
        let a = h.scratch_array;
        result = mb
            .memblock_reserve(a.start(), a.size())
            .map_err(|source| KhoError::Memblock {
                what: "reserving the scratch array",
                range: a,
                source,
            });
    }
    if let Err(e) = result {
        for area in h.scratch.iter().take(marked) {
            // Best effort: the flag only restricts allocations, which are
            // not restricted without scratch-only mode.
            let _ = mb.memblock_clear_kho_scratch(area.start(), area.size());
        }
        return Err(e);
    }
    mb.memblock_set_kho_scratch_only();
    Ok(())
}
