// MAIN's GPU kernels (DESIGN.md §4b), compiled by NVRTC when a GPU model is
// loaded, for the device's own architecture. No toolkit headers: every type
// and conversion used is defined here, so the same file also compiles as
// C++ for the CPU emulator that tests these kernels without a GPU
// (engine/src/cuda/emulator.rs), and NVRTC needs nothing but itself.
//
// Conventions (shapes as in model.rs): T tokens in a packed batch, d model
// width, H / Hkv query / key-value heads, hd head width, F the SwiGLU width.
// Activations that feed a matrix product have type A (float in `exact`,
// bf16 in `bf16`); matrix products write f32; the residual stream is f32.
// Every kernel exists once per A (suffix _f32 / _bf16) where A matters.
//
// Rules the emulator relies on: no dynamic shared memory; warp shuffles
// and __syncwarp are reached by all 32 lanes of a warp (or all lanes the
// block has in its last warp); __syncthreads by every thread of a block.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned short bf16;

#define NEG_INF (-__int_as_float(0x7f800000))
#define FULL_MASK 0xffffffffu

// ---- element types --------------------------------------------------------

__device__ __forceinline__ float bf16_to_f32(bf16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Round to nearest, ties to even (as PyTorch and cuBLAS do); NaN stays NaN.
__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

// IEEE half to float, subnormals included (weights may hold them).
__device__ __forceinline__ float f16_to_f32(u16 h) {
    u32 sign = ((u32)(h & 0x8000u)) << 16;
    u32 exp = (h >> 10) & 0x1fu;
    u32 man = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)man * 5.9604644775390625e-8f;  // man * 2^-24
        return sign ? -v : v;
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

__device__ __forceinline__ void put(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void put(bf16* p, i64 i, float v) { p[i] = f32_to_bf16(v); }
__device__ __forceinline__ float get(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float get(const bf16* p, i64 i) { return bf16_to_f32(p[i]); }

// Little-endian reads at any alignment (GGUF blocks are packed).
__device__ __forceinline__ u16 rd16(const u8* p) { return (u16)(p[0] | (p[1] << 8)); }
__device__ __forceinline__ float rd_f16(const u8* p) { return f16_to_f32(rd16(p)); }

// ---- reductions ------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(FULL_MASK, v, m);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, m));
    return v;
}

// Sum over a block of BLOCK threads (a multiple of 32, at most 1024); every
// thread gets the result. `scratch` holds one value per warp.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T total = 0;
    for (int w = 0; w < n_warps; w++) total += scratch[w];
    return total;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = NEG_INF;
    for (int w = 0; w < n_warps; w++) m = fmaxf(m, scratch[w]);
    return m;
}

// ---- weight decoding: one thread per GGUF block ----------------------------
// Each decoder writes the QK elements of the block at `b` to y[0..QK), the
// same values as the CPU's quant::dequantize_row (engine/src/quant/).

template <typename W>
__device__ void dq_q4_0(const u8* b, W* y) {  // 18 bytes: d, 16 x 2 codes
    float d = rd_f16(b);
    for (int j = 0; j < 16; j++) {
        u8 q = b[2 + j];
        put(y, j, (float)((int)(q & 0x0f) - 8) * d);
        put(y, j + 16, (float)((int)(q >> 4) - 8) * d);
    }
}

template <typename W>
__device__ void dq_q4_1(const u8* b, W* y) {  // 20 bytes: d, m, 16 x 2 codes
    float d = rd_f16(b), m = rd_f16(b + 2);
    for (int j = 0; j < 16; j++) {
        u8 q = b[4 + j];
        put(y, j, (float)(q & 0x0f) * d + m);
        put(y, j + 16, (float)(q >> 4) * d + m);
    }
}

template <typename W>
__device__ void dq_q8_0(const u8* b, W* y) {  // 34 bytes: d, 32 codes
    float d = rd_f16(b);
    for (int j = 0; j < 32; j++) put(y, j, (float)(signed char)b[2 + j] * d);
}

// The 6-bit scale and minimum of sub-block j of a Q4_K / Q5_K block.
__device__ __forceinline__ void scale_min_k4(int j, const u8* s, float* sc, float* mn) {
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *mn = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
        *mn = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

template <typename W>
__device__ void dq_q4_k(const u8* b, W* y) {  // 144 bytes: d, dmin, scales[12], qs[128]
    float d = rd_f16(b), dmin = rd_f16(b + 2);
    const u8* sc = b + 4;
    const u8* qs = b + 16;
    for (int g = 0; g < 4; g++) {
        float s1, m1, s2, m2;
        scale_min_k4(2 * g, sc, &s1, &m1);
        scale_min_k4(2 * g + 1, sc, &s2, &m2);
        float d1 = d * s1, n1 = dmin * m1, d2 = d * s2, n2 = dmin * m2;
        for (int l = 0; l < 32; l++) {
            u8 q = qs[32 * g + l];
            put(y, 64 * g + l, d1 * (float)(q & 0x0f) - n1);
            put(y, 64 * g + l + 32, d2 * (float)(q >> 4) - n2);
        }
    }
}

template <typename W>
__device__ void dq_q5_k(const u8* b, W* y) {  // 176 bytes: d, dmin, scales[12], qh[32], qs[128]
    float d = rd_f16(b), dmin = rd_f16(b + 2);
    const u8* sc = b + 4;
    const u8* qh = b + 16;
    const u8* qs = b + 48;
    for (int g = 0; g < 4; g++) {
        float s1, m1, s2, m2;
        scale_min_k4(2 * g, sc, &s1, &m1);
        scale_min_k4(2 * g + 1, sc, &s2, &m2);
        float d1 = d * s1, n1 = dmin * m1, d2 = d * s2, n2 = dmin * m2;
        for (int l = 0; l < 32; l++) {
            u8 q = qs[32 * g + l];
            u8 h = qh[l] >> (2 * g);
            int lo = (q & 0x0f) | ((h & 1) << 4);
            int hi = (q >> 4) | (((h >> 1) & 1) << 4);
            put(y, 64 * g + l, d1 * (float)lo - n1);
            put(y, 64 * g + l + 32, d2 * (float)hi - n2);
        }
    }
}

template <typename W>
__device__ void dq_q6_k(const u8* b, W* y) {  // 210 bytes: ql[128], qh[64], scales[16], d
    const u8* ql_all = b;
    const u8* qh_all = b + 128;
    const signed char* scales = (const signed char*)(b + 192);
    float d = rd_f16(b + 208);
    for (int h = 0; h < 2; h++) {
        const u8* ql = ql_all + 64 * h;
        const u8* qh = qh_all + 32 * h;
        for (int l = 0; l < 32; l++) {
            int low[4] = {ql[l] & 0x0f, ql[l + 32] & 0x0f, ql[l] >> 4, ql[l + 32] >> 4};
            for (int k = 0; k < 4; k++) {
                int high = (qh[l] >> (2 * k)) & 3;
                int e = 128 * h + 32 * k + l;
                int code = (low[k] | (high << 4)) - 32;
                put(y, e, d * (float)scales[e / 16] * (float)code);
            }
        }
    }
}

template <typename W>
__device__ void dq_f32(const u8* b, W* y) { put(y, 0, __uint_as_float((u32)b[0] | ((u32)b[1] << 8) | ((u32)b[2] << 16) | ((u32)b[3] << 24))); }
template <typename W>
__device__ void dq_f16(const u8* b, W* y) { put(y, 0, rd_f16(b)); }
template <typename W>
__device__ void dq_bf16(const u8* b, W* y) { put(y, 0, bf16_to_f32(rd16(b))); }

// dequant_<format>_<W>(src, dst, n_blocks): block i of src to dst[i*QK ..].
#define DEQUANT(fmt, BYTES, QK)                                                        \
    extern "C" __global__ void dequant_##fmt##_f32(const u8* src, float* dst, i64 nb) { \
        i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;                            \
        if (i < nb) dq_##fmt(src + i * BYTES, dst + i * QK);                           \
    }                                                                                  \
    extern "C" __global__ void dequant_##fmt##_bf16(const u8* src, bf16* dst, i64 nb) { \
        i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;                            \
        if (i < nb) dq_##fmt(src + i * BYTES, dst + i * QK);                           \
    }
DEQUANT(q4_0, 18, 32)
DEQUANT(q4_1, 20, 32)
DEQUANT(q8_0, 34, 32)
DEQUANT(q4_k, 144, 256)
DEQUANT(q5_k, 176, 256)
DEQUANT(q6_k, 210, 256)
DEQUANT(f32, 4, 1)
DEQUANT(f16, 2, 1)
DEQUANT(bf16, 2, 1)

// ---- the forward pass --------------------------------------------------------

// x[t, :] = table[ids[t], :] (grid: T blocks).
template <typename W>
__device__ void embed(const W* table, const int* ids, float* x, int d) {
    i64 t = blockIdx.x;
    const W* row = table + (i64)ids[t] * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) x[t * d + i] = get(row, i);
}
extern "C" __global__ void embed_f32(const float* table, const int* ids, float* x, int d) { embed(table, ids, x, d); }
extern "C" __global__ void embed_bf16(const bf16* table, const int* ids, float* x, int d) { embed(table, ids, x, d); }

// The residual add fused with the next RMSNorm (grid: T blocks of 256):
// x[t] += delta[t] (when delta is not null), then
// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w. The mean square is summed in
// f64, as the CPU does.
template <typename A>
__device__ void add_rmsnorm(float* x, const float* delta, const float* w, A* out, int d, float eps) {
    __shared__ double scratch[32];
    i64 base = (i64)blockIdx.x * d;
    double ss = 0.0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float v = x[base + i];
        if (delta) {
            v += delta[base + i];
            x[base + i] = v;
        }
        ss += (double)v * (double)v;
    }
    ss = block_sum(ss, scratch);
    float inv = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
    for (int i = threadIdx.x; i < d; i += blockDim.x) put(out, base + i, x[base + i] * inv * w[i]);
}
extern "C" __global__ void add_rmsnorm_f32(float* x, const float* delta, const float* w, float* out, int d, float eps) { add_rmsnorm(x, delta, w, out, d, eps); }
extern "C" __global__ void add_rmsnorm_bf16(float* x, const float* delta, const float* w, bf16* out, int d, float eps) { add_rmsnorm(x, delta, w, out, d, eps); }

// RoPE on the query and key parts of the fused QKV rows, in place.
// qkv: (T, (H + 2 Hkv) hd); cos/sin: (positions, hd/2), computed in f64 on
// the host as the CPU does. One thread per (token, head of H + Hkv, pair).
extern "C" __global__ void rope(float* qkv, const int* pos, const float* cos_t, const float* sin_t,
                                i64 n, int n_heads, int n_kv_heads, int hd, int interleaved) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int half = hd / 2;
    int heads = n_heads + n_kv_heads;
    int pair = (int)(i % half);
    int head = (int)((i / half) % heads);
    i64 t = i / ((i64)half * heads);
    float* h = qkv + t * (i64)(n_heads + 2 * n_kv_heads) * hd + (i64)head * hd;
    int a = interleaved ? 2 * pair : pair;
    int b = interleaved ? 2 * pair + 1 : pair + half;
    i64 c = (i64)pos[t] * half + pair;
    float cs = cos_t[c], sn = sin_t[c];
    float x0 = h[a], x1 = h[b];
    h[a] = x0 * cs - x1 * sn;
    h[b] = x0 * sn + x1 * cs;
}

// Causal grouped-query attention over packed sequences, one warp per
// (token, query head), with an online softmax over chunks of 32 keys.
//
// qkv: (T, (H + 2 Hkv) hd) f32, rotated; `prefix`: the same rows of a shared
// prompt computed once (the first `start_pos` positions of every sequence
// come from it). Token t sits at absolute position pos[t]; its sequence's
// new tokens start at batch row first[t], whose position is the number of
// prefix positions the sequence uses. window > 0: keys p-window+1 ..= p.
// out: (T, H hd). hd <= 256.
#define ATT_WARPS 4
#define ATT_MAX_HD 256
template <typename A>
__device__ void attention(const float* qkv, const float* prefix, const int* pos, const int* first,
                          A* out, int n_tok, int n_heads, int n_kv_heads, int hd, float scale,
                          int window) {
    __shared__ float q_s[ATT_WARPS][ATT_MAX_HD];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    i64 item = (i64)blockIdx.x * ATT_WARPS + warp;
    if (item >= (i64)n_tok * n_heads) return;  // the whole warp leaves together
    int t = (int)(item / n_heads), head = (int)(item % n_heads);
    int kvh = head / (n_heads / n_kv_heads);
    i64 stride = (i64)(n_heads + 2 * n_kv_heads) * hd;
    i64 k_off = (i64)n_heads * hd + (i64)kvh * hd;
    i64 v_off = (i64)(n_heads + n_kv_heads) * hd + (i64)kvh * hd;
    int p = pos[t], s0 = first[t], shared = pos[s0];
    int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;

    const float* q = qkv + (i64)t * stride + (i64)head * hd;
    for (int i = lane; i < hd; i += 32) q_s[warp][i] = q[i] * scale;
    __syncwarp(FULL_MASK);

    float acc[ATT_MAX_HD / 32];
    for (int i = 0; i < ATT_MAX_HD / 32; i++) acc[i] = 0.f;
    float m = NEG_INF, l = 0.f;
    for (int c0 = lo; c0 <= p; c0 += 32) {
        // Lane j scores key c0 + j.
        int kp = c0 + lane;
        float s = NEG_INF;
        if (kp <= p) {
            const float* row = kp < shared ? prefix + (i64)kp * stride : qkv + (i64)(s0 + kp - shared) * stride;
            const float* k = row + k_off;
            float dot = 0.f;
            for (int i = 0; i < hd; i++) dot += q_s[warp][i] * k[i];
            s = dot;
        }
        float m_new = fmaxf(m, warp_max(s));
        float pr = kp <= p ? expf(s - m_new) : 0.f;
        float corr = expf(m - m_new);  // 0 on the first chunk (m = -inf)
        l = l * corr + warp_sum(pr);
        for (int i = 0; i < ATT_MAX_HD / 32; i++) acc[i] *= corr;
        int n_keys = p - c0 + 1 < 32 ? p - c0 + 1 : 32;
        for (int j = 0; j < n_keys; j++) {
            float pj = __shfl_sync(FULL_MASK, pr, j);
            int kj = c0 + j;
            const float* row = kj < shared ? prefix + (i64)kj * stride : qkv + (i64)(s0 + kj - shared) * stride;
            const float* v = row + v_off;
            for (int i = 0; i < ATT_MAX_HD / 32; i++) {
                int dd = lane + 32 * i;
                if (dd < hd) acc[i] += pj * v[dd];
            }
        }
        m = m_new;
    }
    float inv = 1.f / l;
    A* o = out + (i64)t * n_heads * hd + (i64)head * hd;
    for (int i = 0; i < ATT_MAX_HD / 32; i++) {
        int dd = lane + 32 * i;
        if (dd < hd) put(o, dd, acc[i] * inv);
    }
}
extern "C" __global__ void attention_f32(const float* qkv, const float* prefix, const int* pos, const int* first, float* out, int n_tok, int n_heads, int n_kv_heads, int hd, float scale, int window) {
    attention(qkv, prefix, pos, first, out, n_tok, n_heads, n_kv_heads, hd, scale, window);
}
extern "C" __global__ void attention_bf16(const float* qkv, const float* prefix, const int* pos, const int* first, bf16* out, int n_tok, int n_heads, int n_kv_heads, int hd, float scale, int window) {
    attention(qkv, prefix, pos, first, out, n_tok, n_heads, n_kv_heads, hd, scale, window);
}

// Decode attention over per-sequence KV caches: one new token per
// sequence (batched generation), one warp per (sequence, query head), the
// same online softmax over chunks of 32 keys as `attention`.
//
// qkv: (n_seq, (H + 2 Hkv) hd) f32, the new tokens' rotated rows; caches[t]:
// the address of sequence t's cached rows for this layer, (capacity, (H +
// 2 Hkv) hd) f32 in the same layout, positions 0 .. pos[t]-1 filled; the
// new token sits at position pos[t] and is read from qkv (the caller
// appends it to the cache after the step). window > 0: keys p-window+1 ..= p.
// out: (n_seq, H hd). hd <= 256.
template <typename A>
__device__ void attention_decode(const float* qkv, const i64* caches, const int* pos, A* out,
                                 int n_seq, int n_heads, int n_kv_heads, int hd, float scale,
                                 int window) {
    __shared__ float q_s[ATT_WARPS][ATT_MAX_HD];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    i64 item = (i64)blockIdx.x * ATT_WARPS + warp;
    if (item >= (i64)n_seq * n_heads) return;  // the whole warp leaves together
    int t = (int)(item / n_heads), head = (int)(item % n_heads);
    int kvh = head / (n_heads / n_kv_heads);
    i64 stride = (i64)(n_heads + 2 * n_kv_heads) * hd;
    i64 k_off = (i64)n_heads * hd + (i64)kvh * hd;
    i64 v_off = (i64)(n_heads + n_kv_heads) * hd + (i64)kvh * hd;
    int p = pos[t];
    int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    const float* cache = (const float*)caches[t];
    const float* fresh = qkv + (i64)t * stride;

    for (int i = lane; i < hd; i += 32) q_s[warp][i] = fresh[(i64)head * hd + i] * scale;
    __syncwarp(FULL_MASK);

    float acc[ATT_MAX_HD / 32];
    for (int i = 0; i < ATT_MAX_HD / 32; i++) acc[i] = 0.f;
    float m = NEG_INF, l = 0.f;
    for (int c0 = lo; c0 <= p; c0 += 32) {
        int kp = c0 + lane;
        float s = NEG_INF;
        if (kp <= p) {
            const float* row = kp < p ? cache + (i64)kp * stride : fresh;
            const float* k = row + k_off;
            float dot = 0.f;
            for (int i = 0; i < hd; i++) dot += q_s[warp][i] * k[i];
            s = dot;
        }
        float m_new = fmaxf(m, warp_max(s));
        float pr = kp <= p ? expf(s - m_new) : 0.f;
        float corr = expf(m - m_new);  // 0 on the first chunk (m = -inf)
        l = l * corr + warp_sum(pr);
        for (int i = 0; i < ATT_MAX_HD / 32; i++) acc[i] *= corr;
        int n_keys = p - c0 + 1 < 32 ? p - c0 + 1 : 32;
        for (int j = 0; j < n_keys; j++) {
            float pj = __shfl_sync(FULL_MASK, pr, j);
            int kj = c0 + j;
            const float* row = kj < p ? cache + (i64)kj * stride : fresh;
            const float* v = row + v_off;
            for (int i = 0; i < ATT_MAX_HD / 32; i++) {
                int dd = lane + 32 * i;
                if (dd < hd) acc[i] += pj * v[dd];
            }
        }
        m = m_new;
    }
    float inv = 1.f / l;
    A* o = out + (i64)t * n_heads * hd + (i64)head * hd;
    for (int i = 0; i < ATT_MAX_HD / 32; i++) {
        int dd = lane + 32 * i;
        if (dd < hd) put(o, dd, acc[i] * inv);
    }
}
extern "C" __global__ void attention_decode_f32(const float* qkv, const i64* caches, const int* pos, float* out, int n_seq, int n_heads, int n_kv_heads, int hd, float scale, int window) {
    attention_decode(qkv, caches, pos, out, n_seq, n_heads, n_kv_heads, hd, scale, window);
}
extern "C" __global__ void attention_decode_bf16(const float* qkv, const i64* caches, const int* pos, bf16* out, int n_seq, int n_heads, int n_kv_heads, int hd, float scale, int window) {
    attention_decode(qkv, caches, pos, out, n_seq, n_heads, n_kv_heads, hd, scale, window);
}

// Appends each sequence's new QKV row to its cache (grid: n_seq blocks):
// caches[t] + pos[t] * stride <- qkv[t, :], stride = (H + 2 Hkv) hd floats,
// the layout `attention_decode` reads.
extern "C" __global__ void append_rows(const float* qkv, const i64* caches, const int* pos, int stride) {
    i64 t = blockIdx.x;
    float* dst = (float*)caches[t] + (i64)pos[t] * stride;
    const float* src = qkv + t * stride;
    for (int i = threadIdx.x; i < stride; i += blockDim.x) dst[i] = src[i];
}

// out[t, i] = silu(gate) * up with gu = (T, 2F) = [gate | up] rows; silu as
// the CPU computes it (kernels/activation.rs): x * s / (1 + e), e = exp(-|x|).
template <typename A>
__device__ void swiglu(const float* gu, A* out, i64 n, int f) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    i64 t = i / f;
    int j = (int)(i % f);
    float x = gu[t * 2 * f + j], u = gu[t * 2 * f + f + j];
    float e = expf(-fabsf(x));
    float s = x >= 0.f ? 1.f : e;
    put(out, i, x * s / (1.f + e) * u);
}
extern "C" __global__ void swiglu_f32(const float* gu, float* out, i64 n, int f) { swiglu(gu, out, n, f); }
extern "C" __global__ void swiglu_bf16(const float* gu, bf16* out, i64 n, int f) { swiglu(gu, out, n, f); }

// dst[i, :] = src[rows[i], :]: the hidden states that predict target tokens.
template <typename A>
__device__ void gather_rows(const A* src, const int* rows, A* dst, int d) {
    i64 r = blockIdx.x;
    const A* s = src + (i64)rows[r] * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[r * d + i] = s[i];
}
extern "C" __global__ void gather_rows_f32(const float* src, const int* rows, float* dst, int d) { gather_rows(src, rows, dst, d); }
extern "C" __global__ void gather_rows_bf16(const bf16* src, const int* rows, bf16* dst, int d) { gather_rows(src, rows, dst, d); }

// One vocabulary chunk of the fused log-softmax (grid: R blocks of 256).
// logits: (R, width) f32 for vocabulary ids v0 .. v0+width. Updates each
// row's running max and sum of exp (online log-sum-exp, the sum in f64) and
// picks out the target's logit when it falls in this chunk.
extern "C" __global__ void logsumexp_chunk(const float* logits, int width, int v0, const int* targets,
                                           float* run_max, double* run_sum, float* target_logit) {
    __shared__ float fscratch[32];
    __shared__ double dscratch[32];
    i64 r = blockIdx.x;
    const float* row = logits + r * width;
    float mx = NEG_INF;
    for (int i = threadIdx.x; i < width; i += blockDim.x) mx = fmaxf(mx, row[i]);
    mx = block_max(mx, fscratch);
    double s = 0.0;
    for (int i = threadIdx.x; i < width; i += blockDim.x) s += (double)expf(row[i] - mx);
    s = block_sum(s, dscratch);
    if (threadIdx.x == 0) {
        float old_m = run_max[r];
        float new_m = fmaxf(old_m, mx);
        double old_s = old_m == NEG_INF ? 0.0 : run_sum[r] * exp((double)old_m - (double)new_m);
        run_sum[r] = old_s + s * exp((double)mx - (double)new_m);
        run_max[r] = new_m;
        int tgt = targets[r] - v0;
        if (tgt >= 0 && tgt < width) target_logit[r] = row[tgt];
    }
}

// Start values of the running log-sum-exp (grid covers n).
extern "C" __global__ void logsumexp_init(float* run_max, double* run_sum, float* target_logit, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        run_max[i] = NEG_INF;
        run_sum[i] = 0.0;
        target_logit[i] = __int_as_float(0x7fc00000);  // NaN until the target's chunk is seen
    }
}
