//! Device trees of both RFC forms, built with `vm-fdt`, read back number for
//! number; and every way a tree can fail.

use super::*;
use mte::geometry::TagBlock;
use mte::{Pfn, PhysAddr};
use proptest::prelude::*;
use vm_fdt::FdtWriter;

const M: u64 = 1 << 20;

/// A property value.
enum V {
    U32(u32),
    Cells(Vec<u32>),
    Str(&'static str),
    Empty,
}

/// A node: name, properties, children.
struct N(&'static str, Vec<(&'static str, V)>, Vec<N>);

fn write(w: &mut FdtWriter, node: &N) {
    let N(name, props, children) = node;
    let handle = w.begin_node(name).unwrap();
    for (prop, value) in props {
        match value {
            V::U32(v) => w.property_u32(prop, *v),
            V::Cells(c) => w.property_array_u32(prop, c),
            V::Str(s) => w.property_string(prop, s),
            V::Empty => w.property_null(prop),
        }
        .unwrap();
    }
    for child in children {
        write(w, child);
    }
    w.end_node(handle).unwrap();
}

fn blob(root: N) -> Vec<u8> {
    let mut w = FdtWriter::new().unwrap();
    write(&mut w, &root);
    w.finish().unwrap()
}

/// `reg` with two address and two size cells per range.
fn reg(ranges: &[(u64, u64)]) -> V {
    V::Cells(
        ranges
            .iter()
            .flat_map(|&(base, size)| {
                [
                    base >> 32,
                    base & 0xffff_ffff,
                    size >> 32,
                    size & 0xffff_ffff,
                ]
            })
            .map(|c| c as u32)
            .collect(),
    )
}

/// The root with 2+2 cells, as on the FVP, and `children`.
fn root(children: Vec<N>) -> N {
    N(
        "",
        vec![
            ("#address-cells", V::U32(2)),
            ("#size-cells", V::U32(2)),
            ("compatible", V::Str("arm,fvp-base-revc")),
        ],
        children,
    )
}

fn memory(name: &'static str, phandle: u32, ranges: &[(u64, u64)]) -> N {
    N(
        name,
        vec![
            ("device_type", V::Str("memory")),
            ("reg", reg(ranges)),
            ("phandle", V::U32(phandle)),
        ],
        vec![],
    )
}

/// An RFC v2 tag storage node: top-level, phandle in `memory`.
fn tags_v2(name: &'static str, base: u64, size: u64, block: u32, memory: u32) -> N {
    N(
        name,
        vec![
            ("compatible", V::Str(TAG_STORAGE_COMPATIBLE)),
            ("reg", reg(&[(base, size)])),
            ("block-size", V::U32(block)),
            ("memory", V::U32(memory)),
        ],
        vec![],
    )
}

/// An RFC v3 tag storage node: `/reserved-memory` child, `tagged-memory`.
fn tags_v3(name: &'static str, base: u64, size: u64, block: u32, memory: u32) -> N {
    N(
        name,
        vec![
            ("compatible", V::Str(TAG_STORAGE_COMPATIBLE)),
            ("reg", reg(&[(base, size)])),
            ("block-size", V::U32(block)),
            ("tagged-memory", V::U32(memory)),
            ("reusable", V::Empty),
        ],
        vec![],
    )
}

fn reserved_memory(children: Vec<N>) -> N {
    N(
        "reserved-memory",
        vec![
            ("#address-cells", V::U32(2)),
            ("#size-cells", V::U32(2)),
            ("ranges", V::Empty),
        ],
        children,
    )
}

const FVP_DRAM: (u64, u64) = (0x8000_0000, 1984 * M);
const FVP_TAGS: (u64, u64) = (0xfc00_0000, 62 * M);

/// The FVP layout of the issue, RFC v2 form: 1984M at 0x8000_0000, 62M of
/// tags at 0xfc00_0000 right after, 4K blocks.
fn fvp_v2() -> Vec<u8> {
    blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 1),
    ]))
}

/// The same machine in RFC v3 form, with the tag range also described as a
/// memory node, as the RFC v3 FVP tree does (patch 35, `tags_memory0`).
fn fvp_v3() -> Vec<u8> {
    blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        memory("memory@fc000000", 2, &[FVP_TAGS]),
        reserved_memory(vec![
            N(
                "vram@18000000",
                vec![("reg", reg(&[(0x1800_0000, 8 * M)])), ("no-map", V::Empty)],
                vec![],
            ),
            tags_v3("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 1),
        ]),
    ]))
}

fn platform(bytes: &[u8]) -> Platform {
    Platform::from_dtb(Path::new("fvp.dtb"), bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn error(bytes: &[u8]) -> DtbError {
    match Platform::from_dtb(Path::new("bad.dtb"), bytes) {
        Err(PlatformError::Dtb { error, .. }) => error,
        other => panic!("expected a DTB error, got {other:?}"),
    }
}

/// The FVP numbers, worked out from docs/model.md §1 and the RFC v3
/// `order_to_num_blocks()`:
/// - mem.pages = 1984M / 4K = 507904;
/// - tag_storage.pages = 62M / 4K = 15872 = 507904 / 32;
/// - 4K blocks are one page: tag_storage.blocks = 15872;
/// - data page n has its tags at 0xfc00_0000 + n * 128.
fn assert_fvp(p: &Platform) {
    let g = p.geometry();
    assert_eq!(p.policy(), Design::DYNAMIC);
    assert_eq!(p.dram(), &[MemRange::new(FVP_DRAM.0, FVP_DRAM.1)]);
    assert_eq!(
        p.tag_regions(),
        &[TagRegion {
            tags: MemRange::new(FVP_TAGS.0, FVP_TAGS.1),
            covers: MemRange::new(FVP_DRAM.0, FVP_DRAM.1),
            block_size: 4096,
        }]
    );
    assert_eq!(g.dram_pages(), 507904);
    assert_eq!(g.tag_storage_pages(), 15872);
    assert_eq!(g.tag_blocks(), 15872);
    assert_eq!(g.block_pages(), 1);

    let first = Pfn::new(0x80000);
    let last = Pfn::new(0x80000 + 507904 - 1); // 0xfbfff
    assert_eq!(g.tag_bytes_of(first), Some(PhysAddr::new(0xfc00_0000)));
    assert_eq!(g.tag_bytes_of(first + 1), Some(PhysAddr::new(0xfc00_0080)));
    // Page 32 starts the second tag page and the second block.
    assert_eq!(g.tag_bytes_of(first + 32), Some(PhysAddr::new(0xfc00_1000)));
    // 507903 * 128 = 0x3df_ff80.
    assert_eq!(g.tag_bytes_of(last), Some(PhysAddr::new(0xffdf_ff80)));
    assert_eq!(g.tag_page_of(last), Some(Pfn::new(0xffdff)));
    assert_eq!(g.block_of(first + 31), Some(TagBlock::new(0)));
    assert_eq!(g.block_of(first + 32), Some(TagBlock::new(1)));
    assert_eq!(g.block_of(last), Some(TagBlock::new(15871)));
    // The tag storage itself is not DRAM and has no tags.
    assert!(!g.is_dram(Pfn::new(0xfc000)) && g.is_tag_storage(Pfn::new(0xfc000)));
    assert_eq!(g.tag_bytes_of(Pfn::new(0xfc000)), None);
    // order 0..5: one tag page; order 9 (2M): 512/32 = 16; order 10: 32.
    assert_eq!(g.blocks_for_order(mte::Order::new(0)), 1);
    assert_eq!(g.blocks_for_order(mte::Order::new(5)), 1);
    assert_eq!(g.blocks_for_order(mte::Order::new(9)), 16);
    assert_eq!(g.blocks_for_order(mte::Order::new(10)), 32);
    assert_eq!(*p.settings(), KernelSettings::default());
}

#[test]
fn fvp_rfc_v2_form() {
    assert_fvp(&platform(&fvp_v2()));
}

#[test]
fn fvp_rfc_v3_form_does_not_count_tag_storage_as_dram() {
    let p = platform(&fvp_v3());
    assert_fvp(&p);
    // Without the subtraction DRAM would be 507904 + 15872 pages.
    assert_eq!(p.geometry().dram_pages(), 507904);
}

#[test]
fn v3_tag_range_inside_the_covered_memory_node() {
    // One memory node lists data and tags, as two entries or as one range:
    // either way the covered memory is the node less its tag storage.
    for ranges in [
        vec![FVP_DRAM, FVP_TAGS],
        vec![(0x8000_0000, 1984 * M + 62 * M)],
    ] {
        let p = platform(&blob(root(vec![
            memory("memory@80000000", 1, &ranges),
            reserved_memory(vec![tags_v3(
                "tag-storage@fc000000",
                FVP_TAGS.0,
                FVP_TAGS.1,
                0x1000,
                1,
            )]),
        ])));
        assert_fvp(&p);
    }
}

/// The FVP tree of the RFC v2 cover letter and v3 patch 35: 2G at
/// 0x8000_0000 tagged by 64M at 0x8_f800_0000, and 1920M at 0x8_8000_0000
/// tagged by 60M at 0x8_fc00_0000.
fn rfc_fvp(v3: bool) -> Vec<u8> {
    let (mem0, mem1) = ((0x8000_0000, 2048 * M), (0x8_8000_0000, 0x7800_0000));
    let (tags0, tags1) = ((0x8_f800_0000, 64 * M), (0x8_fc00_0000, 0x3c0_0000));
    let mut children = vec![
        memory("memory@80000000", 1, &[mem0]),
        memory("memory@880000000", 2, &[mem1]),
    ];
    if v3 {
        children.push(memory("memory@8f8000000", 3, &[tags0]));
        children.push(memory("memory@8fc000000", 4, &[tags1]));
        children.push(reserved_memory(vec![
            tags_v3("tag-storage@8f8000000", tags0.0, tags0.1, 0x1000, 1),
            tags_v3("tag-storage@8fc000000", tags1.0, tags1.1, 0x1000, 2),
        ]));
    } else {
        children.push(tags_v2(
            "tag-storage@8f8000000",
            tags0.0,
            tags0.1,
            0x1000,
            1,
        ));
        children.push(tags_v2(
            "tag-storage@8fc000000",
            tags1.0,
            tags1.1,
            0x1000,
            2,
        ));
    }
    blob(root(children))
}

#[test]
fn the_rfc_fvp_tree_with_two_regions() {
    for v3 in [false, true] {
        let p = platform(&rfc_fvp(v3));
        let g = p.geometry();
        // (2048M + 1920M) / 4K = 524288 + 491520; (64M + 60M) / 4K.
        assert_eq!(g.dram_pages(), 1_015_808);
        assert_eq!(g.tag_storage_pages(), 16384 + 15360);
        assert_eq!(g.tag_blocks(), 31744);
        // Blocks are numbered region by region in tag storage address order:
        // the first page of the second bank is block 16384.
        let bank1 = Pfn::new(0x880000);
        assert_eq!(g.tag_bytes_of(bank1), Some(PhysAddr::new(0x8_fc00_0000)));
        assert_eq!(g.block_of(bank1), Some(TagBlock::new(16384)));
        assert_eq!(g.block_of(Pfn::new(0x80000)), Some(TagBlock::new(0)));
        assert_eq!(
            p.tag_regions()[1].covers,
            MemRange::new(0x8_8000_0000, 0x7800_0000)
        );
    }
}

#[test]
fn bigger_blocks() {
    // 64K blocks: 16 pages each; 15872 / 16 = 992 blocks; order 9 needs one.
    let p = platform(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1_0000, 1),
    ])));
    let g = p.geometry();
    assert_eq!((g.block_pages(), g.tag_blocks()), (16, 992));
    assert_eq!(g.blocks_for_order(mte::Order::new(9)), 1);
    assert_eq!(p.block_size(), Some(64 << 10));
}

#[test]
fn no_tag_storage_is_a_machine_without_mte() {
    let p = platform(&blob(root(vec![memory("memory@80000000", 1, &[FVP_DRAM])])));
    assert_eq!(p.policy(), Design::NONE);
    let g = p.geometry();
    assert_eq!(
        (g.dram_pages(), g.tag_storage_pages(), g.tag_blocks()),
        (507904, 0, 0)
    );
}

#[test]
fn linux_conventions_for_memory_nodes() {
    // Root without cell sizes: Linux assumes one address and one size cell.
    // `linux,usable-memory` wins over `reg`; zero-sized entries and disabled
    // nodes are skipped; nodes below the top level are not memory.
    let p = platform(&blob(N(
        "",
        vec![],
        vec![
            N(
                "memory@80000000",
                vec![
                    ("device_type", V::Str("memory")),
                    (
                        "reg",
                        V::Cells(vec![0x8000_0000, 0x800_0000, 0x9000_0000, 0]),
                    ),
                    (
                        "linux,usable-memory",
                        V::Cells(vec![0x8000_0000, 0x400_0000]),
                    ),
                ],
                vec![],
            ),
            N(
                "memory@c0000000",
                vec![
                    ("device_type", V::Str("memory")),
                    ("reg", V::Cells(vec![0xc000_0000, 0x400_0000])),
                    ("status", V::Str("disabled")),
                ],
                vec![],
            ),
            N(
                "soc",
                vec![],
                vec![N(
                    "memory@d0000000",
                    vec![
                        ("device_type", V::Str("memory")),
                        ("reg", V::Cells(vec![0xd000_0000, 0x400_0000])),
                    ],
                    vec![],
                )],
            ),
        ],
    )));
    assert_eq!(p.dram(), &[MemRange::new(0x8000_0000, 64 * M)]);
    assert_eq!(p.policy(), Design::NONE);
}

#[test]
fn adjacent_memory_nodes_are_one_range() {
    let p = platform(&blob(root(vec![
        memory("memory@80000000", 1, &[(0x8000_0000, 1024 * M)]),
        memory("memory@c0000000", 2, &[(0xc000_0000, 960 * M)]),
    ])));
    assert_eq!(p.dram(), &[MemRange::new(FVP_DRAM.0, FVP_DRAM.1)]);
}

#[test]
fn nops_from_in_place_editing_are_tolerated() {
    // Put an FDT_NOP between the root's properties (libfdt's
    // fdt_nop_property() leaves such holes).
    let mut bytes = fvp_v2();
    let off_struct = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let at = off_struct + 8; // after the root's BEGIN_NODE and empty name
    bytes.splice(at..at, 4u32.to_be_bytes());
    for field in [1usize, 3, 9] {
        let v = u32::from_be_bytes(bytes[4 * field..4 * field + 4].try_into().unwrap());
        bytes[4 * field..4 * field + 4].copy_from_slice(&(v + 4).to_be_bytes());
    }
    assert_fvp(&platform(&bytes));
}

// ---- errors ----

#[test]
fn wrong_ratio_names_the_ratio() {
    // 64M of tags for 1984M is 1/31.
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        tags_v2("tag-storage@fc000000", 0xfc00_0000, 64 * M, 0x1000, 1),
    ])));
    assert_eq!(
        err.to_string(),
        "/tag-storage@fc000000: tag storage 0xfc000000..+0x4000000 is 1/31 of the memory it covers (/memory@80000000: 0x80000000..+0x7c000000); it must be exactly 1/32"
    );
    // 1984M / 63M is not a whole number.
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        tags_v2("tag-storage@fc000000", 0xfc00_0000, 63 * M, 0x1000, 1),
    ])));
    assert!(err.to_string().contains("is 1/31.492 of"), "{err}");
}

#[test]
fn overlapping_memory_is_refused() {
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        memory("memory@90000000", 2, &[(0x9000_0000, 64 * M)]),
    ])));
    assert!(
        matches!(err, DtbError::Geometry(GeometryError::Overlap { .. })),
        "{err}"
    );
    // Two tag regions over the same range.
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        memory("memory@100000000", 2, &[(0x1_0000_0000, FVP_DRAM.1)]),
        tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 1),
        tags_v2("tag-storage@fc000001", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 2),
    ])));
    assert!(
        matches!(err, DtbError::Geometry(GeometryError::Overlap { .. })),
        "{err}"
    );
}

#[test]
fn unaligned_tag_storage_is_refused() {
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        tags_v2("tag-storage@fc000800", 0xfc00_0800, FVP_TAGS.1, 0x1000, 1),
    ])));
    assert!(
        matches!(err, DtbError::Geometry(GeometryError::Unaligned { .. })),
        "{err}"
    );
    // 62M is not a whole number of 4M blocks.
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x40_0000, 1),
    ])));
    assert!(
        matches!(
            err,
            DtbError::Geometry(GeometryError::BlockAlignment { .. })
        ),
        "{err}"
    );
}

#[test]
fn block_size_must_be_a_multiple_of_4k() {
    for block in [0, 0x800, 0x1800 + 0x100] {
        let err = error(&blob(root(vec![
            memory("memory@80000000", 1, &[FVP_DRAM]),
            tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, block, 1),
        ])));
        assert_eq!(
            err,
            DtbError::BlockSize {
                node: "/tag-storage@fc000000".into(),
                block_size: block
            }
        );
    }
    // 12K is a multiple of 4K but not a power of two: the geometry refuses it.
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x3000, 1),
    ])));
    assert!(
        matches!(err, DtbError::Geometry(GeometryError::BlockSize { .. })),
        "{err}"
    );
}

#[test]
fn phandles_must_point_to_memory() {
    let dangling = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 7),
    ])));
    assert_eq!(
        dangling.to_string(),
        "/tag-storage@fc000000: `memory` = <0x7> points to no node"
    );
    let not_memory = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        N("cpus", vec![("phandle", V::U32(2))], vec![]),
        reserved_memory(vec![tags_v3(
            "tag-storage@fc000000",
            FVP_TAGS.0,
            FVP_TAGS.1,
            0x1000,
            2,
        )]),
    ])));
    assert_eq!(
        not_memory.to_string(),
        "/reserved-memory/tag-storage@fc000000: `tagged-memory` points to /cpus, which is not a memory node (no device_type = \"memory\")"
    );
    let disabled = error(&blob(root(vec![
        memory("memory@80000000", 1, &[(0x4000_0000, 64 * M)]),
        N(
            "memory@c0000000",
            vec![
                ("device_type", V::Str("memory")),
                ("reg", reg(&[FVP_DRAM])),
                ("phandle", V::U32(2)),
                ("status", V::Str("disabled")),
            ],
            vec![],
        ),
        tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 2),
    ])));
    assert!(
        disabled.to_string().ends_with("which is disabled (status)"),
        "{disabled}"
    );
    let nested = error(&blob(root(vec![
        memory("memory@40000000", 1, &[(0x4000_0000, 64 * M)]),
        N(
            "soc",
            vec![],
            vec![memory("memory@80000000", 2, &[FVP_DRAM])],
        ),
        tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 2),
    ])));
    assert!(
        nested
            .to_string()
            .ends_with("is not a top-level memory node"),
        "{nested}"
    );
}

#[test]
fn duplicate_phandles_are_refused() {
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        N("cpus", vec![("linux,phandle", V::U32(1))], vec![]),
    ])));
    assert_eq!(
        err.to_string(),
        "/cpus: phandle 0x1 is also the phandle of /memory@80000000"
    );
}

#[test]
fn missing_properties_are_named() {
    let without = |drop: &str, v3: bool| {
        let mut node = if v3 {
            tags_v3("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 1)
        } else {
            tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 1)
        };
        node.1.retain(|(name, _)| *name != drop);
        let mut children = vec![memory("memory@80000000", 1, &[FVP_DRAM])];
        if v3 {
            children.push(reserved_memory(vec![node]));
        } else {
            children.push(node);
        }
        error(&blob(root(children)))
    };
    for (property, v3) in [
        ("reg", false),
        ("block-size", false),
        ("memory", false),
        ("reg", true),
        ("block-size", true),
        ("tagged-memory", true),
    ] {
        let err = without(property, v3);
        assert!(
            matches!(&err, DtbError::MissingProperty { property: p, .. } if *p == property),
            "{property}: {err}"
        );
    }
    assert!(matches!(
        without("reusable", true),
        DtbError::NotReusable { .. }
    ));
    // A memory node without `reg` is malformed, not silently empty.
    let err = error(&blob(root(vec![N(
        "memory@80000000",
        vec![("device_type", V::Str("memory"))],
        vec![],
    )])));
    assert_eq!(err.to_string(), "/memory@80000000: missing `reg`");
}

#[test]
fn v3_nodes_follow_the_reserved_memory_rules() {
    let mut no_map = tags_v3("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 1);
    no_map.1.push(("no-map", V::Empty));
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        reserved_memory(vec![no_map]),
    ])));
    assert!(matches!(err, DtbError::NoMap { .. }), "{err}");

    let mut one_cell = reserved_memory(vec![]);
    one_cell.1[0].1 = V::U32(1);
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        N(
            one_cell.0,
            one_cell.1,
            vec![tags_v3(
                "tag-storage@fc000000",
                FVP_TAGS.0,
                FVP_TAGS.1,
                0x1000,
                1,
            )],
        ),
    ])));
    assert_eq!(
        err.to_string(),
        "/reserved-memory: `#address-cells` must be the root's <2>, found <1> (Linux ignores every reserved region otherwise)"
    );
}

#[test]
fn tag_storage_elsewhere_is_misplaced() {
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        N(
            "soc",
            vec![],
            vec![tags_v2(
                "tag-storage@fc000000",
                FVP_TAGS.0,
                FVP_TAGS.1,
                0x1000,
                1,
            )],
        ),
    ])));
    assert_eq!(
        err,
        DtbError::Misplaced {
            node: "/soc/tag-storage@fc000000".into()
        }
    );
}

#[test]
fn covered_memory_must_be_one_range() {
    // The memory node has a hole in the middle: two ranges to cover.
    let err = error(&blob(root(vec![
        memory(
            "memory@80000000",
            1,
            &[(0x8000_0000, 992 * M), (0xc000_0000, 992 * M)],
        ),
        tags_v2("tag-storage@fc000000", 0x1_0000_0000, FVP_TAGS.1, 0x1000, 1),
    ])));
    assert!(
        matches!(&err, DtbError::CoveredRanges { ranges, .. } if ranges.len() == 2),
        "{err}"
    );
    // Tag storage with two ranges.
    let mut two = tags_v2("tag-storage@fc000000", FVP_TAGS.0, FVP_TAGS.1, 0x1000, 1);
    two.1[1].1 = reg(&[FVP_TAGS, (0x1_0000_0000, M)]);
    let err = error(&blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        two,
    ])));
    assert_eq!(
        err,
        DtbError::TagRanges {
            node: "/tag-storage@fc000000".into(),
            ranges: 2
        }
    );
}

#[test]
fn malformed_cells_and_reg() {
    let mut three = root(vec![memory("memory@80000000", 1, &[FVP_DRAM])]);
    three.1[0].1 = V::U32(3);
    assert!(matches!(
        error(&blob(three)),
        DtbError::Cells { value: 3, .. }
    ));
    let short = blob(root(vec![N(
        "memory@80000000",
        vec![
            ("device_type", V::Str("memory")),
            ("reg", V::Cells(vec![0, 0x8000_0000, 0])),
        ],
        vec![],
    )]));
    assert!(matches!(error(&short), DtbError::RegLength { len: 12, .. }));
    let wraps = blob(root(vec![memory(
        "memory@80000000",
        1,
        &[(u64::MAX - 4095, 8192)],
    )]));
    assert!(matches!(error(&wraps), DtbError::RegWraps { .. }));
    let wide_block = blob(root(vec![
        memory("memory@80000000", 1, &[FVP_DRAM]),
        N(
            "tag-storage@fc000000",
            vec![
                ("compatible", V::Str(TAG_STORAGE_COMPATIBLE)),
                ("reg", reg(&[FVP_TAGS])),
                ("block-size", V::Cells(vec![0, 0x1000])),
                ("memory", V::U32(1)),
            ],
            vec![],
        ),
    ]));
    assert!(matches!(
        error(&wide_block),
        DtbError::PropertySize {
            property: "block-size",
            len: 8,
            ..
        }
    ));
    assert_eq!(error(&blob(root(vec![]))), DtbError::NoMemory);
}

#[test]
fn blob_errors_carry_the_file_name() {
    let bytes = fvp_v2();
    let err = Platform::from_dtb(Path::new("cut.dtb"), &bytes[..100]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cut.dtb: malformed device tree: the header says {} bytes, the file has 100",
            bytes.len()
        )
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes at all: an error or a machine, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Platform::from_dtb(Path::new("x.dtb"), &bytes);
        let mut with_magic = FDT_MAGIC.to_be_bytes().to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = Platform::from_dtb(Path::new("x.dtb"), &with_magic);
    }

    /// A real tree with a few bytes changed, or cut short: never a panic.
    #[test]
    fn damaged_trees_never_panic(
        v3 in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = if v3 { fvp_v3() } else { fvp_v2() };
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = Platform::from_dtb(Path::new("x.dtb"), &bytes);
    }
}
