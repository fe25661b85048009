//! A platform described by a flattened device tree (`.dtb`), as the Linux
//! "arm64 MTE dynamic tag storage reuse" RFC series describes tag storage.
//!
//! What is read (`fdt` 0.1.5, after `blob::check` made sure it cannot
//! panic):
//! - **Memory**: top-level nodes with `device_type = "memory"` that are
//!   available (`status` absent, `"okay"` or `"ok"`), their ranges from
//!   `linux,usable-memory` if present, else `reg`, with the root's
//!   `#address-cells`/`#size-cells`; zero-sized entries are skipped (all as
//!   Linux `early_init_dt_scan_memory()`).
//! - **Tag storage**: available nodes with `compatible = "arm,mte-tag-storage"`,
//!   in either form the RFC used:
//!   - v2 (Nov 2023): a top-level node with `reg`, `block-size` and `memory`,
//!     a phandle to the memory node it covers;
//!   - v3 (Jan 2024): a child of `/reserved-memory` with `reg`, `block-size`,
//!     `tagged-memory` (the phandle) and `reusable`. `/reserved-memory` must
//!     have the root's cell sizes and a `ranges` property, or Linux ignores
//!     every reserved region (`__reserved_mem_check_root()`).
//!
//!   `reg` is exactly one range. `block-size` is a 32-bit cell in bytes, "the
//!   minimum multiple of 4K of tag storage where all the tags stored in the
//!   block correspond to a contiguous memory region" (RFC v1 patch 13).
//!
//! Reconciling the two (the part Linux leaves to memblock):
//! - Tag storage is not ordinary memory: a v3 tree may also list the tag
//!   range in a `memory` node (the FVP one does), so every tag storage range
//!   is taken out of DRAM before [`crate::Geometry::new`] sees it.
//! - The memory a region covers is the whole memory node its phandle points
//!   to, less any tag storage inside it; that must be one contiguous range
//!   (the RFC v1/v2 code accepts a memory node with exactly one `reg` entry;
//!   v3 silently takes the first, which would leave data pages without tags).
//! - The region must be exactly 1/32 of what it covers (RFC v2
//!   `fdt_init_tag_storage()`; v3 dropped the check, the model keeps it).
//!
//! Kernel settings are the spec defaults; the policy is `dynamic` when there
//! is tag storage and `none` when the tree describes none.
//!
//! Known shortcuts: a `block-size` that is a multiple of 4K but not a power
//! of two (RFC v3 rounds it to `lcm(PAGE_SIZE, block-size)`) is refused by the
//! geometry, which models power-of-two blocks only; `ranges` is not used to
//! translate addresses (top-level and `/reserved-memory` children are in the
//! root's address space by the rules above); `/memreserve/` entries are
//! ignored (in Linux they stay DRAM, only allocated early). Linux also
//! requires CMA regions to be pageblock-aligned (2 MiB with 4K pages,
//! `cma_init_reserved_mem()`); that is the kernel model's concern, not
//! checked here.

mod blob;
#[cfg(test)]
mod tests;

pub use blob::{BlobError, FDT_MAGIC, MAX_DEPTH, StructProblem};

use crate::error::PlatformError;
use crate::machine::{KernelSettings, Platform};
use crate::spec::{Design, PlatformSpec};
use fdt::Fdt;
use fdt::node::FdtNode;
use mte::DATA_BYTES_PER_TAG_BYTE as TAG_RATIO;
use mte::PhysAddr;
use mte::geometry::{GeometryError, MemRange, TagRegion};
use std::collections::BTreeMap;
use std::path::Path;
use thiserror::Error;

/// The `compatible` string of a tag storage node.
pub const TAG_STORAGE_COMPATIBLE: &str = "arm,mte-tag-storage";

/// `block-size` must be a multiple of this many bytes (the RFC binding's
/// unit: "the minimum multiple of 4K of tag storage").
const BLOCK_SIZE_UNIT: u64 = 4 << 10;

/// Linux's cell sizes when the root does not say
/// (`OF_ROOT_NODE_ADDR_CELLS_DEFAULT`, `OF_ROOT_NODE_SIZE_CELLS_DEFAULT`).
const DEFAULT_CELLS: (u32, u32) = (1, 1);

/// What is wrong with a device tree as a description of an MTE machine.
/// `node` fields are full paths (`/reserved-memory/tag-storage@fc000000`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DtbError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("{node}: `{property}` must be {expected}, found {len} bytes")]
    PropertySize {
        node: String,
        property: &'static str,
        expected: &'static str,
        len: usize,
    },
    #[error("{node}: `{property}` = <{value}> is not supported (1 or 2 cells: 64-bit addresses)")]
    Cells {
        node: String,
        property: &'static str,
        value: u32,
    },
    #[error(
        "{node}: `{property}` is {len} bytes, not a whole number of ({address_cells} + {size_cells})-cell entries"
    )]
    RegLength {
        node: String,
        property: &'static str,
        len: usize,
        address_cells: u32,
        size_cells: u32,
    },
    #[error("{node}: `{property}` range {base}..+{size:#x} runs past the end of the address space")]
    RegWraps {
        node: String,
        property: &'static str,
        base: PhysAddr,
        size: u64,
    },
    #[error("{node}: missing `{property}`")]
    MissingProperty {
        node: String,
        property: &'static str,
    },
    #[error("{node}: phandle {phandle:#x} is also the phandle of {other}")]
    DuplicatePhandle {
        node: String,
        other: String,
        phandle: u32,
    },
    #[error("{node}: `{property}` = <{phandle:#x}> points to no node")]
    DanglingPhandle {
        node: String,
        property: &'static str,
        phandle: u32,
    },
    #[error("{node}: `{property}` points to {target}, which {reason}")]
    NotMemory {
        node: String,
        property: &'static str,
        target: String,
        reason: &'static str,
    },
    #[error("{node}: tag storage must be one range, `reg` has {ranges}")]
    TagRanges { node: String, ranges: usize },
    #[error("{node}: `block-size` {block_size:#x} is not a non-zero multiple of 4K")]
    BlockSize { node: String, block_size: u32 },
    #[error(
        "{node}: an `{TAG_STORAGE_COMPATIBLE}` node must be top-level (RFC v2) or a child of /reserved-memory (RFC v3)"
    )]
    Misplaced { node: String },
    #[error(
        "{node}: tag storage in /reserved-memory must be `reusable` (RFC v3), or the kernel can never use it for data"
    )]
    NotReusable { node: String },
    #[error("{node}: tag storage cannot be `no-map`: the kernel must map it to use it for data")]
    NoMap { node: String },
    #[error("{node}: {problem} (Linux ignores every reserved region otherwise)")]
    ReservedMemory { node: String, problem: String },
    #[error(
        "{node}: the memory it covers, {target} less tag storage, is {} ranges ({ranges:?}), not one contiguous range",
        ranges.len()
    )]
    CoveredRanges {
        node: String,
        target: String,
        ranges: Vec<MemRange>,
    },
    #[error(
        "{node}: tag storage {:#x}..+{:#x} is 1/{} of the memory it covers ({target}: {:#x}..+{:#x}); it must be exactly 1/32",
        tags.base.as_u64(), tags.size, ratio(tags, covers), covers.base.as_u64(), covers.size
    )]
    Ratio {
        node: String,
        target: String,
        tags: MemRange,
        covers: MemRange,
    },
    #[error(
        "no memory: no available top-level node with device_type = \"memory\" and a non-empty `reg`"
    )]
    NoMemory,
    #[error(transparent)]
    Geometry(GeometryError),
}

/// `covers / tags` as a user reads it: `31`, `31.5`.
fn ratio(tags: &MemRange, covers: &MemRange) -> String {
    if tags.size != 0 && covers.size.is_multiple_of(tags.size) {
        return (covers.size / tags.size).to_string();
    }
    let r = covers.size as f64 / tags.size as f64;
    let s = format!("{r:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Whether `bytes` is to be read as a device tree (it starts with the magic).
pub fn is_dtb(bytes: &[u8]) -> bool {
    blob::has_magic(bytes)
}

impl Platform {
    /// The machine a flattened device tree describes. `path` names the file
    /// in errors; `bytes` is its content.
    pub fn from_dtb(path: &Path, bytes: &[u8]) -> Result<Self, PlatformError> {
        let dtb = |error| PlatformError::Dtb {
            path: path.to_owned(),
            error,
        };
        let (dram, regions) = layout(bytes).map_err(dtb)?;
        let policy = if regions.is_empty() {
            Design::NONE
        } else {
            Design::DYNAMIC
        };
        let spec = PlatformSpec::default();
        Self::build(
            policy,
            KernelSettings::from_spec(&spec),
            spec.page_size,
            &dram,
            &regions,
        )
        .map_err(|e| dtb(DtbError::Geometry(e)))
    }
}

/// One node of the tree with what discovery needs of it.
struct Node<'a> {
    path: String,
    /// Index of the parent in the node list; `None` for the root.
    parent: Option<usize>,
    props: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Node<'a> {
    /// The first property of that name (Linux `of_get_flat_dt_prop()`).
    fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.props.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// A string property without its terminating NULs.
    fn string(&self, name: &str) -> Option<&'a [u8]> {
        let value = self.prop(name)?;
        let end = value.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        Some(&value[..end])
    }

    /// Linux `of_fdt_device_is_available()`.
    fn is_available(&self) -> bool {
        matches!(self.string("status"), None | Some(b"okay" | b"ok"))
    }

    fn is_compatible(&self, with: &str) -> bool {
        self.prop("compatible")
            .is_some_and(|list| list.split(|&b| b == 0).any(|s| s == with.as_bytes()))
    }

    /// The node name without its unit address.
    fn base_name(&self) -> &str {
        let name = self.path.rsplit('/').next().unwrap_or_default();
        name.split('@').next().unwrap_or_default()
    }

    fn u32(&self, name: &'static str) -> Result<Option<u32>, DtbError> {
        let Some(value) = self.prop(name) else {
            return Ok(None);
        };
        let bytes: [u8; 4] = value.try_into().map_err(|_| DtbError::PropertySize {
            node: self.path.clone(),
            property: name,
            expected: "one 32-bit cell",
            len: value.len(),
        })?;
        Ok(Some(u32::from_be_bytes(bytes)))
    }

    fn require_u32(&self, name: &'static str) -> Result<u32, DtbError> {
        self.u32(name)?.ok_or_else(|| DtbError::MissingProperty {
            node: self.path.clone(),
            property: name,
        })
    }

    /// `#address-cells` or `#size-cells`: 1 or 2.
    fn cells(&self, name: &'static str, default: u32) -> Result<u32, DtbError> {
        match self.u32(name)?.unwrap_or(default) {
            value @ 1..=2 => Ok(value),
            value => Err(DtbError::Cells {
                node: self.path.clone(),
                property: name,
                value,
            }),
        }
    }

    /// The non-empty ranges of a `reg`-like property.
    fn ranges(&self, name: &'static str, cells: (u32, u32)) -> Result<Vec<MemRange>, DtbError> {
        let value = self.prop(name).ok_or_else(|| DtbError::MissingProperty {
            node: self.path.clone(),
            property: name,
        })?;
        let (address_cells, size_cells) = cells;
        let entry = 4 * (address_cells + size_cells) as usize;
        if value.len() % entry != 0 {
            return Err(DtbError::RegLength {
                node: self.path.clone(),
                property: name,
                len: value.len(),
                address_cells,
                size_cells,
            });
        }
        let number = |cells: &[u8]| cells.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        let split = 4 * address_cells as usize;
        let mut ranges = Vec::new();
        for chunk in value.chunks_exact(entry) {
            let (base, size) = (number(&chunk[..split]), number(&chunk[split..]));
            if size == 0 {
                continue;
            }
            if base.checked_add(size).is_none() {
                return Err(DtbError::RegWraps {
                    node: self.path.clone(),
                    property: name,
                    base: PhysAddr::new(base),
                    size,
                });
            }
            ranges.push(MemRange::new(base, size));
        }
        Ok(ranges)
    }

    /// `phandle`, or the older `linux,phandle` (Linux `of_get_flat_dt_phandle()`).
    fn phandle(&self) -> Result<Option<u32>, DtbError> {
        match self.u32("phandle")? {
            Some(p) => Ok(Some(p)),
            None => self.u32("linux,phandle"),
        }
    }
}

/// Every node of the tree, parents before children, in blob order.
fn flatten<'a>(fdt: &Fdt<'a>) -> Result<Vec<Node<'a>>, DtbError> {
    fn visit<'a>(
        node: FdtNode<'_, 'a>,
        path: String,
        parent: Option<usize>,
        out: &mut Vec<Node<'a>>,
    ) {
        let index = out.len();
        out.push(Node {
            path: path.clone(),
            parent,
            props: node.properties().map(|p| (p.name, p.value)).collect(),
        });
        for child in node.children() {
            let child_path = match path.as_str() {
                "/" => format!("/{}", child.name),
                _ => format!("{path}/{}", child.name),
            };
            visit(child, child_path, Some(index), out);
        }
    }
    // blob::check guarantees a root; an `fdt` that disagrees is input we
    // cannot read, not a reason to panic.
    let root = fdt.find_node("/").ok_or(BlobError::Struct {
        offset: 0,
        problem: StructProblem::NoRoot,
    })?;
    let mut nodes = Vec::new();
    visit(root, "/".to_owned(), None, &mut nodes);
    Ok(nodes)
}

/// Which RFC binding a tag storage node follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    /// Top-level node, phandle in `memory`.
    V2,
    /// `/reserved-memory` child, phandle in `tagged-memory`, `reusable`.
    V3,
}

impl Form {
    fn phandle_property(self) -> &'static str {
        match self {
            Form::V2 => "memory",
            Form::V3 => "tagged-memory",
        }
    }
}

/// A tag storage node, read but not yet reconciled with memory.
struct TagNode {
    node: usize,
    tags: MemRange,
    block_size: u64,
    /// The memory node the phandle points to.
    target: usize,
}

/// DRAM and tag regions of a device tree, before geometry validation.
fn layout(bytes: &[u8]) -> Result<(Vec<MemRange>, Vec<TagRegion>), DtbError> {
    let blob = blob::check(bytes)?;
    let fdt = Fdt::new(&blob).expect("BUG: fdt refused a header that blob::check accepted");
    let nodes = flatten(&fdt)?;
    let root = &nodes[0];
    let root_cells = (
        root.cells("#address-cells", DEFAULT_CELLS.0)?,
        root.cells("#size-cells", DEFAULT_CELLS.1)?,
    );

    let mut phandles: BTreeMap<u32, usize> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        if let Some(phandle) = node.phandle()? {
            if let Some(&other) = phandles.get(&phandle) {
                return Err(DtbError::DuplicatePhandle {
                    node: node.path.clone(),
                    other: nodes[other].path.clone(),
                    phandle,
                });
            }
            phandles.insert(phandle, index);
        }
    }

    // Memory nodes: index -> ranges.
    let mut memory: BTreeMap<usize, Vec<MemRange>> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        if is_memory_node(node) && node.is_available() {
            let property = if node.prop("linux,usable-memory").is_some() {
                "linux,usable-memory"
            } else {
                "reg"
            };
            memory.insert(index, node.ranges(property, root_cells)?);
        }
    }

    let mut tag_nodes = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        if node.is_compatible(TAG_STORAGE_COMPATIBLE) && node.is_available() {
            tag_nodes.push(tag_node(&nodes, index, root_cells, &phandles, &memory)?);
        }
    }
    let tag_ranges: Vec<MemRange> = tag_nodes.iter().map(|t| t.tags).collect();

    let mut regions = Vec::new();
    for t in &tag_nodes {
        let node = &nodes[t.node];
        let target = &nodes[t.target];
        let covered = merge(subtract(&memory[&t.target], &tag_ranges));
        let [covers] = covered[..] else {
            return Err(DtbError::CoveredRanges {
                node: node.path.clone(),
                target: target.path.clone(),
                ranges: covered,
            });
        };
        if t.tags.size.checked_mul(TAG_RATIO) != Some(covers.size) {
            return Err(DtbError::Ratio {
                node: node.path.clone(),
                target: target.path.clone(),
                tags: t.tags,
                covers,
            });
        }
        regions.push(TagRegion {
            tags: t.tags,
            covers,
            block_size: t.block_size,
        });
    }

    let all_memory: Vec<MemRange> = memory.values().flatten().copied().collect();
    let dram = merge(subtract(&all_memory, &tag_ranges));
    if dram.is_empty() {
        return Err(DtbError::NoMemory);
    }
    Ok((dram, regions))
}

/// A top-level node with `device_type = "memory"` (Linux scans only those).
fn is_memory_node(node: &Node<'_>) -> bool {
    node.parent == Some(0) && node.string("device_type") == Some(b"memory")
}

/// Reads one `arm,mte-tag-storage` node in whichever form it has.
fn tag_node(
    nodes: &[Node<'_>],
    index: usize,
    root_cells: (u32, u32),
    phandles: &BTreeMap<u32, usize>,
    memory: &BTreeMap<usize, Vec<MemRange>>,
) -> Result<TagNode, DtbError> {
    let node = &nodes[index];
    let path = || node.path.clone();
    let parent = node.parent.map(|p| &nodes[p]);
    let form = match parent {
        Some(p) if p.parent.is_none() => Form::V2,
        Some(p) if p.parent == Some(0) && p.base_name() == "reserved-memory" => Form::V3,
        _ => return Err(DtbError::Misplaced { node: path() }),
    };
    let cells = match (form, parent) {
        (Form::V3, Some(reserved)) => reserved_memory_cells(reserved, root_cells)?,
        _ => root_cells,
    };
    if form == Form::V3 {
        if node.prop("reusable").is_none() {
            return Err(DtbError::NotReusable { node: path() });
        }
        if node.prop("no-map").is_some() {
            return Err(DtbError::NoMap { node: path() });
        }
    }

    let ranges = node.ranges("reg", cells)?;
    let [tags] = ranges[..] else {
        return Err(DtbError::TagRanges {
            node: path(),
            ranges: ranges.len(),
        });
    };
    let block_size = node.require_u32("block-size")?;
    if block_size == 0 || u64::from(block_size) % BLOCK_SIZE_UNIT != 0 {
        return Err(DtbError::BlockSize {
            node: path(),
            block_size,
        });
    }

    let property = form.phandle_property();
    let phandle = node.require_u32(property)?;
    let target = *phandles.get(&phandle).ok_or(DtbError::DanglingPhandle {
        node: path(),
        property,
        phandle,
    })?;
    let target_node = &nodes[target];
    let not_memory = |reason| DtbError::NotMemory {
        node: path(),
        property,
        target: target_node.path.clone(),
        reason,
    };
    if target_node.string("device_type") != Some(b"memory") {
        return Err(not_memory(
            "is not a memory node (no device_type = \"memory\")",
        ));
    }
    if target_node.parent != Some(0) {
        return Err(not_memory("is not a top-level memory node"));
    }
    if !memory.contains_key(&target) {
        return Err(not_memory("is disabled (status)"));
    }
    Ok(TagNode {
        node: index,
        tags,
        block_size: u64::from(block_size),
        target,
    })
}

/// The cell sizes of `/reserved-memory`, which Linux requires to be the
/// root's, with a `ranges` property (`__reserved_mem_check_root()`).
fn reserved_memory_cells(
    reserved: &Node<'_>,
    root_cells: (u32, u32),
) -> Result<(u32, u32), DtbError> {
    let problem = |problem: String| DtbError::ReservedMemory {
        node: reserved.path.clone(),
        problem,
    };
    for (name, root) in [
        ("#address-cells", root_cells.0),
        ("#size-cells", root_cells.1),
    ] {
        let found = reserved.u32(name)?;
        if found != Some(root) {
            let found = found.map_or("missing".to_owned(), |f| format!("<{f}>"));
            return Err(problem(format!(
                "`{name}` must be the root's <{root}>, found {found}"
            )));
        }
    }
    if reserved.prop("ranges").is_none() {
        return Err(problem("missing `ranges`".to_owned()));
    }
    Ok(root_cells)
}

/// `ranges` with every byte of `holes` taken out. Ranges never wrap
/// (checked when read).
fn subtract(ranges: &[MemRange], holes: &[MemRange]) -> Vec<MemRange> {
    let end = |r: MemRange| r.base.as_u64() + r.size;
    let mut pieces: Vec<MemRange> = ranges.to_vec();
    for &hole in holes {
        let (h0, h1) = (hole.base.as_u64(), end(hole));
        pieces = pieces
            .into_iter()
            .flat_map(|r| {
                let (r0, r1) = (r.base.as_u64(), end(r));
                let below = (r0 < h0.min(r1)).then(|| MemRange::new(r0, h0.min(r1) - r0));
                let above = (h1.max(r0) < r1).then(|| MemRange::new(h1.max(r0), r1 - h1.max(r0)));
                below.into_iter().chain(above)
            })
            .collect();
    }
    pieces
}

/// Sorted, with touching ranges joined; overlapping ranges are left apart
/// for the geometry to report.
fn merge(mut ranges: Vec<MemRange>) -> Vec<MemRange> {
    ranges.sort();
    let mut out: Vec<MemRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.end() == Some(r.base.as_u64()) => last.size += r.size,
            _ => out.push(r),
        }
    }
    out
}
