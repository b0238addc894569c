// What it costs to run the body in a second process on the same cores, with no transport:
// one site's split training where the body lives in a forked child and a1/a2/g2/g1 cross
// through shared memory (one copy each way, a byte on a pipe to hand over), against the
// same training in one process (`SiteTrainer` + `LocalBody`, the federation benchmark's
// centralized training). The child leaves its optimiser's step for the next a1, as the
// coordinator does with one site.
//
// This separates the two costs of one site over loopback: crossing the cut (codec, TLS,
// gRPC: absent here) and two processes taking turns on the cores (present here). Epochs of
// the two alternate, and which goes first alternates; the medians of the epochs' images/s
// are compared. With --codec the tensors cross as the Split stream carries them (encoded,
// sparse where they can be, serialized), which adds the codec's share and leaves gRPC, TLS
// and the coordinator's threads as the only difference from a one-site federation.
//
// Usage: bench_colocation [--epochs N] [--threads T] [--codec] [--out FILE]
#include <sys/mman.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "coordinator/coordinator.h"
#include "bench/median.h"
#include "datasets/phantom.h"
#include "proto/tensor_codec.h"
#include "splitfed/v1/federation.pb.h"
#include "process/allocator.h"
#include "process/openmp_wait.h"
#include "split/trainer.h"

namespace {
using namespace splitfed;
using bench::Median;

constexpr int64_t kImages = 128;  // one site's training images in the federation benchmark
constexpr int64_t kSize = 64;
constexpr size_t kSharedBytes = 64 << 20;  // larger than any a1/a2/g2/g1 at batch 8

enum class Request : int64_t { kForward, kBackward, kEvaluate, kStop };

// What crosses the pipe; the values themselves are in shared memory: raw float32, or with
// --codec a serialized SplitMessage of `bytes` bytes.
struct Header {
  Request request;
  int64_t dims;
  int64_t shape[8];
  int64_t bytes;
};

void WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w <= 0) throw std::runtime_error("pipe write failed");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

bool ReadAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Writes `t` into shared memory and sends its header; the reverse reads it into a new
// tensor, as decoding a message would.
void Send(int fd, float* shared, Request request, const torch::Tensor& t) {
  Header h{request, t.dim(), {}, 0};
  for (int64_t i = 0; i < t.dim(); ++i) h.shape[i] = t.size(i);
  const torch::Tensor c = t.contiguous();
  if (static_cast<size_t>(c.numel()) * sizeof(float) > kSharedBytes)
    throw std::runtime_error("tensor larger than the shared buffer");
  std::memcpy(shared, c.data_ptr<float>(), c.numel() * sizeof(float));
  WriteAll(fd, &h, sizeof h);
}

torch::Tensor Received(const Header& h, const float* shared) {
  std::vector<int64_t> shape(h.shape, h.shape + h.dims);
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  std::memcpy(t.data_ptr<float>(), shared, t.numel() * sizeof(float));
  return t;
}

// With --codec: `message`, encoded as the site and the coordinator encode it, serialized
// into shared memory.
void SendMessage(int fd, float* shared, Request request, const v1::SplitMessage& message) {
  Header h{request, 0, {}, static_cast<int64_t>(message.ByteSizeLong())};
  if (static_cast<size_t>(h.bytes) > kSharedBytes)
    throw std::runtime_error("message larger than the shared buffer");
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(shared));
  WriteAll(fd, &h, sizeof h);
}

v1::SplitMessage ReceivedMessage(const Header& h, const float* shared) {
  v1::SplitMessage m;
  if (!m.ParseFromArray(shared, static_cast<int>(h.bytes)))
    throw std::runtime_error("unparsable message");
  return m;
}

template <typename T>
T Checked(absl::StatusOr<T> v) {
  if (!v.ok()) throw std::runtime_error(std::string(v.status().message()));
  return *std::move(v);
}

void Check(const absl::Status& s) {
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
}

// What both ends require of what they receive (DecodeGradient adds the support itself).
DecodeLimits Float32Limits() {
  DecodeLimits limits;
  limits.expected_dtype = v1::DTYPE_FLOAT32;
  limits.reject_non_finite = true;
  return limits;
}

struct Channel {
  int to_child = -1, to_parent = -1;
  float* shared = nullptr;
  bool codec = false;
};

// The body's side, in the child: answers until told to stop.
void ServeBody(const Channel& c, int from_parent, int threads) {
  torch::set_num_threads(threads);
  torch::manual_seed(1);
  RunOptions o;
  SplitModel m = MakeSplitModel(o.model, o.split);
  LocalBody body(m.body, TrainerOptions{}.learning_rate);
  SplitStepCodec codec(CutsRectified(o.model, o.split).a2);
  Header h{};
  while (ReadAll(from_parent, &h, sizeof h) && h.request != Request::kStop) {
    if (c.codec) {
      // As the coordinator's Split handler: decode, compute, encode the answer.
      const v1::SplitMessage in = ReceivedMessage(h, c.shared);
      const bool training = h.request == Request::kForward;
      v1::SplitMessage out;
      if (h.request == Request::kBackward) {
        const torch::Tensor g2 = Checked(codec.DecodeGradient(in.tensor(), Float32Limits(), "g2"));
        Check(codec.EncodeGradient(*body.BackwardDeferringStep(g2), WireEncoding::kFp32,
                                   out.mutable_tensor()));
      } else {
        const torch::Tensor a1 =
            Checked(codec.DecodeActivation(in.tensor(), Float32Limits(), "a1", training));
        const torch::Tensor a2 = training ? *body.Forward(a1) : *body.Evaluate(a1);
        Check(codec.EncodeActivation(a2, WireEncoding::kFp32, training, out.mutable_tensor()));
      }
      SendMessage(c.to_parent, c.shared, h.request, out);
    } else {
      const torch::Tensor in = Received(h, c.shared);
      if (h.request == Request::kForward) {
        Send(c.to_parent, c.shared, h.request, *body.Forward(in));
      } else if (h.request == Request::kEvaluate) {
        Send(c.to_parent, c.shared, h.request, *body.Evaluate(in));
      } else {
        Send(c.to_parent, c.shared, h.request, *body.BackwardDeferringStep(in));
      }
    }
    // As the coordinator with one site: the body's step waits for the next Forward.
  }
}

// The site's view of the body in the child.
class ChildBody : public BodyLink {
 public:
  ChildBody(const Channel& c, int from_child, const RunOptions& o)
      : c_(c), from_child_(from_child), codec_(CutsRectified(o.model, o.split).a1) {}
  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& a1) override {
    return Activation(Request::kForward, a1);
  }
  absl::StatusOr<torch::Tensor> Backward(const torch::Tensor& g2) override {
    if (!c_.codec) return Ask(Request::kBackward, g2);
    // As the site's StreamBody: encode g2, decode g1 on a1's support.
    v1::SplitMessage out;
    Check(codec_.EncodeGradient(g2, WireEncoding::kFp32, out.mutable_tensor()));
    const v1::SplitMessage in = AskMessage(Request::kBackward, out);
    return codec_.DecodeGradient(in.tensor(), Float32Limits(), "g1");
  }
  absl::StatusOr<torch::Tensor> Evaluate(const torch::Tensor& a1) override {
    return Activation(Request::kEvaluate, a1);
  }

 private:
  absl::StatusOr<torch::Tensor> Activation(Request r, const torch::Tensor& a1) {
    if (!c_.codec) return Ask(r, a1);
    const bool training = r == Request::kForward;
    v1::SplitMessage out;
    Check(codec_.EncodeActivation(a1, WireEncoding::kFp32, training, out.mutable_tensor()));
    const v1::SplitMessage in = AskMessage(r, out);
    return codec_.DecodeActivation(in.tensor(), Float32Limits(), "a2", training);
  }
  torch::Tensor Ask(Request r, const torch::Tensor& t) {
    Send(c_.to_child, c_.shared, r, t);
    return Received(Answer(), c_.shared);
  }
  v1::SplitMessage AskMessage(Request r, const v1::SplitMessage& out) {
    SendMessage(c_.to_child, c_.shared, r, out);
    return ReceivedMessage(Answer(), c_.shared);
  }
  Header Answer() {
    Header h{};
    if (!ReadAll(from_child_, &h, sizeof h)) throw std::runtime_error("the body process died");
    return h;
  }
  Channel c_;
  int from_child_;
  SplitStepCodec codec_;
};

}  // namespace

int main(int argc, char** argv) {
  ShortenOpenMpSpin(argv);  // as `splitfed` runs
  int epochs = 8, threads = 2;
  bool codec = false;
  std::string out;
  CLI::App app{"One site's split training: body in a second process versus in this one"};
  app.add_option("--epochs", epochs, "Timed epochs of each")->check(CLI::Range(1, 1000));
  app.add_option("--threads", threads, "Torch threads of each process")->check(CLI::Range(1, 64));
  app.add_option("--out", out, "also write the results as JSON here");
  app.add_flag("--codec", codec,
               "Encode and decode a1/a2/g2/g1 as the site and the coordinator do (fp32, sparse "
               "layouts), serialized SplitMessages through the shared memory");
  CLI11_PARSE(app, argc, argv);
  KeepTrainingBuffersInHeap();

  // Fork before LibTorch starts any OpenMP threads: a child cannot use the parent's pool.
  int down[2], up[2];
  if (pipe(down) != 0 || pipe(up) != 0) return std::perror("pipe"), 1;
  void* shared = mmap(nullptr, kSharedBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
  if (shared == MAP_FAILED) return std::perror("mmap"), 1;
  Channel channel{down[1], up[1], static_cast<float*>(shared), codec};
  const pid_t child = fork();
  if (child < 0) return std::perror("fork"), 1;
  if (child == 0) {
    close(down[1]);
    close(up[0]);
    ServeBody(channel, down[0], threads);
    _exit(0);
  }
  close(down[0]);
  close(up[1]);

  torch::set_num_threads(threads);
  PhantomOptions p;
  p.count = kImages;
  p.height = p.width = kSize;
  const SegmentationSet set = *GeneratePhantoms(p);
  RunOptions o;
  torch::manual_seed(1);
  SplitModel together = MakeSplitModel(o.model, o.split);
  torch::manual_seed(1);
  SplitModel apart = MakeSplitModel(o.model, o.split);  // its body is the child's copy
  TrainerOptions t;
  SiteTrainer together_site(together.front, together.back, t);
  LocalBody together_body(together.body, t.learning_rate);
  SiteTrainer apart_site(apart.front, apart.back, t);
  ChildBody apart_body(channel, up[0], o);

  auto rate = [&](SiteTrainer& site, BodyLink& body, uint64_t seed) {
    const EpochStats s = *site.TrainEpoch(set, seed, body);
    return s.images / s.seconds;
  };
  rate(together_site, together_body, 1);  // warm-up: allocator, kernels, the child's pages
  rate(apart_site, apart_body, 1);
  std::vector<double> one, two;
  std::printf("%-6s %18s %18s\n", "epoch", "one process img/s", "two processes img/s");
  for (int e = 0; e < epochs; ++e) {
    const uint64_t seed = 2 + e;
    if (e % 2 == 0) {
      one.push_back(rate(together_site, together_body, seed));
      two.push_back(rate(apart_site, apart_body, seed));
    } else {
      two.push_back(rate(apart_site, apart_body, seed));
      one.push_back(rate(together_site, together_body, seed));
    }
    std::printf("%-6d %18.1f %18.1f\n", e + 1, one.back(), two.back());
    std::fflush(stdout);
  }
  Header stop{Request::kStop, 0, {}, 0};
  WriteAll(down[1], &stop, sizeof stop);
  int status = 0;
  waitpid(child, &status, 0);

  const double a = Median(one), b = Median(two);
  std::printf("median: one process %.1f img/s, two processes %.1f img/s, ratio %.3f\n", a, b,
              b / a);
  nlohmann::json j = {{"threads", threads},     {"epochs", epochs}, {"codec", codec},
                      {"images", kImages},      {"image_size", kSize},
                      {"one_process", one},     {"two_processes", two},
                      {"median_ratio", b / a}};
  if (!out.empty()) {
    std::ofstream(out) << j.dump(2) << "\n";
    std::printf("wrote %s\n", out.c_str());
  }
  return 0;
}
