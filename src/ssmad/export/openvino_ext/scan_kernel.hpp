// The fused routed scan's kernel, compiled once per instruction set (scan_kernel.cpp built with
// -DSSMAD_ISA=avx512 / avx2 / baseline); extension.cpp picks one at run time. A plain C interface:
// the per-ISA objects share no inline C++ functions, so the linker cannot mix their code.
#pragma once
#include <cstdint>

namespace ssmad {

// Every tensor row-major float32 (index int32); shapes as in extension.cpp's RoutedScan.
struct ScanArgs {
    const float* u;         // (b, L, D)
    const float* delta;     // (b, G, L, D)
    const float* A;         // (G, D, N)
    const float* B;         // (b, G, L, N)
    const float* C;         // (b, G, L, N)
    const float* skip;      // (D,) sum_g Dskip_g sum_r weight_gr
    const float* bias;      // (G, D)
    const int32_t* index;   // (G, R, L)
    const float* keep;      // (G, R, L)
    const float* weight;    // (G, R)
    float* y;               // (b, L, D)
    int64_t batch, groups, routes, length, dim, state;
};

constexpr int64_t kLanes = 16;  // channels per task: one 16-float vector

// Scratch floats one task needs: dt of a (group, 16-channel block) at every position.
inline int64_t scan_scratch_floats(const ScanArgs& args) { return args.length * kLanes; }

// One task: batch item b, channels [c0, c0 + 16) (clipped at D); scratch of scan_scratch_floats.
using ScanTask = void (*)(const ScanArgs& args, int64_t b, int64_t c0, float* scratch);

void scan_task_baseline(const ScanArgs& args, int64_t b, int64_t c0, float* scratch);
void scan_task_avx2(const ScanArgs& args, int64_t b, int64_t c0, float* scratch);
void scan_task_avx512(const ScanArgs& args, int64_t b, int64_t c0, float* scratch);

}  // namespace ssmad
