//! Gives libmain.so the SONAME a C user expects (`libmain.so.0.1` for 0.1.x,
//! `libmain.so.1` from 1.0), so programs record the ABI version they were
//! linked against, and `scripts/install-libmain` can install the usual
//! `libmain.so.X.Y.Z` file with its two symlinks.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap();
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // Before 1.0 a minor release may break the ABI, so it is part of the name.
    let abi = if major == "0" {
        format!("0.{minor}")
    } else {
        major
    };
    if target_os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmain.so.{abi}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
