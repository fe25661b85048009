//! The `tag_storage.*` counters a manager owns (`docs/model.md` §5).
//!
//! Every counter is kept exactly and in O(1) per event; `check()` recounts
//! what can be recounted. What each policy reports:
//!
//! | counter | none | static | dynamic |
//! |---|---|---|---|
//! | `tag_storage.blocks` | 0 | blocks | blocks |
//! | `tag_storage.reserved` | 0 | blocks | blocks with a reference now |
//! | `tag_storage.reservations` | 0 | blocks (the boot-time carve-out reserves every block once) | blocks claimed and committed so far |
//! | `tag_storage.releases` | 0 | 0 | blocks whose last reference went so far |
//! | `tag_storage.reserve_failures` | 0 | 0 | reserve (and activate) calls that failed to claim a block |
//!
//! Under `xnu` a block is a cell: `reserved` counts ACTIVE cells,
//! `reservations` activations (boot included), `releases` deactivations
//! (the drain), `reserve_failures` failed activations and reclaims. Under
//! `google` a block is a Tag Block: `reserved` counts FREE and TAGGED blocks
//! (T held), `reservations` conversions to FREE (boot included), `releases`
//! conversions to UNTAGGED, `reserve_failures` failed T claims.
//!
//! So `reserved == reservations - releases` under every policy. A block claimed
//! and given back because another block of the same call failed counts as
//! neither a reservation nor a release: it was never reserved. A failed call
//! counts once, however many blocks and attempts it made; calls refused as
//! contract violations (misaligned, uncovered, double reservation) are not
//! reservations that failed and are not counted.
//! The counters of the kernel's side (`tag_storage.pages`, `.data_pages`,
//! `.migrations`) are not here: only the kernel sees frames.

/// The counters of one tag storage manager.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TagStoreCounters {
    /// `tag_storage.blocks`: tag blocks in the machine.
    pub blocks: u64,
    /// `tag_storage.reserved`: blocks reserved for tags now.
    pub reserved: u64,
    /// `tag_storage.reservations`: blocks reserved so far.
    pub reservations: u64,
    /// `tag_storage.releases`: blocks released so far.
    pub releases: u64,
    /// `tag_storage.reserve_failures`: reservations that failed.
    pub reserve_failures: u64,
}

impl TagStoreCounters {
    /// The counter names, in the order of [`Self::list`].
    pub const NAMES: [&'static str; 5] = [
        "tag_storage.blocks",
        "tag_storage.reserved",
        "tag_storage.reservations",
        "tag_storage.releases",
        "tag_storage.reserve_failures",
    ];

    /// Every counter with its `expect stat` / `--json` name.
    pub fn list(&self) -> [(&'static str, u64); 5] {
        let Self {
            blocks,
            reserved,
            reservations,
            releases,
            reserve_failures,
        } = *self;
        let [b, r, rs, rl, f] = Self::NAMES;
        [
            (b, blocks),
            (r, reserved),
            (rs, reservations),
            (rl, releases),
            (f, reserve_failures),
        ]
    }

    /// The value of the counter called `name`, if it is one of these.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.list()
            .into_iter()
            .find(|&(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_spec_names() {
        // docs/model.md §5 counter table.
        let c = TagStoreCounters {
            blocks: 1,
            reserved: 2,
            reservations: 3,
            releases: 4,
            reserve_failures: 5,
        };
        assert_eq!(
            c.list(),
            [
                ("tag_storage.blocks", 1),
                ("tag_storage.reserved", 2),
                ("tag_storage.reservations", 3),
                ("tag_storage.releases", 4),
                ("tag_storage.reserve_failures", 5),
            ]
        );
        assert_eq!(c.get("tag_storage.releases"), Some(4));
        assert_eq!(c.get("tag_storage.pages"), None);
    }
}
