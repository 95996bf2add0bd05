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
        link_soname_in_target_dir(&abi);
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// `cargo build -p main-ffi` alone leaves `target/<profile>/libmain.so`,
/// whose SONAME names `libmain.so.X.Y`: a program linked against it there
/// asks for that name at run time. A link of that name beside it (as
/// `scripts/install-libmain` makes in the prefix) lets such a program start
/// with `LD_LIBRARY_PATH=target/<profile>`. OUT_DIR is
/// `<profile>/build/main-ffi-HASH/out`; anything else is left alone.
fn link_soname_in_target_dir(abi: &str) {
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let out_dir = std::path::PathBuf::from(out_dir);
    let mut up = out_dir.ancestors();
    let (Some(_out), Some(_pkg), Some(build), Some(profile)) =
        (up.next(), up.next(), up.next(), up.next())
    else {
        return;
    };
    if build.file_name() != Some(std::ffi::OsStr::new("build")) {
        return;
    }
    let link = profile.join(format!("libmain.so.{abi}"));
    if std::fs::read_link(&link).is_ok_and(|target| target == std::path::Path::new("libmain.so")) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink("libmain.so", &link);
}
