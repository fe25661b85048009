//! The machine description: DRAM and tag storage ranges, page and block size,
//! and the kernel settings of a scenario's `platform` line.
//!
//! A platform comes from a scenario's `platform` line ([`from_spec`]), a TOML
//! file with the same keys ([`toml_file`]), or a flattened device tree
//! ([`dtb`]). Whatever the source, it is validated once, by
//! [`Geometry::new`], into a [`Platform`] whose [`Geometry`] every other layer
//! uses for page, granule and tag-block arithmetic. Errors of every source
//! are one [`PlatformError`].
//!
//! [`Geometry`] and its units are defined by the architecture crate (`mte`)
//! and re-exported here: the tag storage managers use them without
//! depending on this crate (and so on serde, TOML or device tree parsing).
//! [`Design`] names the design; the kernel maps it to a manager.

pub mod cost;
pub mod dtb;
pub mod error;
pub mod from_spec;
pub mod machine;
pub mod mistake;
pub mod num;
pub mod spec;
pub mod toml_file;

pub use cost::{CostEntry, CostFileError, CostTable};
pub use error::{PlatformError, Position};
pub use machine::{KERNEL_KEYS, KernelSettings, LAYOUT_KEYS, LayoutError, Platform};
pub use mistake::{Mistake, Mistakes};
pub use mte::geometry::{Geometry, GeometryError, MemRange, TagBlock, TagRegion};
pub use spec::{
    Design, FreeListOrder, OnReserveFailure, PlatformSpec, TagStorageData, Thp, ThpSizes,
};
