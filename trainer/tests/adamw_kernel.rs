//! The GPU's fused AdamW kernel (`main_engine::cuda::ADAMW_SOURCE`,
//! `engine/src/cuda/adamw.cu`) against the CPU's
//! update (`AdamW::update_one` on the CPU), bit for bit: the kernel source
//! compiled as C++ by the host's compiler (no contraction of `a * b + c`,
//! as NVRTC builds it with `--fmad=false`) and run block by block, three
//! steps in a row, for every storage the trainer offers: f32, bf16 and
//! bf16-with-master weights, f32 and bf16 gradients, f32, bf16 and 8-bit
//! moments. On a GPU the same kernel runs from `optim::device`.

use std::ffi::c_void;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor, Var};
use half::bf16;
use main_trainer::model::Param;
use main_trainer::optim::bf16_rounding::tensor_key;
use main_trainer::optim::blockwise8::{signed_map, unsigned_map};
use main_trainer::optim::{AdamW, AdamWParams, MomentBuf, MomentsKind};

type HostStep = unsafe extern "C" fn(
    w: *mut c_void,
    w_kind: i32,
    master: *mut f32,
    g: *const c_void,
    g_kind: i32,
    m: *mut c_void,
    v: *mut c_void,
    m_absmax: *mut f32,
    v_absmax: *mut f32,
    m_kind: i32,
    m_map: *const f32,
    v_map: *const f32,
    n: u64,
    consts: *const f32,
    key: u64,
);

struct Kernel {
    _lib: libloading::Library,
    step: HostStep,
}

/// The kernel built once per test process as a shared library.
fn kernel() -> &'static Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    K.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let cu = dir.join("adamw.cu");
        std::fs::write(&cu, main_engine::cuda::ADAMW_SOURCE).unwrap();
        let harness = format!(
            r#"#include <cstdint>
#include <cstring>
#include <cmath>
#define MAIN_ADAMW_HOST
#define ADAMW_DEVICE
static inline uint32_t f2u(float x) {{ uint32_t u; memcpy(&u, &x, 4); return u; }}
static inline float u2f(uint32_t u) {{ float x; memcpy(&x, &u, 4); return x; }}
#include "{}"
extern "C" void adamw_host(void* w, int w_kind, float* master, const void* g, int g_kind,
    void* m, void* v, float* m_absmax, float* v_absmax, int m_kind, const float* m_map,
    const float* v_map, uint64_t n, const float* c, uint64_t key) {{
    AdamwConsts k = {{c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]}};
    for (uint64_t b = 0; b * ADAMW_BLOCK < n; b++)
        adamw_block(b, w, w_kind, master, g, g_kind, m, v, m_absmax, v_absmax, m_kind, m_map,
                    v_map, n, k, key);
}}
"#,
            cu.display()
        );
        std::fs::write(dir.join("harness.cpp"), harness).unwrap();
        let so = dir.join("libadamw_host.so");
        let status = std::process::Command::new("c++")
            .args(["-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math"])
            .args(["-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(dir.join("harness.cpp"))
            .status()
            .expect("a C++ compiler (c++) runs the GPU kernel's test");
        assert!(status.success(), "adamw.cu does not compile as C++");
        // SAFETY: the library was just built from our own source; its one
        // entry point has the signature of `HostStep`.
        unsafe {
            let lib = libloading::Library::new(&so).unwrap();
            let step = *lib.get::<HostStep>(b"adamw_host\0").unwrap();
            Kernel { _lib: lib, step }
        }
    })
}

/// The kernel's copy of one tensor's state.
struct HostState {
    w: Vec<u8>,
    master: Vec<f32>,
    m: Vec<u8>,
    v: Vec<u8>,
    m_absmax: Vec<f32>,
    v_absmax: Vec<f32>,
}

fn bytes_of<T: Copy>(x: &[T]) -> Vec<u8> {
    let n = std::mem::size_of_val(x);
    let mut out = vec![0u8; n];
    // SAFETY: plain-old-data values (f32, bf16, u8) copied as bytes.
    unsafe { std::ptr::copy_nonoverlapping(x.as_ptr() as *const u8, out.as_mut_ptr(), n) };
    out
}

fn moment_bytes(m: &MomentBuf) -> (Vec<u8>, Vec<f32>) {
    match m {
        MomentBuf::F32(x) => (bytes_of(x), vec![]),
        MomentBuf::Bf16(x) => (bytes_of(x), vec![]),
        MomentBuf::Bit8(q) => (q.codes.clone(), q.absmax.clone()),
    }
}

fn weight_bytes(w: &Tensor) -> Vec<u8> {
    let flat = w.flatten_all().unwrap();
    match w.dtype() {
        DType::F32 => bytes_of(&flat.to_vec1::<f32>().unwrap()),
        DType::BF16 => bytes_of(&flat.to_vec1::<bf16>().unwrap()),
        DType::U8 => flat.to_vec1::<u8>().unwrap(),
        other => panic!("{other:?}"),
    }
}

fn run(wd: DType, master: bool, gd: DType, moments: MomentsKind) {
    let (rows, cols) = (5, 157); // 785 values: three full blocks and 17
    let n = rows * cols;
    let dev = Device::Cpu;
    let mut seed = 0x2545_f491u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64) as f32 * 2.0 - 1.0
    };
    let w0: Vec<f32> = (0..n).map(|_| 0.05 * next()).collect();
    let var = Var::from_tensor(
        &Tensor::from_vec(w0, (rows, cols), &dev)
            .unwrap()
            .to_dtype(wd)
            .unwrap(),
    )
    .unwrap();
    let param = Param {
        name: "blk.0.attn_q.weight".into(),
        var,
    };
    let params = AdamWParams {
        weight_decay: 0.1,
        moments,
        master,
        seed: 11,
        ..Default::default()
    };
    let mut opt = AdamW::new(std::slice::from_ref(&param), params.clone()).unwrap();
    opt.grad_scale = 0.7;
    let st = &opt.state[0];
    let (m, m_absmax) = moment_bytes(&st.m);
    let (v, v_absmax) = moment_bytes(&st.v);
    let mut host = HostState {
        w: weight_bytes(param.var.as_tensor()),
        master: st.master.clone().unwrap_or_default(),
        m,
        v,
        m_absmax,
        v_absmax,
    };
    let w_kind = match (wd, master) {
        (DType::F32, _) => 0,
        (_, false) => 1,
        (_, true) => 2,
    };
    let g_kind = if gd == DType::F32 { 0 } else { 1 };
    let m_kind = match moments {
        MomentsKind::F32 => 0,
        MomentsKind::Bf16 => 1,
        MomentsKind::Bit8 => 2,
    };
    let lr = 1e-3;
    for step in 1..=3usize {
        // Gradients of mixed sizes; the last (partial) block all zero at
        // the first step (an 8-bit block of zeros keeps the zero code).
        let g: Vec<f32> = (0..n)
            .map(|i| {
                if step == 1 && i >= 3 * 256 {
                    0.0
                } else {
                    next() * [1e-4, 1e-2, 1.0][i % 3]
                }
            })
            .collect();
        let grad = Tensor::from_vec(g, (rows, cols), &dev)
            .unwrap()
            .to_dtype(gd)
            .unwrap();
        let g_bytes = weight_bytes(&grad);
        opt.begin_step();
        opt.update_one(0, &param, &grad, lr).unwrap();

        let t = step as i32;
        let consts = [
            params.beta1 as f32,
            params.beta2 as f32,
            params.eps as f32,
            (1.0 - params.beta1.powi(t)) as f32,
            (1.0 - params.beta2.powi(t)) as f32,
            lr as f32,
            (1.0 - lr * params.weight_decay) as f32,
            opt.grad_scale as f32,
        ];
        let key = tensor_key(params.seed, step, 0);
        let k = kernel();
        let null = std::ptr::null_mut::<f32>();
        let or_null = |v: &mut Vec<f32>| if v.is_empty() { null } else { v.as_mut_ptr() };
        // SAFETY: every buffer holds `n` values of the kind passed with it
        // (the absmax buffers one per block of 256, the maps 256 entries);
        // the kernel reads and writes only inside them.
        unsafe {
            (k.step)(
                host.w.as_mut_ptr() as *mut c_void,
                w_kind,
                or_null(&mut host.master),
                g_bytes.as_ptr() as *const c_void,
                g_kind,
                host.m.as_mut_ptr() as *mut c_void,
                host.v.as_mut_ptr() as *mut c_void,
                or_null(&mut host.m_absmax),
                or_null(&mut host.v_absmax),
                m_kind,
                signed_map().as_ptr(),
                unsigned_map().as_ptr(),
                n as u64,
                consts.as_ptr(),
                key,
            )
        };
        let what = format!(
            "{wd:?} weights (master {master}), {gd:?} gradients, {moments:?} moments, step {step}"
        );
        let st = &opt.state[0];
        assert!(
            host.w == weight_bytes(param.var.as_tensor()),
            "weights differ: {what}"
        );
        assert_eq!(
            host.master,
            st.master.clone().unwrap_or_default(),
            "master: {what}"
        );
        let (m, m_absmax) = moment_bytes(&st.m);
        let (v, v_absmax) = moment_bytes(&st.v);
        assert!(host.m == m, "m differs: {what}");
        assert!(host.v == v, "v differs: {what}");
        assert_eq!(host.m_absmax, m_absmax, "m scales: {what}");
        assert_eq!(host.v_absmax, v_absmax, "v scales: {what}");
    }
}

#[test]
fn the_gpu_kernel_steps_exactly_as_the_cpu() {
    for moments in [MomentsKind::F32, MomentsKind::Bf16, MomentsKind::Bit8] {
        for gd in [DType::F32, DType::BF16] {
            run(DType::F32, false, gd, moments);
            run(DType::BF16, false, gd, moments);
            run(DType::BF16, true, gd, moments);
        }
    }
}

/// On a GPU (a build with `--features cuda` on a machine with one): the
/// update through `AdamW::update_one` with the weight and state on the
/// device equals the CPU's, bit for bit, for every storage combination.
/// Without a GPU it says so and passes.
#[cfg(feature = "cuda")]
#[test]
fn on_a_gpu_the_update_is_the_cpus() {
    if !candle_core::utils::cuda_is_available() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let gpu = Device::new_cuda(0).unwrap();
    let cpu = Device::Cpu;
    let device_bytes = |t: &Tensor| weight_bytes(&t.to_device(&cpu).unwrap());
    for moments in [MomentsKind::F32, MomentsKind::Bf16, MomentsKind::Bit8] {
        for (wd, master) in [
            (DType::F32, false),
            (DType::BF16, false),
            (DType::BF16, true),
        ] {
            let n = 5 * 157;
            let w0: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
                .collect();
            let make = |dev: &Device| {
                let t = Tensor::from_vec(w0.clone(), (5, 157), dev).unwrap();
                Param {
                    name: "w".into(),
                    var: Var::from_tensor(&t.to_dtype(wd).unwrap()).unwrap(),
                }
            };
            let (pc, pg) = (make(&cpu), make(&gpu));
            let params = AdamWParams {
                weight_decay: 0.1,
                moments,
                master,
                seed: 3,
                ..Default::default()
            };
            let mut oc = AdamW::new(std::slice::from_ref(&pc), params.clone()).unwrap();
            let mut og = AdamW::new(std::slice::from_ref(&pg), params).unwrap();
            for step in 1..=3 {
                let g: Vec<f32> = (0..n)
                    .map(|i| (((i * 7 + step * 13) % 29) as f32 - 14.0) * [1e-4, 1e-2, 1.0][i % 3])
                    .collect();
                let gc = Tensor::from_vec(g, (5, 157), &cpu).unwrap();
                let gg = gc.to_device(&gpu).unwrap();
                for (o, p, g) in [(&mut oc, &pc, &gc), (&mut og, &pg, &gg)] {
                    o.begin_step();
                    o.update_one(0, p, g, 1e-3).unwrap();
                }
                let what = format!("{wd:?} (master {master}), {moments:?}, step {step}");
                assert!(
                    weight_bytes(pc.var.as_tensor()) == device_bytes(pg.var.as_tensor()),
                    "weights: {what}"
                );
                let d = og.state[0].device.as_ref().expect("state on the GPU");
                let (m, m_absmax) = moment_bytes(&oc.state[0].m);
                let (v, v_absmax) = moment_bytes(&oc.state[0].v);
                assert!(
                    m == device_bytes(&d.m) && v == device_bytes(&d.v),
                    "moments: {what}"
                );
                if let (Some(a), Some(b)) = (&d.m_absmax, &d.v_absmax) {
                    assert_eq!(a.to_vec1::<f32>().unwrap(), m_absmax, "scales: {what}");
                    assert_eq!(b.to_vec1::<f32>().unwrap(), v_absmax, "scales: {what}");
                }
            }
        }
    }
}
