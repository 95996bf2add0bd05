//! The real GPU: a [`Backend`] on cudarc's driver API, NVRTC and cuBLAS,
//! all loaded at run time (`dynamic-loading`), so a build with the `cuda`
//! feature runs on machines without CUDA and says so when asked for a GPU.
//!
//! cudarc panics when a library it needs is missing, so every library is
//! looked for first, under the names and in the order cudarc tries them
//! ([`check_libraries`]), and its absence reported as an error. One stream per device; every call binds the context to the
//! calling thread first (a scorer may move between threads).

use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::{result as rtc, sys as rtc_sys, Ptx};

use super::backend::{Arg, Backend, DevPtr, Elem, Gemm};
use super::{KERNELS, KERNEL_SOURCE, NVRTC_OPTIONS};
use crate::error::{Error, Result};

/// The CUDA libraries MAIN loads, each as what it is and the stems whose
/// file names cudarc tries ([`candidates`]). cuBLASLt is loaded by cuBLAS
/// itself (a dependency of libcublas), so it is checked too: cuBLAS from
/// one release with cuBLASLt from another aborts at the first product.
pub const LIBRARIES: [(&str, &[&str]); 4] = [
    ("the CUDA driver (libcuda)", &["cuda", "nvcuda"]),
    ("NVRTC (libnvrtc)", &["nvrtc"]),
    ("cuBLAS (libcublas)", &["cublas"]),
    ("cuBLASLt (libcublasLt)", &["cublasLt"]),
];

/// The file names cudarc tries for a library, in cudarc's own order (its
/// `get_lib_name_candidates`: the unversioned `libcuda.so` before
/// `libcuda.so.13` before `libcuda.so.1`), so the file found here is the
/// file cudarc loads. Written out rather than called: cudarc has that
/// function only with its `dynamic-loading` feature, and a build that also
/// links candle's CUDA backend (`main-train --features cuda`) turns on
/// `dynamic-linking` instead. A test holds this list equal to cudarc's.
/// The release numbers are those of the `cuda-13000` feature pinned in
/// Cargo.toml.
pub fn candidates(stems: &[&str]) -> Vec<String> {
    use std::env::consts::{DLL_PREFIX as P, DLL_SUFFIX as S};
    const MAJOR: u32 = 13;
    const MINOR: u32 = 0;
    let w = usize::BITS;
    let mut out = Vec::new();
    for l in stems {
        out.extend([
            format!("{P}{l}{S}"),
            format!("{P}{l}{w}{S}"),
            format!("{P}{l}{w}_{MAJOR}{S}"),
            format!("{P}{l}{w}_{MAJOR}{MINOR}{S}"),
            format!("{P}{l}{w}_{MAJOR}{MINOR}_0{S}"),
            format!("{P}{l}{w}_{MAJOR}0_{MINOR}{S}"),
            format!("{P}{l}{w}_10{S}"),
            format!("{P}{l}{w}_11{S}"),
            format!("{P}{l}{w}_12{S}"),
            format!("{P}{l}{w}_{MAJOR}0_0{S}"),
            format!("{P}{l}{w}_9{S}"),
            format!("{P}{l}{S}.{MAJOR}"),
            format!("{P}{l}{S}.12"),
            format!("{P}{l}{S}.11"),
            format!("{P}{l}{S}.10"),
            format!("{P}{l}{S}.9"),
            format!("{P}{l}{S}.1"),
        ]);
    }
    out
}

/// The first of `names` that loads, with its handle (kept open while its
/// path is read).
fn first_loadable(names: &[String]) -> Option<(String, libloading::Library)> {
    names.iter().find_map(|n| {
        // SAFETY: loading a CUDA library runs only its initialisers, the
        // same ones cudarc would run.
        unsafe { libloading::Library::new(n) }
            .ok()
            .map(|l| (n.clone(), l))
    })
}

/// The files mapped into this process whose name starts with `prefix`
/// (`libcublas.so` matches `libcublas.so.13.0.2.14`, not `libcublasLt.so.13`),
/// from the text of `/proc/self/maps`, each once, in order.
pub fn mapped_files(maps: &str, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path (the path may hold spaces)
        let Some(path) = line.splitn(6, char::is_whitespace).nth(5).map(str::trim) else {
            continue;
        };
        let base = path.rsplit('/').next().unwrap_or(path);
        if path.starts_with('/') && base.starts_with(prefix) && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    out
}

/// The release in a library's file name: `13.0.2.14` of
/// `/usr/local/cuda/lib64/libcublasLt.so.13.0.2.14`; `None` without one.
pub fn release_of(path: &str) -> Option<&str> {
    let base = path.rsplit('/').next()?;
    let (_, version) = base.split_once(".so.")?;
    Some(version)
}

/// One CUDA library as this process loaded it.
#[derive(Clone, Debug)]
pub struct LoadedLibrary {
    /// What it is ("cuBLAS (libcublas)").
    pub what: &'static str,
    /// The name that loaded, cudarc's first candidate that exists.
    pub name: String,
    /// The file mapped into this process (symbolic links resolved), from
    /// `/proc/self/maps`.
    pub path: String,
}

fn read_maps() -> String {
    std::fs::read_to_string("/proc/self/maps").unwrap_or_default()
}

/// Loads the driver, NVRTC, cuBLAS and cuBLASLt in cudarc's order and
/// reports the file each one is; errors (never panics, as cudarc would)
/// when one is missing, when the driver found is the toolkit's link stub,
/// or when two releases of one library, or cuBLAS and cuBLASLt of
/// different releases, are loaded together.
pub fn check_libraries(device: &str) -> Result<Vec<LoadedLibrary>> {
    let fail = |reason: String| Error::gpu(device, "loading CUDA", reason);
    let mut handles = Vec::new();
    let mut found = Vec::new();
    for (what, stems) in LIBRARIES {
        let prefix = format!("lib{}.so", stems[0]);
        // cuBLASLt is what cuBLAS, loaded just before, loaded for itself.
        if stems == ["cublasLt"] && !mapped_files(&read_maps(), &prefix).is_empty() {
            found.push((what, "(loaded by cuBLAS)".to_string(), prefix));
            continue;
        }
        let names = candidates(stems);
        let Some((name, handle)) = first_loadable(&names) else {
            let mut tried: Vec<&str> = Vec::new();
            for n in &names {
                if !tried.contains(&n.as_str()) {
                    tried.push(n);
                }
            }
            return Err(fail(format!(
                "{what} was not found (tried {}, in cudarc's order); install the NVIDIA driver \
                 and CUDA libraries, or put their folder on LD_LIBRARY_PATH",
                tried.join(", ")
            )));
        };
        handles.push(handle);
        found.push((what, name, prefix));
    }
    let maps = read_maps();
    let mut loaded = Vec::new();
    for (what, name, prefix) in found {
        let files = mapped_files(&maps, &prefix);
        if files.len() > 1 {
            return Err(fail(format!(
                "two copies of {what} are loaded: {}; put one CUDA library folder first on \
                 LD_LIBRARY_PATH",
                files.join(" and ")
            )));
        }
        // Without /proc (not Linux) the name that loaded stands for the file.
        let path = files.into_iter().next().unwrap_or_else(|| name.clone());
        if path.contains("/stubs/") {
            return Err(fail(format!(
                "{what} resolved to {path} (as {name}), the CUDA toolkit's link stub, not the \
                 driver; take the stubs folder off LD_LIBRARY_PATH"
            )));
        }
        loaded.push(LoadedLibrary { what, name, path });
    }
    let blas = loaded.iter().find(|l| l.what.starts_with("cuBLAS ("));
    let lt = loaded.iter().find(|l| l.what.starts_with("cuBLASLt"));
    if let (Some(b), Some(l)) = (blas, lt) {
        if let (Some(vb), Some(vl)) = (release_of(&b.path), release_of(&l.path)) {
            if vb != vl {
                return Err(fail(format!(
                    "cuBLAS {vb} ({}) and cuBLASLt {vl} ({}) are of different releases; put one \
                     CUDA library folder first on LD_LIBRARY_PATH",
                    b.path, l.path
                )));
            }
        }
    }
    drop(handles);
    Ok(loaded)
}

/// The files of the CUDA libraries this process has loaded now (after
/// [`CudaDevice::open`]: the driver, NVRTC and its builtins, cuBLAS,
/// cuBLASLt), as `(file name prefix, path)`.
pub fn loaded_library_files() -> Vec<(&'static str, String)> {
    let maps = read_maps();
    let mut out = Vec::new();
    for prefix in [
        "libcuda.so",
        "libnvrtc.so",
        "libnvrtc-builtins.so",
        "libcublas.so",
        "libcublasLt.so",
    ] {
        for path in mapped_files(&maps, prefix) {
            out.push((prefix, path));
        }
    }
    out
}

/// Whether NVRTC alone can be loaded (kernel compilation needs no GPU).
pub fn nvrtc_present() -> bool {
    first_loadable(&candidates(LIBRARIES[1].1)).is_some()
}

/// Compiles `kernels.cu` for `arch` ("sm_90", or "compute_90" for PTX) and
/// returns the image to load. The error carries NVRTC's log.
pub fn compile_kernels(arch: &str, device: &str) -> Result<Vec<u8>> {
    compile_kernels_with(arch, NVRTC_OPTIONS, device)
}

/// [`compile_kernels`] with other options than [`NVRTC_OPTIONS`] (tests:
/// what NVRTC's defaults would build).
pub fn compile_kernels_with(arch: &str, nvrtc_options: &[&str], device: &str) -> Result<Vec<u8>> {
    compile_source("kernels.cu", KERNEL_SOURCE, arch, nvrtc_options, device)
}

/// Compiles CUDA C `source` (named `file` in NVRTC's messages) for `arch`
/// with `nvrtc_options`, as [`compile_kernels_with`] does `kernels.cu`.
pub fn compile_source(
    file: &str,
    source: &str,
    arch: &str,
    nvrtc_options: &[&str],
    device: &str,
) -> Result<Vec<u8>> {
    let what = format!("compiling {file} for {arch} with NVRTC");
    let fail = |reason: String| Error::gpu(device, what.clone(), reason);
    let src = CString::new(source).map_err(|_| fail("the source holds a NUL byte".into()))?;
    let name = CString::new(file).map_err(|_| fail("the file name holds a NUL byte".into()))?;
    let prog = rtc::create_program(&src, Some(&name)).map_err(|e| fail(format!("{e:?}")))?;
    // NVRTC_OPTIONS says why each option is there (no fused multiply-add, IEEE f32).
    let mut options = vec![format!("--gpu-architecture={arch}")];
    options.extend(nvrtc_options.iter().map(|o| o.to_string()));
    // SAFETY: `prog` is a live program; the options are NUL-free strings.
    let compiled = unsafe { rtc::compile_program(prog, &options) };
    let result = match compiled {
        Err(e) => {
            // SAFETY: as above; the log is a NUL-terminated C string.
            let log = unsafe { rtc::get_program_log(prog) }
                .map(|l| {
                    // SAFETY: NVRTC returns a NUL-terminated buffer.
                    unsafe { CStr::from_ptr(l.as_ptr()) }
                        .to_string_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            let hint = if log.contains("gpu-architecture") || log.contains("invalid value") {
                " (this NVRTC does not know the architecture: a newer CUDA is needed)"
            } else {
                ""
            };
            Err(fail(format!("{e:?}{hint}: {log}")))
        }
        Ok(()) if arch.starts_with("sm_") => cubin(prog).map_err(fail),
        // SAFETY: compiled program.
        Ok(()) => unsafe { rtc::get_ptx(prog) }
            .map(|p| p.iter().map(|&c| c as u8).collect())
            .map_err(|e| fail(format!("{e:?}"))),
    };
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { rtc::destroy_program(prog) };
    result
}

fn cubin(prog: rtc_sys::nvrtcProgram) -> std::result::Result<Vec<u8>, String> {
    let mut size = 0usize;
    // SAFETY: `prog` compiled for a real architecture, so it has a cubin.
    let rc = unsafe { rtc_sys::nvrtcGetCUBINSize(prog, &mut size) };
    if rc != rtc_sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcGetCUBINSize: {rc:?}"));
    }
    let mut out = vec![0u8; size];
    // SAFETY: `out` has the size NVRTC just reported.
    let rc = unsafe { rtc_sys::nvrtcGetCUBIN(prog, out.as_mut_ptr() as *mut _) };
    if rc != rtc_sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcGetCUBIN: {rc:?}"));
    }
    Ok(out)
}

/// One NVIDIA GPU with MAIN's kernels loaded.
pub struct CudaDevice {
    name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    async_alloc: bool,
}

// SAFETY: every use of the raw handles binds the context to the calling
// thread first and goes through the one stream; cuBLAS handles may be used
// from any thread as long as calls are not concurrent, which `&self` methods
// of a scorer (one thread at a time) guarantee.
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    /// Opens GPU `ordinal`, compiles the kernels for its architecture and loads them.
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        let short = format!("cuda:{ordinal}");
        check_libraries(&short)?;
        let gpu_err = |what: &str, e: drv::DriverError| Error::gpu(&short, what, format!("{e:?}"));
        drv::init().map_err(|e| gpu_err("starting the CUDA driver", e))?;
        let count = drv::device::get_count().map_err(|e| gpu_err("counting GPUs", e))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::gpu(
                &short,
                "opening the GPU",
                format!("there are {count} GPUs (numbered from 0)"),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| gpu_err("creating a context", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| gpu_err("reading the compute capability", e))?;
        if major < 7 {
            return Err(Error::gpu(
                &short,
                "checking the architecture",
                format!("sm_{major}{minor} is too old: MAIN needs sm_70 or newer (bf16 matrix products)"),
            ));
        }
        let gpu_name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let name = format!("{short} ({gpu_name}, sm_{major}{minor})");
        let image = compile_kernels(&format!("sm_{major}{minor}"), &name)?;
        let module = ctx
            .load_module(Ptx::from_binary(image))
            .map_err(|e| gpu_err("loading the compiled kernels", e))?;
        let mut functions = HashMap::new();
        for &k in KERNELS {
            let f = module
                .load_function(k)
                .map_err(|e| gpu_err(&format!("finding kernel {k}"), e))?;
            functions.insert(k, f);
        }
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| Error::gpu(&name, "starting cuBLAS", format!("{e:?}")))?;
        let async_alloc = ctx
            .attribute(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)
            .map(|v| v > 0)
            .unwrap_or(false);
        Ok(CudaDevice {
            name,
            ctx,
            stream,
            blas,
            functions,
            async_alloc,
        })
    }

    fn bind(&self, what: &str) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| self.err(what, e))
    }

    fn err(&self, what: &str, e: impl std::fmt::Debug) -> Error {
        Error::gpu(&self.name, what, format!("{e:?}"))
    }
}

impl Backend for CudaDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn alloc(&self, bytes: usize, what: &str) -> Result<DevPtr> {
        self.bind(what)?;
        let s = self.stream.cu_stream();
        // SAFETY: a live stream of this context; the memory is only used on it.
        let r = unsafe {
            if self.async_alloc {
                drv::malloc_async(s, bytes)
            } else {
                drv::malloc_sync(bytes)
            }
        };
        r.map_err(|e| {
            if e.0 == drv_sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                Error::GpuOutOfMemory {
                    device: self.name.clone(),
                    what: what.into(),
                    bytes,
                    free: self.free_memory().unwrap_or(0),
                }
            } else {
                self.err(what, e)
            }
        })
    }

    fn free(&self, p: DevPtr) {
        if self.bind("freeing memory").is_err() {
            return;
        }
        // SAFETY: `p` came from `alloc` and is freed once (Buf's drop);
        // stream order keeps it alive for the work queued before.
        let _ = unsafe {
            if self.async_alloc {
                drv::free_async(p, self.stream.cu_stream())
            } else {
                drv::free_sync(p)
            }
        };
    }

    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.bind("copying to the GPU")?;
        // SAFETY: `dst` holds at least `src.len()` bytes; the synchronous copy
        // returns after `src` was read.
        unsafe {
            drv::memcpy_htod_async(dst, src, self.stream.cu_stream())
                .and_then(|_| self.stream.synchronize())
        }
        .map_err(|e| self.err("copying to the GPU", e))
    }

    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.bind("copying from the GPU")?;
        // SAFETY: `src` holds at least `dst.len()` bytes; we wait for the copy.
        unsafe {
            drv::memcpy_dtoh_async(dst, src, self.stream.cu_stream())
                .and_then(|_| self.stream.synchronize())
        }
        .map_err(|e| self.err("copying from the GPU (or a kernel before it failed)", e))
    }

    fn copy(&self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()> {
        self.bind("copying on the GPU")?;
        // SAFETY: both ranges lie in allocations of ours.
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| self.err("copying on the GPU", e))
    }

    fn memset_zero(&self, dst: DevPtr, bytes: usize) -> Result<()> {
        self.bind("clearing GPU memory")?;
        // SAFETY: the range lies in an allocation of ours.
        unsafe { drv::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) }
            .map_err(|e| self.err("clearing GPU memory", e))
    }

    fn launch(&self, kernel: &str, grid: u32, block: u32, args: &[Arg]) -> Result<()> {
        let what = format!("launching {kernel}");
        self.bind(&what)?;
        let f = self
            .functions
            .get(kernel)
            .ok_or_else(|| Error::gpu(&self.name, &what, "no such kernel"))?;
        let mut cells: Vec<u64> = args.iter().map(|a| a.cell()).collect();
        let mut params: Vec<*mut c_void> = cells
            .iter_mut()
            .map(|c| c as *mut u64 as *mut c_void)
            .collect();
        // SAFETY: the parameter array matches the kernel's signature (each
        // cell holds one argument's bytes); the forward pass sizes every
        // buffer the kernel touches.
        unsafe {
            drv::launch_kernel(
                f.cu_function(),
                (grid, 1, 1),
                (block, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| self.err(&what, e))
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        self.bind("a matrix product")?;
        let t = match g.ab {
            Elem::F32 => blas_sys::cudaDataType::CUDA_R_32F,
            Elem::Bf16 => blas_sys::cudaDataType::CUDA_R_16BF,
        };
        let (alpha, beta) = (1f32, 0f32);
        let dim = |v: usize| {
            i32::try_from(v).map_err(|_| self.err("a matrix product", "dimension over 2^31"))
        };
        // Row-major y (n_tok, n_out) = x (n_tok, n_in) · wᵀ is, column-major,
        // yᵀ (n_out, n_tok) = w(col-major n_in x n_out)ᵀ · x(col-major n_in x n_tok).
        // SAFETY: the matrices have the shapes given; pointer mode is host.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                dim(g.n_out)?,
                dim(g.n_tok)?,
                dim(g.n_in)?,
                &alpha as *const f32 as *const c_void,
                g.w as *const c_void,
                t,
                dim(g.n_in)?,
                g.x as *const c_void,
                t,
                dim(g.n_in)?,
                &beta as *const f32 as *const c_void,
                g.y as *mut c_void,
                blas_sys::cudaDataType::CUDA_R_32F,
                dim(g.ldy)?,
                // Strict f32 accumulation (no TF32) for both types.
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| self.err("a cuBLAS matrix product", e))
    }

    fn free_memory(&self) -> Result<usize> {
        self.bind("reading free memory")?;
        drv::mem_get_info()
            .map(|(free, _)| free)
            .map_err(|e| self.err("reading free memory", e))
    }

    fn sync(&self) -> Result<()> {
        self.bind("waiting for the GPU")?;
        self.stream
            .synchronize()
            .map_err(|e| self.err("waiting for the GPU (a kernel failed)", e))
    }
}
