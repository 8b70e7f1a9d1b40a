// ssmad's OpenVINO extension: the operator ssmad::RoutedScan, the fused routed selective scan of
// an SS2D layer (every direction and pyramid level in one call), and the ONNX frontend's
// conversion of the exported node ssmad.RoutedScan into it.
//
//   core.add_extension("libssmad_openvino.so")   // Python: ov.Core().add_extension(path)
//
// Inputs (float32, index int64), channels last: u (b, L, D); delta (b, G, L, D); A (G, D, N);
// B, C (b, G, L, N); Dskip, bias (G, D); index (G, R, L); keep (G, R, L), 0 where route (g, r)
// restarts; weight (G, R). Output y (b, L, D):
//   y[l] = u[l] sum_g Dskip_g sum_r w_gr + sum_{g,r} w_gr <C_t, h_t>  at l = index[g, r, t],
//   h_t = exp(dt_t A_g) h_{t-1} + dt_t B_t u_t (h = 0 where keep is 0), dt = softplus(delta + bias).
// evaluate() runs the tasks (batch item, 16-channel block) in parallel with ov::parallel_for in
// the calling stream's TBB arena (INFERENCE_NUM_THREADS); each task runs scan_kernel.cpp's
// code for the widest instruction set the CPU has (AVX-512, AVX2, else the baseline).
#include <cstdlib>
#include <memory>
#include <vector>

#include "openvino/core/extension.hpp"
#include "openvino/core/op_extension.hpp"
#include "openvino/core/parallel.hpp"
#include "openvino/frontend/onnx/extension/conversion.hpp"
#include "openvino/op/op.hpp"
#include "scan_kernel.hpp"

namespace ssmad {

namespace {

ScanTask pick_task() {
#if defined(SSMAD_HAVE_X86_VARIANTS)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return scan_task_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return scan_task_avx2;
#endif
    return scan_task_baseline;
}

const ScanTask kTask = pick_task();

}  // namespace

class RoutedScan : public ov::op::Op {
public:
    OPENVINO_OP("RoutedScan", "ssmad");

    RoutedScan() = default;
    explicit RoutedScan(const ov::OutputVector& inputs) : Op(inputs) { constructor_validate_and_infer_types(); }

    void validate_and_infer_types() override {
        NODE_VALIDATION_CHECK(this, get_input_size() == 10, "ssmad::RoutedScan takes 10 inputs, got ", get_input_size());
        set_output_type(0, get_input_element_type(0), get_input_partial_shape(0));
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override {
        return std::make_shared<RoutedScan>(inputs);
    }

    bool visit_attributes(ov::AttributeVisitor&) override { return true; }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        for (size_t i = 0; i < inputs.size(); ++i)
            if (i != 7 && inputs[i].get_element_type() != ov::element::f32)
                OPENVINO_THROW("ssmad::RoutedScan computes in float32: input ", i, " is ", inputs[i].get_element_type(),
                               " (compile the model with INFERENCE_PRECISION_HINT f32)");
        const ov::Shape& delta = inputs[1].get_shape();  // (b, G, L, D)
        const ov::Shape& routes = inputs[7].get_shape();  // (G, R, L)
        outputs[0].set_shape(inputs[0].get_shape());
        ScanArgs args{};
        args.batch = static_cast<int64_t>(delta[0]);
        args.groups = static_cast<int64_t>(delta[1]);
        args.length = static_cast<int64_t>(delta[2]);
        args.dim = static_cast<int64_t>(delta[3]);
        args.routes = static_cast<int64_t>(routes[1]);
        args.state = static_cast<int64_t>(inputs[2].get_shape()[2]);
        args.u = inputs[0].data<const float>();
        args.delta = inputs[1].data<const float>();
        args.A = inputs[2].data<const float>();
        args.B = inputs[3].data<const float>();
        args.C = inputs[4].data<const float>();
        args.bias = inputs[6].data<const float>();
        // the CPU plugin hands integer constants over as int32
        std::vector<int32_t> index(inputs[7].get_size());
        if (inputs[7].get_element_type() == ov::element::i64) {
            const int64_t* wide = inputs[7].data<const int64_t>();
            for (size_t i = 0; i < index.size(); ++i) index[i] = static_cast<int32_t>(wide[i]);
            args.index = index.data();
        } else {
            args.index = inputs[7].data<const int32_t>();
        }
        args.keep = inputs[8].data<const float>();
        args.weight = inputs[9].data<const float>();
        args.y = outputs[0].data<float>();
        // the skip term's factor per channel: sum_g Dskip_g sum_r weight_gr
        std::vector<float> skip(args.dim, 0.0f);
        const float* Dskip = inputs[5].data<const float>();
        for (int64_t g = 0; g < args.groups; ++g) {
            float weights = 0.0f;
            for (int64_t r = 0; r < args.routes; ++r) weights += args.weight[g * args.routes + r];
            for (int64_t c = 0; c < args.dim; ++c) skip[c] += Dskip[g * args.dim + c] * weights;
        }
        args.skip = skip.data();
        const int64_t blocks = (args.dim + kLanes - 1) / kLanes;
        const int64_t scratch = scan_scratch_floats(args);
        ov::parallel_for(args.batch * blocks, [&](int64_t task) {
            float* buffer = static_cast<float*>(std::aligned_alloc(64, scratch * sizeof(float)));
            kTask(args, task / blocks, task % blocks * kLanes, buffer);
            std::free(buffer);
        });
        return true;
    }
};

}  // namespace ssmad

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<ssmad::RoutedScan>>(),
    std::make_shared<ov::frontend::onnx::ConversionExtension>(
        "RoutedScan", "ssmad",
        [](const ov::frontend::NodeContext& node) -> ov::OutputVector {
            ov::OutputVector inputs;
            for (size_t i = 0; i < node.get_input_size(); ++i) inputs.push_back(node.get_input(static_cast<int>(i)));
            return {std::make_shared<ssmad::RoutedScan>(inputs)->output(0)};
        }),
}));
