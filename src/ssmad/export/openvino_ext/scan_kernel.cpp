// The routed scan of one (batch item, 16-channel block): ssmad.ops.scan_numba's forward in C++.
// For each group g: dt = softplus(delta + bias) at every position (scratch); then for each pass
// of 16 state entries and each route r, one loop over the route's steps with the 16 x 16 (state x
// channel) block in registers: h_n = exp(dt A_n) h_n + dt u B_n, acc += h_n C_n, and
// y[pos] += weight_gr acc. y starts as u * skip. A vector of 16 float32 is one GCC vector
// extension value: one register with AVX-512, two with AVX2, four with SSE2 (the baseline).
// Compiled with -DSSMAD_ISA=<name> into scan_task_<name>; its helpers have internal linkage and no C++
// library code is used here, so no code of one instruction set can stand in for another's.
#include "scan_kernel.hpp"

#ifndef SSMAD_ISA
#error "compile with -DSSMAD_ISA=baseline|avx2|avx512"
#endif
#define SSMAD_JOIN2(a, b) a##b
#define SSMAD_JOIN(a, b) SSMAD_JOIN2(a, b)
#define SSMAD_TASK SSMAD_JOIN(scan_task_, SSMAD_ISA)

namespace ssmad {
namespace {

typedef float vf __attribute__((vector_size(64)));
typedef int vi __attribute__((vector_size(64)));
constexpr int kPass = 16;  // state entries per pass

__attribute__((always_inline)) inline vf splat(float x) { return vf{} + x; }

__attribute__((always_inline)) inline vf load(const float* p, int64_t count) {
    vf v{};
    if (count == kLanes) {
        __builtin_memcpy(&v, p, sizeof v);
    } else {
        for (int64_t j = 0; j < count; ++j) v[j] = p[j];
    }
    return v;
}

__attribute__((always_inline)) inline void store(float* p, vf v, int64_t count) {
    if (count == kLanes) {
        __builtin_memcpy(p, &v, sizeof v);
    } else {
        for (int64_t j = 0; j < count; ++j) p[j] = v[j];
    }
}

__attribute__((always_inline)) inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// exp(x) for x <= 88, relative error <= 2e-7 (x below -87 gives exp(-87)): scan_numba's _exp.
__attribute__((always_inline)) inline vf vexp(vf x) {
    x = vmax(x, splat(-87.0f));
    const vf round = splat(12582912.0f + 127.0f);  // adding it rounds x / ln 2 into the low mantissa bits
    vf v = x * 1.4426950408889634f + round;
    vf k = v - round;
    vf r = x - k * 0.6931471805599453f;
    vf p = ((((0.00831471942f * r + 0.0418902077f) * r + 0.166670904f) * r + 0.499992311f) * r + 1.0f) * r + 1.0f;
    vi bits = (vi)v << 23;
    return p * (vf)bits;
}

// log(1 + exp(x)), relative error <= 4e-7: scan_numba's _softplus.
__attribute__((always_inline)) inline vf vsoftplus(vf x) {
    vf z = vexp(vmax(x, -x) * -1.0f);
    vf s = z / (2.0f + z);
    vf s2 = s * s;
    vf p = ((((s2 * (1.0f / 11) + 1.0f / 9) * s2 + 1.0f / 7) * s2 + 1.0f / 5) * s2 + 1.0f / 3) * s2 + 1.0f;
    return vmax(x, splat(0.0f)) + 2.0f * s * p;
}

}  // namespace

void SSMAD_TASK(const ScanArgs& a, int64_t b, int64_t c0, float* scratch) {
    const int64_t L = a.length, D = a.dim, N = a.state, G = a.groups, R = a.routes;
    const int64_t lanes = D - c0 < kLanes ? D - c0 : kLanes;
    const float* u = a.u + b * L * D + c0;
    float* y = a.y + b * L * D + c0;
    const vf skip = load(a.skip + c0, lanes);
    for (int64_t l = 0; l < L; ++l) store(y + l * D, load(u + l * D, lanes) * skip, lanes);
    vf* dt = reinterpret_cast<vf*>(scratch);  // (L,) vectors; scratch is 64-byte aligned
    for (int64_t g = 0; g < G; ++g) {
        const float* delta = a.delta + (b * G + g) * L * D + c0;
        const vf bias = load(a.bias + g * D + c0, lanes);
        for (int64_t l = 0; l < L; ++l) dt[l] = vsoftplus(load(delta + l * D, lanes) + bias);
        const float* Bg = a.B + (b * G + g) * L * N;
        const float* Cg = a.C + (b * G + g) * L * N;
        for (int64_t s = 0; s < N; s += kPass) {
            const int64_t entries = N - s < kPass ? N - s : kPass;
            vf A[kPass], h[kPass];
            for (int n = 0; n < kPass; ++n) {
                A[n] = vf{};
                if (n < entries)
                    for (int64_t j = 0; j < lanes; ++j) A[n][j] = a.A[(g * D + c0 + j) * N + s + n];
            }
            for (int64_t r = 0; r < R; ++r) {
                const int32_t* order = a.index + (g * R + r) * L;
                const float* keep = a.keep + (g * R + r) * L;
                const float w = a.weight[g * R + r];
                for (int n = 0; n < kPass; ++n) h[n] = vf{};
                for (int64_t t = 0; t < L; ++t) {
                    const int64_t pos = order[t];
                    if (keep[t] == 0.0f)
                        for (int n = 0; n < kPass; ++n) h[n] = vf{};
                    const vf dt_t = dt[pos];
                    const vf drive = dt_t * load(u + pos * D, lanes);
                    const float* Bt = Bg + pos * N + s;
                    const float* Ct = Cg + pos * N + s;
                    vf acc{};
                    if (entries == kPass) {
                        for (int n = 0; n < kPass; ++n) {
                            h[n] = vexp(dt_t * A[n]) * h[n] + drive * Bt[n];
                            acc += h[n] * Ct[n];
                        }
                    } else {
                        for (int n = 0; n < entries; ++n) {
                            h[n] = vexp(dt_t * A[n]) * h[n] + drive * Bt[n];
                            acc += h[n] * Ct[n];
                        }
                    }
                    float* out = y + pos * D;
                    store(out, load(out, lanes) + acc * w, lanes);
                }
            }
        }
    }
}

}  // namespace ssmad
