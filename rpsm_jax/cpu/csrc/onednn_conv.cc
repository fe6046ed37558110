// oneDNN convolutions as XLA:CPU FFI custom calls (rpsm_jax/cpu/onednn.py builds and loads
// this).
//
// Four handlers over float32 NHWC activations and HWIO kernels (lax's layout in rpsm_jax):
//   RpsmOnednnConvForward(x[N,H,W,C], w[KH,KW,C,O]) -> y[N,OH,OW,O]
//   RpsmOnednnConvBiasReluForward(x, w, b[O]) -> relu(conv(x, w) + b), in one pass
//   RpsmOnednnConvBackwardData(dy[N,OH,OW,O], w[KH,KW,C,O]) -> dx[N,H,W,C]
//   RpsmOnednnConvBackwardWeights(x[N,H,W,C], dy[N,OH,OW,O]) -> dw[KH,KW,C,O]
// Attributes: stride_h, stride_w, pad_top, pad_left (pixels). The bottom/right padding
// follows from the buffer shapes. Activations are handed to oneDNN in place (format tag
// nhwc, what PyTorch's channels_last uses); kernels are reordered to the format the chosen
// implementation wants, per call (they are small).
//
// Builds against the oneDNN 3.x C++ API (the package index's onednn-devel-cpu-gomp 3.2,
// Debian 13 / Ubuntu 24.04) and 2.x (Debian 12's libdnnl-dev 2.6): only the construction
// of primitive descriptors and the ReLU post-op differ (#if DNNL_VERSION_MAJOR below).
// Primitives are built once per shape and cached.
//
// Every call runs on one dedicated thread. oneDNN's OpenMP runtime (libgomp) keeps a pool
// of worker threads per thread that starts parallel work; were XLA's worker threads to call
// oneDNN directly, each would grow its own pool (on a 16-core host, up to 16 teams of 16,
// and XLA runs independent calls, such as a layer's two gradients, concurrently). One
// thread keeps it to one team of as many threads as cores. libgomp also stops spin-waiting
// at its barriers, in every team of the process, once it manages more threads than there
// are cores: beside PyTorch in one 2-core process, the port's train step took 270 ms instead
// of 221-225 (rpsm_jax.benchmark --notorch_worker), hence the benchmark's worker process.

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

#if DNNL_VERSION_MAJOR != 2 && DNNL_VERSION_MAJOR != 3
#error "rpsm_jax's oneDNN convolutions are written for the oneDNN 2.x and 3.x APIs"
#endif

namespace ffi = xla::ffi;

namespace {

enum class Kind { kForward, kBackwardData, kBackwardWeights, kForwardBiasRelu };

struct Shape {
  int64_t n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pl;
  auto Tie() const { return std::tie(n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pl); }
  bool operator<(const Shape& other) const { return Tie() < other.Tie(); }
};

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

struct Descs {
  dnnl::memory::desc src, dst, weights_any, weights_hwio;
  dnnl::memory::dims strides, pad_l, pad_r;
  explicit Descs(const Shape& s)
      : src({s.n, s.c, s.h, s.w}, dt::f32, tag::nhwc),
        dst({s.n, s.o, s.oh, s.ow}, dt::f32, tag::nhwc),
        weights_any({s.o, s.c, s.kh, s.kw}, dt::f32, tag::any),
        weights_hwio({s.o, s.c, s.kh, s.kw}, dt::f32, tag::hwio),
        strides({s.sh, s.sw}),
        pad_l({s.pt, s.pl}),
        // oneDNN wants the padding that makes (in + pads - k) / stride + 1 exact.
        pad_r({(s.oh - 1) * s.sh + s.kh - s.h - s.pt, (s.ow - 1) * s.sw + s.kw - s.w - s.pl}) {}
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// 3.x builds primitive descriptors from (engine, [prop,] algorithm, memory descs,
// geometry, [hint,] attr); 2.x went through an operation ::desc first.
dnnl::convolution_forward::primitive_desc ForwardDesc(const Descs& d) {
  const auto prop = dnnl::prop_kind::forward_training;
  const auto alg = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::convolution_forward::primitive_desc(Engine(), prop, alg, d.src, d.weights_any,
                                                   d.dst, d.strides, d.pad_l, d.pad_r,
                                                   UserScratchpad());
#else
  dnnl::convolution_forward::desc desc(prop, alg, d.src, d.weights_any, d.dst, d.strides,
                                       d.pad_l, d.pad_r);
  return dnnl::convolution_forward::primitive_desc(desc, UserScratchpad(), Engine());
#endif
}

// The forward convolution with a bias and a ReLU applied to its output as it is written.
dnnl::convolution_forward::primitive_desc ForwardBiasReluDesc(const Descs& d, int64_t o) {
  const auto prop = dnnl::prop_kind::forward_training;
  const auto alg = dnnl::algorithm::convolution_direct;
  dnnl::memory::desc bias({o}, dt::f32, tag::x);
  dnnl::post_ops relu;
  dnnl::primitive_attr attr = UserScratchpad();
#if DNNL_VERSION_MAJOR >= 3
  relu.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);   // 3.x: no scale argument
  attr.set_post_ops(relu);
  return dnnl::convolution_forward::primitive_desc(Engine(), prop, alg, d.src, d.weights_any,
                                                   bias, d.dst, d.strides, d.pad_l, d.pad_r,
                                                   attr);
#else
  relu.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  attr.set_post_ops(relu);
  dnnl::convolution_forward::desc desc(prop, alg, d.src, d.weights_any, bias, d.dst,
                                       d.strides, d.pad_l, d.pad_r);
  return dnnl::convolution_forward::primitive_desc(desc, attr, Engine());
#endif
}

// Both backward passes take the same arguments (Primitive: convolution_backward_data or
// convolution_backward_weights); the forward descriptor is their hint.
template <class Primitive>
typename Primitive::primitive_desc BackwardDesc(const Descs& d) {
  const auto alg = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  return typename Primitive::primitive_desc(Engine(), alg, d.src, d.weights_any, d.dst,
                                            d.strides, d.pad_l, d.pad_r, ForwardDesc(d),
                                            UserScratchpad());
#else
  typename Primitive::desc desc(alg, d.src, d.weights_any, d.dst, d.strides, d.pad_l,
                                d.pad_r);
  return typename Primitive::primitive_desc(desc, UserScratchpad(), Engine(),
                                            ForwardDesc(d));
#endif
}

dnnl::convolution_backward_data::primitive_desc BackwardDataDesc(const Descs& d) {
  return BackwardDesc<dnnl::convolution_backward_data>(d);
}

dnnl::convolution_backward_weights::primitive_desc BackwardWeightsDesc(const Descs& d) {
  return BackwardDesc<dnnl::convolution_backward_weights>(d);
}

// One cached convolution: the primitive, its kernel format, and the kernel reorder.
struct Entry {
  dnnl::primitive primitive;
  dnnl::memory::desc weights;       // the implementation's kernel format
  dnnl::memory::desc scratchpad;
  bool reorder_weights = false;
  dnnl::reorder weights_reorder;    // HWIO -> weights (forward, data) or back (weights)
  std::string impl;
};

// Fills `e` from a primitive descriptor; `weights` is the kernel (or kernel-gradient)
// format the implementation chose.
template <typename Primitive, typename PrimitiveDesc>
void Fill(Entry& e, const PrimitiveDesc& pd, const dnnl::memory::desc& weights) {
  e.primitive = Primitive(pd);
  e.weights = weights;
  e.scratchpad = pd.scratchpad_desc();
  e.impl = pd.impl_info_str();
}

std::unique_ptr<Entry> Build(Kind kind, const Shape& s) {
  Descs d(s);
  auto entry = std::make_unique<Entry>();
  if (kind == Kind::kForwardBiasRelu) {
    auto pd = ForwardBiasReluDesc(d, s.o);
    Fill<dnnl::convolution_forward>(*entry, pd, pd.weights_desc());
  } else if (kind == Kind::kForward) {
    auto pd = ForwardDesc(d);
    Fill<dnnl::convolution_forward>(*entry, pd, pd.weights_desc());
  } else if (kind == Kind::kBackwardData) {
    auto pd = BackwardDataDesc(d);
    Fill<dnnl::convolution_backward_data>(*entry, pd, pd.weights_desc());
  } else {
    auto pd = BackwardWeightsDesc(d);
    Fill<dnnl::convolution_backward_weights>(*entry, pd, pd.diff_weights_desc());
  }
  entry->reorder_weights = entry->weights != d.weights_hwio;
  if (entry->reorder_weights) {
    entry->weights_reorder = kind == Kind::kBackwardWeights
        ? dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), entry->weights, Engine(),
                                                      d.weights_hwio))
        : dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), d.weights_hwio, Engine(),
                                                      entry->weights));
  }
  return entry;
}

Entry& Lookup(Kind kind, const Shape& s) {
  static std::mutex mutex;
  static auto* cache = new std::map<std::pair<int, Shape>, std::unique_ptr<Entry>>();
  std::lock_guard<std::mutex> lock(mutex);
  auto key = std::make_pair(static_cast<int>(kind), s);
  auto it = cache->find(key);
  if (it == cache->end()) it = cache->emplace(key, Build(kind, s)).first;
  return *it->second;
}

// The one thread that runs oneDNN (see the top of this file). Run() blocks the calling
// XLA thread until its task is done; tasks from several XLA threads run one at a time.
class Executor {
 public:
  void Run(const std::function<void()>& task) {
    Item item{&task, false};
    std::unique_lock<std::mutex> lock(mutex_);
    if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
    queue_.push_back(&item);
    work_.notify_one();
    done_.wait(lock, [&item] { return item.done; });
  }

 private:
  struct Item {
    const std::function<void()>* task;
    bool done;
  };

  void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      work_.wait(lock, [this] { return !queue_.empty(); });
      Item* item = queue_.front();
      queue_.pop_front();
      lock.unlock();
      (*item->task)();
      lock.lock();
      item->done = true;
      done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_, done_;
  std::deque<Item*> queue_;
  std::thread thread_;
};

Executor& TheExecutor() {
  static Executor* executor = new Executor();   // never destroyed: its thread lives on
  return *executor;
}

// Scratch memory of the executor thread, grown on demand.
void* ThreadBuffer(int which, size_t bytes) {
  static std::vector<char> buffers[2];
  auto& b = buffers[which];
  if (b.size() < bytes + 64) b.resize(bytes + 64);
  auto address = reinterpret_cast<uintptr_t>(b.data());
  return reinterpret_cast<void*>((address + 63) & ~uintptr_t{63});
}

void Execute(Kind kind, const Shape& s, float* x, float* w, float* y, float* b);

ffi::Error Run(Kind kind, const Shape& s, float* x, float* w, float* y,
               float* b = nullptr) {
  // x: input activations (or their gradient), w: kernel (or its gradient), y: output
  // activations (or their gradient); one of them is written, by kind. b: the bias.
  if (s.n == 0 || s.c == 0 || s.o == 0 || s.oh == 0 || s.ow == 0) {
    if (kind == Kind::kForwardBiasRelu) {
      for (int64_t i = 0; i < s.n * s.oh * s.ow; ++i) {   // relu(b) where there is no input
        for (int64_t j = 0; j < s.o; ++j) y[i * s.o + j] = s.c == 0 && b[j] > 0 ? b[j] : 0.f;
      }
    }
    if (kind == Kind::kForward) std::memset(y, 0, sizeof(float) * s.n * s.oh * s.ow * s.o);
    if (kind == Kind::kBackwardWeights) std::memset(w, 0, sizeof(float) * s.kh * s.kw * s.c * s.o);
    if (kind == Kind::kBackwardData) std::memset(x, 0, sizeof(float) * s.n * s.h * s.w * s.c);
    return ffi::Error::Success();
  }
  std::string failure;
  TheExecutor().Run([&] {
    try {
      Execute(kind, s, x, w, y, b);
    } catch (const dnnl::error& error) {
      failure = std::string("oneDNN convolution failed: ") + error.what();
    }
  });
  if (!failure.empty()) return ffi::Error::Internal(failure);
  return ffi::Error::Success();
}

// Runs on the executor thread; throws dnnl::error.
void Execute(Kind kind, const Shape& s, float* x, float* w, float* y, float* b) {
  Entry& e = Lookup(kind, s);
  Descs d(s);
  dnnl::engine& engine = Engine();
  static dnnl::stream stream(engine);
  dnnl::memory src(d.src, engine, x), dst(d.dst, engine, y), user_w(d.weights_hwio, engine, w);
  dnnl::memory prim_w = e.reorder_weights
      ? dnnl::memory(e.weights, engine, ThreadBuffer(0, e.weights.get_size()))
      : user_w;
  dnnl::memory scratch(e.scratchpad, engine, ThreadBuffer(1, e.scratchpad.get_size()));
  if (e.reorder_weights && kind != Kind::kBackwardWeights) {
    e.weights_reorder.execute(stream, user_w, prim_w);
  }
  if (kind == Kind::kForward) {
    e.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w},
                                 {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
  } else if (kind == Kind::kForwardBiasRelu) {
    dnnl::memory bias({{s.o}, dt::f32, tag::x}, engine, b);
    e.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w},
                                 {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst},
                                 {DNNL_ARG_SCRATCHPAD, scratch}});
  } else if (kind == Kind::kBackwardData) {
    e.primitive.execute(stream, {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w},
                                 {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
  } else {
    e.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, prim_w},
                                 {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
    if (e.reorder_weights) e.weights_reorder.execute(stream, prim_w, user_w);
  }
  stream.wait();
}

Shape MakeShape(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                ffi::Span<const int64_t> y, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  return Shape{x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2], sh, sw, pt, pl};
}

ffi::Error CheckRanks(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                      ffi::Span<const int64_t> y) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) {
    return ffi::Error::InvalidArgument("oneDNN convolution: expected rank-4 NHWC/HWIO buffers");
  }
  if (w[2] != x[3] || w[3] != y[3] || x[0] != y[0]) {
    return ffi::Error::InvalidArgument("oneDNN convolution: inconsistent channel or batch sizes");
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t pt,
                   int64_t pl) {
  auto error = CheckRanks(x.dimensions(), w.dimensions(), y->dimensions());
  if (error.failure()) return error;
  return Run(Kind::kForward,
             MakeShape(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pl),
             x.typed_data(), w.typed_data(), y->typed_data());
}

ffi::Error ForwardBiasRelu(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                           ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> y, int64_t sh,
                           int64_t sw, int64_t pt, int64_t pl) {
  auto error = CheckRanks(x.dimensions(), w.dimensions(), y->dimensions());
  if (error.failure()) return error;
  if (b.dimensions().size() != 1 || b.dimensions()[0] != w.dimensions()[3]) {
    return ffi::Error::InvalidArgument("oneDNN convolution: bias must have shape [O]");
  }
  return Run(Kind::kForwardBiasRelu,
             MakeShape(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pl),
             x.typed_data(), w.typed_data(), y->typed_data(), b.typed_data());
}

ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                        ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t pt,
                        int64_t pl) {
  auto error = CheckRanks(dx->dimensions(), w.dimensions(), dy.dimensions());
  if (error.failure()) return error;
  return Run(Kind::kBackwardData,
             MakeShape(dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, pt, pl),
             dx->typed_data(), w.typed_data(), dy.typed_data());
}

ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                           ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw,
                           int64_t pt, int64_t pl) {
  auto error = CheckRanks(x.dimensions(), dw->dimensions(), dy.dimensions());
  if (error.failure()) return error;
  return Run(Kind::kBackwardWeights,
             MakeShape(x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, pt, pl),
             x.typed_data(), dw->typed_data(), dy.typed_data());
}

}  // namespace

#define RPSM_CONV_ATTRS                                                   \
  .Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("pad_top") \
      .Attr<int64_t>("pad_left")

// Forward and both gradients: two float32 operands, one result, the geometry attributes.
#define RPSM_TWO_OPERANDS                                                       \
  ffi::Ffi::Bind()                                                              \
      .Arg<ffi::Buffer<ffi::F32>>()                                             \
      .Arg<ffi::Buffer<ffi::F32>>()                                             \
      .Ret<ffi::Buffer<ffi::F32>>() RPSM_CONV_ATTRS

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpsmOnednnConvForward, Forward, RPSM_TWO_OPERANDS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpsmOnednnConvBiasReluForward, ForwardBiasRelu,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() RPSM_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpsmOnednnConvBackwardData, BackwardData, RPSM_TWO_OPERANDS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpsmOnednnConvBackwardWeights, BackwardWeights,
                              RPSM_TWO_OPERANDS);

// For rpsm_jax.cpu.onednn.implementation(): the oneDNN implementation chosen for a shape.
extern "C" int RpsmOnednnImplementation(int kind, const int64_t* dims, char* out, int size) {
  Shape s{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6],
          dims[7], dims[8], dims[9], dims[10], dims[11], dims[12]};
  try {
    std::string impl = Lookup(static_cast<Kind>(kind), s).impl;
    std::snprintf(out, size, "%s", impl.c_str());
    return 0;
  } catch (const dnnl::error& error) {
    std::snprintf(out, size, "%s", error.what());
    return 1;
  }
}

// For rpsm_jax.cpu.onednn.version(): the oneDNN the library runs (not the headers' version).
extern "C" void RpsmOnednnVersion(char* out, int size) {
  const dnnl_version_t* v = dnnl::version();
  std::snprintf(out, size, "%d.%d.%d", v->major, v->minor, v->patch);
}
