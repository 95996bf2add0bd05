//! The CUDA libraries: a missing GPU said clearly, the files looked for in
//! cudarc's order and read back from /proc/self/maps, NVRTC's options.

/// Asking for a GPU where there is none (or in a build without the `cuda`
/// feature) is an error that says what to do, never a panic.
#[test]
fn a_missing_gpu_is_a_clear_error() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("skipped: this machine has a GPU (scripts/check-gpu tests it)");
        return;
    }
    let e = match crate::cuda::open(0) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a GPU on a machine without /dev/nvidia0"),
    };
    eprintln!("{e}");
    assert!(e.starts_with("GPU cuda:0: "), "{e}");
    if cfg!(feature = "cuda") {
        assert!(e.contains("not found") || e.contains("CUDA"), "{e}");
    } else {
        assert!(e.contains("--features cuda"), "{e}");
    }
    // What `main-score inspect --device cuda` calls: errors too, never a panic.
    let e = crate::cuda::libraries(0)
        .and_then(|_| crate::cuda::device_report(0))
        .expect_err("no GPU here")
        .to_string();
    assert!(e.starts_with("GPU cuda:0: "), "{e}");
}

/// Libraries are looked for under cudarc's names in cudarc's order, so the
/// file checked is the file cudarc loads: `libcuda.so` (which may be a
/// toolkit's link stub) before `libcuda.so.1`.
#[cfg(feature = "cuda")]
#[test]
fn cuda_libraries_are_looked_for_in_cudarcs_order() {
    use crate::cuda::driver::{candidates, LIBRARIES};
    for (what, stems) in LIBRARIES {
        let ours = candidates(stems);
        let cudarcs: Vec<String> = stems
            .iter()
            .flat_map(|s| cudarc::get_lib_name_candidates(s))
            .collect();
        assert_eq!(ours, cudarcs, "{what}");
    }
    let driver = candidates(LIBRARIES[0].1);
    let at = |n: &str| driver.iter().position(|c| c == n).unwrap();
    assert_eq!(driver[0], "libcuda.so");
    assert!(at("libcuda.so.13") < at("libcuda.so.1"));
    let lt = candidates(LIBRARIES[3].1);
    assert_eq!(lt[0], "libcublasLt.so");
}

#[cfg(feature = "cuda")]
#[test]
fn library_files_and_releases_are_read_from_proc_maps() {
    use crate::cuda::driver::{mapped_files, release_of};
    let maps = "\
7f0000000000-7f0000001000 r--p 00000000 00:2a 123 /usr/local/cuda-13.0/lib64/libcublasLt.so.13.0.2.14
7f0000001000-7f0000002000 r-xp 00001000 00:2a 123 /usr/local/cuda-13.0/lib64/libcublasLt.so.13.0.2.14
7f0000002000-7f0000003000 r--p 00000000 00:2a 124 /usr/local/cuda-13.0/lib64/libcublas.so.13.0.2.14
7f0000003000-7f0000004000 r--p 00000000 00:2a 125 /opt/my libs/libcuda.so.580.159.04
7f0000004000-7f0000005000 rw-p 00000000 00:00 0 
7f0000005000-7f0000006000 r--p 00000000 00:2a 126 /usr/lib/x86_64-linux-gnu/libcudart.so.13.0.96
7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0                          [stack]
";
    assert_eq!(
        mapped_files(maps, "libcublas.so"),
        ["/usr/local/cuda-13.0/lib64/libcublas.so.13.0.2.14"]
    );
    assert_eq!(
        mapped_files(maps, "libcublasLt.so"),
        ["/usr/local/cuda-13.0/lib64/libcublasLt.so.13.0.2.14"]
    );
    assert_eq!(
        mapped_files(maps, "libcuda.so"),
        ["/opt/my libs/libcuda.so.580.159.04"]
    );
    assert!(mapped_files(maps, "libnvrtc.so").is_empty());
    assert_eq!(
        release_of("/usr/local/cuda-13.0/lib64/libcublasLt.so.13.0.2.14"),
        Some("13.0.2.14")
    );
    assert_eq!(release_of("/x/libcublas.so"), None);
}

/// Once the kernels are compiled, the NVRTC this process loaded is named
/// by its real file (what `inspect --device cuda` prints), and it is the
/// one cudarc's first candidate finds.
#[cfg(feature = "cuda")]
#[test]
fn the_loaded_nvrtc_is_named_by_its_file() {
    if !crate::cuda::driver::nvrtc_present() {
        eprintln!("skipped: libnvrtc was not found (scripts/nvrtc-lib)");
        return;
    }
    crate::cuda::driver::compile_kernels("compute_80", "test").unwrap_or_else(|e| panic!("{e}"));
    let files = crate::cuda::driver::loaded_library_files();
    eprintln!("{files:?}");
    let nvrtc: Vec<&String> = files
        .iter()
        .filter(|(p, _)| *p == "libnvrtc.so")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(nvrtc.len(), 1, "{files:?}");
    assert!(std::path::Path::new(nvrtc[0]).is_file(), "{}", nvrtc[0]);
}

/// The trainer's AdamW kernel compiles with NVRTC (its options: the same
/// IEEE ones) for Ampere and Hopper, its entry in the PTX; its arithmetic
/// is tested against the CPU's update in trainer/tests/adamw_kernel.rs.
#[cfg(feature = "cuda")]
#[test]
fn the_adamw_kernel_compiles_with_nvrtc() {
    if !crate::cuda::driver::nvrtc_present() {
        eprintln!("skipped: libnvrtc was not found (scripts/nvrtc-lib)");
        return;
    }
    use crate::cuda::{ADAMW_SOURCE, NVRTC_OPTIONS};
    for arch in ["sm_80", "sm_90", "compute_90"] {
        let image = crate::cuda::driver::compile_source(
            "adamw.cu",
            ADAMW_SOURCE,
            arch,
            NVRTC_OPTIONS,
            "test",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(image.len() > 1000, "{arch}: {} bytes", image.len());
        if arch.starts_with("compute") {
            let ptx = String::from_utf8_lossy(&image);
            assert!(
                ptx.contains(".entry adamw_step("),
                "{arch}: no entry adamw_step"
            );
        }
    }
}

/// The kernel source compiles with NVRTC for the GPUs MAIN targets, so a
/// syntax error in kernels.cu is caught on a machine without a GPU.
/// NVRTC comes from PyPI's nvidia-cuda-nvrtc (scripts/test puts it on
/// LD_LIBRARY_PATH); without it the test says so and passes.
#[cfg(feature = "cuda")]
#[test]
fn kernels_compile_with_nvrtc() {
    if !crate::cuda::driver::nvrtc_present() {
        eprintln!("skipped: libnvrtc was not found (pip install nvidia-cuda-nvrtc, then put its lib/ on LD_LIBRARY_PATH)");
        return;
    }
    // Ampere, Hopper (H100/H200) as cubins, and portable PTX.
    for arch in ["sm_80", "sm_90", "compute_80"] {
        let image =
            crate::cuda::driver::compile_kernels(arch, "test").unwrap_or_else(|e| panic!("{e}"));
        assert!(image.len() > 1000, "{arch}: {} bytes", image.len());
        if arch.starts_with("compute") {
            let ptx = String::from_utf8_lossy(&image);
            for k in crate::cuda::KERNELS {
                assert!(
                    ptx.contains(&format!(".entry {k}(")),
                    "{arch}: no entry {k}"
                );
            }
        }
        eprintln!("{arch}: {} bytes", image.len());
    }
    let e = crate::cuda::driver::compile_kernels("sm_1", "test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("compiling kernels.cu for sm_1"), "{e}");
}

/// NVRTC itself, with the options the GPU gets, emits no fused
/// multiply-add in the kernels the CPU oracle checks bit for bit or to
/// the last rounding (decoders, embedding, RMSNorm, RoPE, row gather); with
/// its default it does (so this test can see one). Kernels that call
/// `expf` keep the fused operations of CUDA's own `expf`, which the tests
/// bound by tolerance.
#[cfg(feature = "cuda")]
#[test]
fn nvrtc_fuses_no_multiply_add_into_the_exact_kernels() {
    if !crate::cuda::driver::nvrtc_present() {
        eprintln!("skipped: libnvrtc was not found (scripts/nvrtc-lib)");
        return;
    }
    let fused_entries = |options: &[&str]| -> Vec<String> {
        let image = crate::cuda::driver::compile_kernels_with("compute_90", options, "test")
            .unwrap_or_else(|e| panic!("{e}"));
        let ptx = String::from_utf8_lossy(&image).into_owned();
        let mut out = Vec::new();
        for k in crate::cuda::KERNELS {
            let exact = ["dequant_", "embed_", "add_rmsnorm_", "rope", "gather_rows_"];
            if !exact.iter().any(|p| k.starts_with(p)) {
                continue;
            }
            let start = ptx
                .find(&format!(".entry {k}("))
                .unwrap_or_else(|| panic!("no entry {k}"));
            let body = &ptx[start..];
            let body = &body[..body[1..].find(".entry ").map_or(body.len(), |e| e + 1)];
            if body.contains("fma.") {
                out.push(k.to_string());
            }
        }
        out
    };
    let fused = fused_entries(crate::cuda::NVRTC_OPTIONS);
    assert!(fused.is_empty(), "fused multiply-adds in {fused:?}");
    let default: Vec<&str> = crate::cuda::NVRTC_OPTIONS
        .iter()
        .copied()
        .filter(|o| !o.starts_with("--fmad"))
        .collect();
    let fused = fused_entries(&default);
    eprintln!("NVRTC's default fuses in {fused:?}");
    assert!(
        fused.iter().any(|k| k == "dequant_q4_1_f32"),
        "NVRTC's default should fuse q * d + m: {fused:?}"
    );
}
