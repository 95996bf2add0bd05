// The trainer's fused AdamW update of one tensor on the GPU
// (main_trainer::optim::device launches it): the same arithmetic as the
// CPU's `main_trainer::optim::fused::adamw_tensor`, step for step, so the
// two agree bit for bit (NVRTC builds it with NVRTC_OPTIONS: --fmad=false,
// IEEE division and square root). One thread per block of BLOCK
// values (the 8-bit moments' quantisation block): it reads the block's
// moments, the gradient and the weight, and writes them back, in one
// launch per tensor. A thread walks its block serially, so a warp's loads
// are 1 KiB apart; each 32-byte sector it fetches is used by the next
// seven iterations from L1, which keeps the update memory-bound without
// shared memory or barriers (and lets a plain C++ compiler run it in
// tests: trainer/tests/adamw_kernel.rs).
//
// Weights: f32, bf16 rounded stochastically, or bf16 with an f32 master.
// Gradients: f32 or bf16. Moments: f32, bf16 (stochastic) or 8-bit
// blockwise with bitsandbytes' dynamic maps (stochastic between the two
// map entries around the value).

#ifndef MAIN_ADAMW_HOST
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#define ADAMW_DEVICE __device__
static ADAMW_DEVICE inline uint32_t f2u(float x) { return __float_as_uint(x); }
static ADAMW_DEVICE inline float u2f(uint32_t x) { return __uint_as_float(x); }
#endif

#define ADAMW_BLOCK 256

// Weight storage, gradient storage, moment storage.
enum { W_F32 = 0, W_BF16 = 1, W_BF16_MASTER = 2 };
enum { G_F32 = 0, G_BF16 = 1 };
enum { M_F32 = 0, M_BF16 = 1, M_8BIT = 2 };

// SplitMix64's finaliser (bf16_rounding::mix64).
static ADAMW_DEVICE inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static ADAMW_DEVICE inline int is_finite(float x) {
    return (f2u(x) & 0x7f800000u) != 0x7f800000u;
}

static ADAMW_DEVICE inline float bf16_to_f32(uint16_t b) { return u2f((uint32_t)b << 16); }

// Round to nearest even, NaN kept quiet (the `half` crate's bf16::from_f32).
static ADAMW_DEVICE inline uint16_t bf16_nearest(float x) {
    uint32_t b = f2u(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x0040u);
    uint32_t round_bit = 0x00008000u;
    if ((b & round_bit) != 0 && (b & (3u * round_bit - 1u)) != 0) return (uint16_t)((b >> 16) + 1u);
    return (uint16_t)(b >> 16);
}

// bf16_rounding::stochastic.
static ADAMW_DEVICE inline uint16_t bf16_stochastic(float x, uint64_t bits) {
    if (!is_finite(x)) return bf16_nearest(x);
    uint32_t r = (uint32_t)(bits & 0xffffu);
    return (uint16_t)(((f2u(x) + r) & 0xffff0000u) >> 16);
}

// The number of map entries below x (slice::partition_point on a sorted map).
static ADAMW_DEVICE inline int below(const float* map, float x) {
    int lo = 0, hi = 256;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (map[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static ADAMW_DEVICE inline int zero_code(const float* map) {
    for (int i = 0; i < 256; i++)
        if (map[i] == 0.0f) return i;
    return 0;
}

static ADAMW_DEVICE inline float load_moment(int kind, const void* buf, const float* absmax,
                                             const float* map, uint64_t i, uint64_t b) {
    if (kind == M_F32) return ((const float*)buf)[i];
    if (kind == M_BF16) return bf16_to_f32(((const uint16_t*)buf)[i]);
    return map[((const uint8_t*)buf)[i]] * absmax[b];
}

// Blockwise8::store_block for value j of a block whose scale is `absmax`
// (not zero, finite), `inv` = 1 / absmax.
static ADAMW_DEVICE inline uint8_t quantize(const float* map, int is_signed, float x, float inv,
                                            uint64_t bits) {
    float xn = x * inv;
    int hi = below(map, xn);
    if (hi > 255) hi = 255;
    int lo = hi > 0 ? hi - 1 : 0;
    float u = (float)(bits >> 40) / (float)(1ULL << 24);
    float gap = map[hi] - map[lo];
    int up = (hi != lo) & (xn - map[lo] >= u * gap);
    int q = lo + up;
    if (!is_signed && x > 0.0f && map[q] == 0.0f) q += 1;
    return (uint8_t)q;
}

struct AdamwConsts {
    float beta1, beta2, eps, c1, c2, lr, decay, grad_scale;
};

// The new moments of element i (before they are stored).
static ADAMW_DEVICE inline void new_moments(const AdamwConsts& k, int g_kind, const void* g,
                                            int m_kind, const void* m, const float* m_absmax,
                                            const float* m_map, const void* v,
                                            const float* v_absmax, const float* v_map,
                                            uint64_t i, uint64_t b, float* mo, float* vo) {
    float gr = g_kind == G_F32 ? ((const float*)g)[i] : bf16_to_f32(((const uint16_t*)g)[i]);
    float gj = gr * k.grad_scale;
    float mj = load_moment(m_kind, m, m_absmax, m_map, i, b);
    float vj = load_moment(m_kind, v, v_absmax, v_map, i, b);
    *mo = k.beta1 * mj + (1.0f - k.beta1) * gj;
    *vo = k.beta2 * vj + (1.0f - k.beta2) * gj * gj;
}

static ADAMW_DEVICE inline void adamw_block(
    uint64_t b, void* w, int w_kind, float* master, const void* g, int g_kind, void* m, void* v,
    float* m_absmax, float* v_absmax, int m_kind, const float* m_map, const float* v_map,
    uint64_t n, AdamwConsts k, uint64_t key) {
    uint64_t s = b * ADAMW_BLOCK;
    if (s >= n) return;
    uint64_t len = n - s < ADAMW_BLOCK ? n - s : ADAMW_BLOCK;
    uint64_t key_m = mix64(key ^ 0x6dULL), key_v = mix64(key ^ 0x76ULL);
    // 8-bit: the block's new scales first (a pass over the new moments).
    float am = 0.0f, av = 0.0f, inv_m = 0.0f, inv_v = 0.0f;
    if (m_kind == M_8BIT) {
        for (uint64_t j = 0; j < len; j++) {
            float mo, vo;
            new_moments(k, g_kind, g, m_kind, m, m_absmax, m_map, v, v_absmax, v_map, s + j, b,
                        &mo, &vo);
            am = fmaxf(am, fabsf(mo));
            av = fmaxf(av, fabsf(vo));
        }
        inv_m = 1.0f / am;
        inv_v = 1.0f / av;
    }
    int quant_m = am != 0.0f && is_finite(am), quant_v = av != 0.0f && is_finite(av);
    // The map's zero code, looked up only for a block that stores zeros
    // (an all-zero or non-finite block: untouched embedding rows).
    int zero_m = m_kind == M_8BIT && !quant_m ? zero_code(m_map) : 0;
    int zero_v = m_kind == M_8BIT && !quant_v ? zero_code(v_map) : 0;
    for (uint64_t j = 0; j < len; j++) {
        uint64_t i = s + j;
        float mo, vo;
        // The old 8-bit codes are read again here before this element's are
        // written: each element's are its own, so the values are the first
        // pass's.
        new_moments(k, g_kind, g, m_kind, m, m_absmax, m_map, v, v_absmax, v_map, i, b, &mo, &vo);
        if (m_kind == M_F32) {
            ((float*)m)[i] = mo;
            ((float*)v)[i] = vo;
        } else if (m_kind == M_BF16) {
            ((uint16_t*)m)[i] = bf16_stochastic(mo, mix64(key_m + s + j));
            ((uint16_t*)v)[i] = bf16_stochastic(vo, mix64(key_v + s + j));
        } else {
            ((uint8_t*)m)[i] =
                quant_m ? quantize(m_map, 1, mo, inv_m, mix64(key_m + s + j)) : (uint8_t)zero_m;
            ((uint8_t*)v)[i] =
                quant_v ? quantize(v_map, 0, vo, inv_v, mix64(key_v + s + j)) : (uint8_t)zero_v;
        }
        // The step from the exact new moments.
        float upd = (mo / k.c1) / (sqrtf(vo / k.c2) + k.eps);
        if (w_kind == W_F32) {
            float* x = (float*)w + i;
            *x = *x * k.decay - k.lr * upd;
        } else if (w_kind == W_BF16_MASTER) {
            master[i] = master[i] * k.decay - k.lr * upd;
            ((uint16_t*)w)[i] = bf16_nearest(master[i]);
        } else {
            uint16_t* x = (uint16_t*)w + i;
            float nw = bf16_to_f32(*x) * k.decay - k.lr * upd;
            *x = bf16_stochastic(nw, mix64(key + s + j));
        }
    }
    if (m_kind == M_8BIT) {
        m_absmax[b] = am;
        v_absmax[b] = av;
    }
}

#ifndef MAIN_ADAMW_HOST
// One thread per block of ADAMW_BLOCK values; `m_map`/`v_map` are the
// 8-bit maps (256 floats each; unused otherwise).
extern "C" __global__ void adamw_step(void* w, int w_kind, float* master, const void* g,
                                      int g_kind, void* m, void* v, float* m_absmax,
                                      float* v_absmax, int m_kind, const float* m_map,
                                      const float* v_map, uint64_t n, float beta1, float beta2,
                                      float eps, float c1, float c2, float lr, float decay,
                                      float grad_scale, uint64_t key) {
    uint64_t b = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    AdamwConsts k = {beta1, beta2, eps, c1, c2, lr, decay, grad_scale};
    adamw_block(b, w, w_kind, master, g, g_kind, m, v, m_absmax, v_absmax, m_kind, m_map, v_map,
                n, k, key);
}
#endif
