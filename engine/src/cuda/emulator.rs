//! A [`Backend`] that runs the real kernel source on the CPU, so the whole
//! GPU path (weight decoding, the packed forward pass, the fused head, the
//! scorer's batching) is tested here without a GPU. `kernels.cu` is compiled
//! with the system C++ compiler against `emulator.hpp` (fibers for CUDA
//! threads) into a shared library that is loaded once per test process,
//! with the C++ flags that round as NVRTC's options do ([`cxx_flags`]).
//! Matrix products are plain loops accumulating in f64 (cuBLAS's part).
//!
//! "Device" memory is host memory, so addresses are host addresses; a
//! memory limit makes out-of-memory paths testable.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::backend::{Arg, Backend, DevPtr, Elem, Gemm};
use super::{KERNELS, KERNEL_SOURCE, NVRTC_OPTIONS};
use crate::error::{Error, Result};

type LaunchFn = unsafe extern "C" fn(*const c_char, u32, u32, *mut *mut c_void) -> i32;

struct Library {
    _lib: libloading::Library,
    launch: LaunchFn,
}

/// The host C++ compiler's flags that give the arithmetic NVRTC gives with
/// `nvrtc_options` (the list `driver.rs` passes, [`NVRTC_OPTIONS`]), so
/// the emulator rounds as the GPU does. An option without a translation
/// here is refused: a new NVRTC option must say what it means on the CPU.
pub fn cxx_flags(nvrtc_options: &[&str]) -> Vec<&'static str> {
    let mut flags = vec!["-std=c++17"];
    for &o in nvrtc_options {
        match o {
            "--std=c++17" => {}
            // Each product and sum rounded on its own, as the CPU oracle does.
            "--fmad=false" => flags.push("-ffp-contract=off"),
            // NVRTC's default: `a * b + c` fused where the compiler likes.
            // Only an x86 CPU with FMA can show that; elsewhere the flag
            // changes nothing and tests that need it say so.
            "--fmad=true" => flags.extend(["-mfma", "-ffp-contract=fast"]),
            // x86-64's SSE arithmetic keeps subnormals and rounds division and
            // square root correctly unless told otherwise.
            "--ftz=false" | "--prec-div=true" | "--prec-sqrt=true" => {}
            other => panic!("emulator: no C++ translation of the NVRTC option {other}"),
        }
    }
    flags
}

/// Whether this CPU can fuse a multiply and an add (so `--fmad=true` can be
/// emulated).
pub fn host_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Builds (once per process and option list) and loads the emulated kernels.
fn library(nvrtc_options: &[&str]) -> &'static Library {
    static LIBS: Mutex<Vec<(Vec<String>, &'static Library)>> = Mutex::new(Vec::new());
    let key: Vec<String> = nvrtc_options.iter().map(|o| o.to_string()).collect();
    let mut libs = LIBS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, lib)) = libs.iter().find(|(k, _)| *k == key) {
        return lib;
    }
    let lib: &'static Library = Box::leak(Box::new(build(nvrtc_options, libs.len())));
    libs.push((key, lib));
    lib
}

fn build(nvrtc_options: &[&str], n: usize) -> Library {
    let dir = std::env::temp_dir().join(format!("main-cuda-emu-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("emulator: temp dir");
    let header = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cuda/emulator.hpp");
    std::fs::write(dir.join("kernels.cu"), KERNEL_SOURCE).expect("emulator: write kernels");
    let mut table = String::new();
    for k in KERNELS {
        table.push_str(&format!("    {{\"{k}\", &emu::launch<{k}>}},\n"));
    }
    let registry = format!(
        "#include \"{header}\"\n#include \"kernels.cu\"\n\
         static const emu::Entry TABLE[] = {{\n{table}}};\n\
         extern \"C\" int emu_launch(const char* name, unsigned grid, unsigned block, void** params) {{\n\
         \x20   for (const auto& e : TABLE) if (strcmp(e.name, name) == 0) {{\n\
         \x20       emu::g_kernel = e.name;\n\
         \x20       emu::Dim3 g, b; g.x = grid; b.x = block;\n\
         \x20       e.launch(g, b, params);\n\
         \x20       return 0;\n\
         \x20   }}\n\
         \x20   return -1;\n\
         }}\n"
    );
    let src = dir.join("registry.cpp");
    std::fs::write(&src, registry).expect("emulator: write registry");
    let so: PathBuf = dir.join("libmain_cuda_emu.so");
    let status = std::process::Command::new("c++")
        .args(cxx_flags(nvrtc_options))
        // No _FORTIFY_SOURCE: its longjmp check rejects the switch between fiber stacks.
        .args(["-O2", "-U_FORTIFY_SOURCE", "-shared", "-fPIC", "-w", "-o"])
        .arg(&so)
        .arg(&src)
        .current_dir(&dir)
        .status()
        .expect("emulator: run c++ (a C++17 compiler is needed for the GPU kernel tests)");
    assert!(
        status.success(),
        "emulator: kernels.cu does not compile as C++"
    );
    // SAFETY: the library was just built from our own source; its one
    // entry point has the signature declared in `LaunchFn`.
    unsafe {
        let lib = libloading::Library::new(&so).expect("emulator: load library");
        let launch = *lib
            .get::<LaunchFn>(b"emu_launch\0")
            .expect("emulator: emu_launch");
        Library { _lib: lib, launch }
    }
}

/// The CPU stand-in for a GPU.
pub struct Emulator {
    /// The kernels, built as NVRTC would build them with some options.
    lib: &'static Library,
    /// Address -> allocation (kept as u64 words for alignment).
    blocks: Mutex<HashMap<DevPtr, Box<[u64]>>>,
    limit: AtomicUsize,
    /// Bytes `free_memory` claims beyond the truth, as a fragmented device
    /// does: allocations then fail although the sizing said they fit.
    overstate: AtomicUsize,
}

impl Emulator {
    /// A device with `limit` bytes of memory, its kernels built with the
    /// options the GPU gets ([`NVRTC_OPTIONS`]).
    pub fn new(limit: usize) -> Emulator {
        Emulator::with_nvrtc_options(limit, NVRTC_OPTIONS)
    }

    /// A device whose kernels are built as NVRTC builds them with
    /// `nvrtc_options` (tests: what other options would do).
    pub fn with_nvrtc_options(limit: usize, nvrtc_options: &[&str]) -> Emulator {
        Emulator {
            lib: library(nvrtc_options),
            blocks: Mutex::new(HashMap::new()),
            limit: AtomicUsize::new(limit),
            overstate: AtomicUsize::new(0),
        }
    }

    /// Changes the memory size (what is allocated stays).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn set_overstate(&self, bytes: usize) {
        self.overstate.store(bytes, Ordering::Relaxed);
    }

    pub fn used(&self) -> usize {
        let blocks = self.blocks.lock().expect("emulator lock");
        blocks.values().map(|b| b.len() * 8).sum()
    }
}

impl Backend for Emulator {
    fn name(&self) -> &str {
        "emulator"
    }

    fn alloc(&self, bytes: usize, what: &str) -> Result<DevPtr> {
        let free = self
            .limit
            .load(Ordering::Relaxed)
            .saturating_sub(self.used());
        if bytes > free {
            return Err(Error::GpuOutOfMemory {
                device: self.name().into(),
                what: what.into(),
                bytes,
                free,
            });
        }
        // Not zeroed on a GPU either: fill with NaN bits so a kernel that
        // reads memory nobody wrote shows up in the results.
        let words = vec![0x7fc0_0000_7fc0_0000u64; bytes.div_ceil(8)].into_boxed_slice();
        let p = words.as_ptr() as DevPtr;
        self.blocks.lock().expect("emulator lock").insert(p, words);
        Ok(p)
    }

    fn free(&self, p: DevPtr) {
        self.blocks.lock().expect("emulator lock").remove(&p);
    }

    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        // SAFETY: `dst` points into an allocation of ours at least `src.len()` long
        // (the forward pass sizes every copy from the buffer it made).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        // SAFETY: as in `upload`.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy(&self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()> {
        // SAFETY: as in `upload`; device buffers never overlap.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }

    fn memset_zero(&self, dst: DevPtr, bytes: usize) -> Result<()> {
        // SAFETY: as in `upload`.
        unsafe { std::ptr::write_bytes(dst as *mut u8, 0, bytes) };
        Ok(())
    }

    fn launch(&self, kernel: &str, grid: u32, block: u32, args: &[Arg]) -> Result<()> {
        let mut cells: Vec<u64> = args.iter().map(|a| a.cell()).collect();
        let mut params: Vec<*mut c_void> = cells
            .iter_mut()
            .map(|c| c as *mut u64 as *mut c_void)
            .collect();
        let name = CString::new(kernel).expect("kernel names have no NUL");
        // The emulator's scheduler state is global: one launch at a time
        // in the process, whatever test thread asks.
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the parameter array matches the kernel's signature (the
        // same array cuLaunchKernel gets); the kernels stay inside the
        // buffers the forward pass sized for them.
        let rc = unsafe { (self.lib.launch)(name.as_ptr(), grid, block, params.as_mut_ptr()) };
        if rc != 0 {
            return Err(Error::gpu(
                self.name(),
                "launch",
                format!("no kernel {kernel}"),
            ));
        }
        Ok(())
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        // cuBLAS's part: f32 products summed in f32 lanes, the lanes in f64.
        let read = |base: DevPtr, row: usize| -> Vec<f32> {
            // SAFETY: callers pass matrices of the shapes in `g`.
            unsafe {
                match g.ab {
                    Elem::F32 => {
                        std::slice::from_raw_parts((base as *const f32).add(row * g.n_in), g.n_in)
                            .to_vec()
                    }
                    Elem::Bf16 => {
                        std::slice::from_raw_parts((base as *const u16).add(row * g.n_in), g.n_in)
                            .iter()
                            .map(|&h| f32::from_bits((h as u32) << 16))
                            .collect()
                    }
                }
            }
        };
        let xs: Vec<Vec<f32>> = (0..g.n_tok).map(|t| read(g.x, t)).collect();
        let y = g.y as usize;
        let (ldy, n_out) = (g.ldy, g.n_out);
        use rayon::prelude::*;
        (0..n_out).into_par_iter().for_each(|o| {
            let w = read(g.w, o);
            for (t, x) in xs.iter().enumerate() {
                let mut lanes = [0f32; 8];
                let mut i = 0;
                while i + 8 <= w.len() {
                    for l in 0..8 {
                        lanes[l] += w[i + l] * x[i + l];
                    }
                    i += 8;
                }
                let mut acc: f64 = lanes.iter().map(|&v| v as f64).sum();
                for j in i..w.len() {
                    acc += w[j] as f64 * x[j] as f64;
                }
                // SAFETY: y is (n_tok, ldy) f32; each task writes its own column.
                unsafe { *(y as *mut f32).add(t * ldy + o) = acc as f32 };
            }
        });
        Ok(())
    }

    fn free_memory(&self) -> Result<usize> {
        let free = self
            .limit
            .load(Ordering::Relaxed)
            .saturating_sub(self.used());
        Ok(free + self.overstate.load(Ordering::Relaxed))
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
