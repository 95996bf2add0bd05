// A CPU emulator for MAIN's CUDA kernels (kernels.cu), for tests on machines
// without a GPU. It compiles the kernel source as C++ with the CUDA names
// that source uses defined here, and runs each thread block as fibers
// (ucontext), one per CUDA thread, switched at __syncthreads, __syncwarp and
// warp shuffles. Everything runs on the calling OS thread, so `__shared__`
// becomes `static`. A barrier that can never be released (a __syncthreads
// not reached by every thread, a shuffle by part of a warp) aborts with a
// message: on a GPU it would hang or be undefined.
//
// emulator.rs builds this into a shared library with a table of the kernels
// and calls `emu_launch` with the same parameter array cuLaunchKernel takes.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>
#include <setjmp.h>
#include <ucontext.h>

namespace emu {

struct Dim3 {
    unsigned x = 1, y = 1, z = 1;
};

enum State { RUNNABLE, AT_BLOCK, AT_WARP, DONE };

struct Fiber {
    ucontext_t ctx;  // first entry only
    jmp_buf jb;      // every later switch: _setjmp/_longjmp save no signal
                     // mask, so a switch costs no system call
    bool started;
    Dim3 idx;
    unsigned linear;
    State state;
};

inline Dim3 g_thread, g_block, g_block_dim, g_grid_dim;
inline std::vector<Fiber> g_fibers;
inline std::vector<char> g_stacks;
inline Fiber* g_cur = nullptr;
inline jmp_buf g_sched;
inline const std::function<void()>* g_body = nullptr;
inline const char* g_kernel = "";
// Per warp: 32 eight-byte exchange slots for shuffles.
inline std::vector<uint64_t> g_slots;

constexpr size_t STACK = 64 * 1024;

inline void fiber_main() {
    (*g_body)();
    g_cur->state = DONE;
    _longjmp(g_sched, 1);
}

inline void wait(State s) {
    g_cur->state = s;
    if (_setjmp(g_cur->jb) == 0) _longjmp(g_sched, 1);
}

// Runs fiber f until it waits or ends.
inline void resume(Fiber& f) {
    g_cur = &f;
    g_thread = f.idx;
    if (_setjmp(g_sched) == 0) {
        if (!f.started) {
            f.started = true;
            setcontext(&f.ctx);
        }
        _longjmp(f.jb, 1);
    }
}

[[noreturn]] inline void deadlock(const char* why) {
    fprintf(stderr, "cuda emulator: kernel %s, block (%u,%u,%u): %s\n", g_kernel, g_block.x,
            g_block.y, g_block.z, why);
    abort();
}

inline void run_block(unsigned n) {
    g_fibers.assign(n, Fiber{});
    if (g_stacks.size() < n * STACK) g_stacks.resize(n * STACK);
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = g_fibers[i];
        f.linear = i;
        f.idx.x = i % g_block_dim.x;
        f.idx.y = (i / g_block_dim.x) % g_block_dim.y;
        f.idx.z = i / (g_block_dim.x * g_block_dim.y);
        f.state = RUNNABLE;
        f.started = false;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = g_stacks.data() + (size_t)i * STACK;
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_main, 0);
    }
    unsigned n_warps = (n + 31) / 32;
    g_slots.assign((size_t)n_warps * 32, 0);
    for (;;) {
        bool ran = false;
        for (unsigned i = 0; i < n; i++) {
            Fiber& f = g_fibers[i];
            if (f.state != RUNNABLE) continue;
            resume(f);
            ran = true;
        }
        bool all_done = true, released = false;
        // Warps whose live lanes all wait at __syncwarp / a shuffle go on.
        for (unsigned w = 0; w < n_warps; w++) {
            unsigned lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
            bool any_warp = false, all_warp = true;
            for (unsigned i = lo; i < hi; i++) {
                State s = g_fibers[i].state;
                if (s != DONE) all_done = false;
                if (s == AT_WARP) any_warp = true;
                if (s != AT_WARP && s != DONE) all_warp = false;
            }
            if (any_warp && all_warp) {
                for (unsigned i = lo; i < hi; i++)
                    if (g_fibers[i].state == AT_WARP) g_fibers[i].state = RUNNABLE;
                released = true;
            }
        }
        if (all_done) return;
        if (released || ran) continue;
        // Nothing ran: release __syncthreads when every live thread is there.
        bool all_block = true;
        for (auto& f : g_fibers)
            if (f.state != AT_BLOCK && f.state != DONE) all_block = false;
        if (!all_block) deadlock("threads wait at different barriers (divergent __syncthreads or a shuffle by part of a warp)");
        for (auto& f : g_fibers)
            if (f.state == AT_BLOCK) f.state = RUNNABLE;
    }
}

inline void run_grid(Dim3 grid, Dim3 block, const std::function<void()>& body) {
    g_body = &body;
    g_grid_dim = grid;
    g_block_dim = block;
    unsigned n = block.x * block.y * block.z;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                g_block.x = x;
                g_block.y = y;
                g_block.z = z;
                run_block(n);
            }
}

template <typename T>
inline T exchange(T v, unsigned src_lane) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    unsigned warp = g_cur->linear / 32, lane = g_cur->linear % 32;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    g_slots[warp * 32 + lane] = bits;
    wait(AT_WARP);
    T out;
    bits = g_slots[warp * 32 + (src_lane & 31)];
    memcpy(&out, &bits, sizeof(T));
    wait(AT_WARP);  // every lane has read before the slots are reused
    return out;
}

template <typename T>
struct Arity;
template <typename... A>
struct Arity<void (*)(A...)> {
    static constexpr size_t value = sizeof...(A);
};

template <typename... A, size_t... I>
inline void call(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_reference_t<A>*>(p[I])...);
}

template <auto F>
inline void launch(Dim3 grid, Dim3 block, void** params) {
    std::function<void()> body = [params] {
        call(F, params, std::make_index_sequence<Arity<decltype(F)>::value>());
    };
    run_grid(grid, block, body);
}

struct Entry {
    const char* name;
    void (*launch)(Dim3, Dim3, void**);
};

}  // namespace emu

// ---- the CUDA names kernels.cu uses ----
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define threadIdx (emu::g_thread)
#define blockIdx (emu::g_block)
#define blockDim (emu::g_block_dim)
#define gridDim (emu::g_grid_dim)

inline void __syncthreads() { emu::wait(emu::AT_BLOCK); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait(emu::AT_WARP); }
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    unsigned lane = emu::g_cur->linear % 32;
    return emu::exchange(v, lane ^ (unsigned)mask);
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src) {
    return emu::exchange(v, (unsigned)src);
}
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
