//! Builds the recording shim (`shim/mte_shim.c`) into a shared object with
//! the system C compiler; the library embeds it (`include_bytes!`) so the
//! installed tool needs no file beside it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "shim/mte_shim.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("libmtesim_shim.so");
    // cc finds the compiler cargo's target wants (CC, the target's gcc or
    // cc); the flags are ours: a position-independent shared object whose
    // only exported symbols are the wrapped functions.
    let compiler = cc::Build::new().get_compiler();
    let mut cmd: Command = compiler.to_command();
    cmd.args([
        "-O2",
        "-fPIC",
        "-shared",
        "-fvisibility=hidden",
        "-fno-stack-protector",
        "-Wall",
        "-Wextra",
        "-o",
    ])
    .arg(&object)
    .arg(source)
    .arg("-ldl");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler ({cmd:?}): {e}"));
    assert!(
        status.success(),
        "building the recording shim failed: {cmd:?}"
    );
}
