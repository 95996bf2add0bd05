//! `include/main.h` is generated from this crate by cbindgen and committed.
//! This test regenerates it in memory and fails when the committed copy is
//! stale. Rewrite it with:
//!
//!     MAIN_UPDATE_HEADER=1 cargo test -p main-ffi --test header

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("ffi/cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not parse ffi/src")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = crate_dir.join("../include/main.h");
    if std::env::var_os("MAIN_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("writing include/main.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/main.h is stale: it differs from what ffi/src generates, first at line {}.\n\
             committed: {:?}\ngenerated: {:?}\n\
             Rewrite it with: MAIN_UPDATE_HEADER=1 cargo test -p main-ffi --test header",
            line + 1,
            committed.lines().nth(line).unwrap_or("<end of file>"),
            generated.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}
