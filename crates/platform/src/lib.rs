//! The machine description: DRAM and tag storage ranges, page and block size,
//! and the kernel settings of a scenario's `platform` line.
//!
//! A platform comes from a scenario's `platform` line, a TOML file with the
//! same keys, or a flattened device tree. Whatever the source, it is validated
//! once here and turned into a [`Geometry`] that every other layer uses for
//! page, granule and tag-block arithmetic.

pub mod geometry;
pub mod num;
pub mod spec;

pub use geometry::{Geometry, GeometryError, MemRange, TagBlock, TagRegion};
pub use spec::{PlatformSpec, TagStorageData, TagStoragePolicy, Thp};
