// The native lane: how a front end's thread hands an inference request straight to a
// model's batch queue, and how the answer comes back, with no Python object per request.
//
// A `Lane` is published by the models service for a model version it can serve this way
// (a Python-backend model, not decoupled, behind the dynamic or default batcher, no
// response cache, no rate limiter, no sequence or ensemble scheduling). It travels to the
// front ends as a PyCapsule named kCapsuleName holding a `std::shared_ptr<Lane>*`, so a
// front end keeps the lane alive for as long as it may call it.
//
// A front end thread frames and parses a request, and when everything in it is plain
// (no parameters it does not know, no shared memory, no classification, tensors given in
// binary) it fills a `Request` and calls `admit()` with the lane's schema. `admit` accepts
// only requests that are certainly valid; everything else is declined and takes the
// Python path, which words the error exactly as Triton does. So there is one set of rules
// (the Python validator's), and the native check is a strict subset of what it accepts.
// `Lane::submit` queues the request (or declines: the lane is closed, the queue is full);
// `Lane::flush` after a burst lets the queue decide once for everything queued.
//
// The answer comes as one call of `Request::complete`, on the Python loop's thread with
// the GIL held (the models service completes a whole batch in one native call). It must
// not block and must not call into Python; the tensors it is given are valid only during
// the call (the front end copies them into its reply).
//
// Shared by ext/_batcher.cpp (which implements Lane on its BatchQueue) and the front ends
// (_native_http.cpp, _native_grpc.cpp, which implement Request). Every module compiles the
// same header with the same compiler; the virtual calls cross the modules' boundaries.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace naiad_lane {

constexpr const char* kCapsuleName = "naiad.lane";

// ErrorCode values of naiad.kernel.inference.errors (Triton's TRITONSERVER_Error codes).
enum ErrorCode : int {
  kUnknown = 0,
  kInternal = 1,
  kNotFound = 2,
  kInvalidArg = 3,
  kUnavailable = 4,
  kUnsupported = 5,
  kAlreadyExists = 6,
  kCancelled = 7,
  kOk = -1,
};

struct InputSpec {
  std::string name;
  std::string datatype;        // Triton's wire name: "FP32", "INT64", ...
  std::vector<int64_t> dims;   // the config's dims, without the batch dimension; -1: any
  int64_t elem_size = 0;       // bytes per element (never 0: BYTES inputs make no lane)
  bool optional = false;
};

struct Schema {
  std::string model;           // the name responses carry
  std::string version;         // the version string responses carry ("1")
  int64_t max_batch_size = 0;  // 0: no batch dimension
  std::vector<InputSpec> inputs;
  std::vector<std::string> outputs;  // the config's output names

  int input_index(std::string_view name) const {
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].name == name) return int(i);
    return -1;
  }
  int output_index(std::string_view name) const {
    for (size_t i = 0; i < outputs.size(); ++i)
      if (outputs[i] == name) return int(i);
    return -1;
  }
};

// One input as the client sent it: a view over bytes the Request owns.
struct Input {
  int index = -1;              // position in Schema::inputs
  std::vector<int64_t> shape;  // the full shape, batch dimension included
  const char* data = nullptr;
  size_t size = 0;
};

// One output of an answer: valid only during Request::complete.
struct Output {
  std::string_view name;
  std::string_view datatype;
  std::vector<int64_t> shape;
  const char* data = nullptr;
  size_t size = 0;
};

// A response parameter the model set (rare): one of four kinds, as KServe allows.
struct Param {
  enum Kind : int { kBool, kInt, kDouble, kString } kind = kInt;
  std::string key;
  bool b = false;
  int64_t i = 0;
  double d = 0.0;
  std::string s;
};

struct Result {
  int error = kOk;             // kOk, or an ErrorCode
  std::string message;         // the error's text, worded by naiad / the model
  std::string_view model;      // Schema::model
  std::string_view version;    // Schema::version
  std::vector<Output> outputs; // in the order the model returned them
  std::vector<Param> params;
};

class Request {
 public:
  virtual ~Request() = default;
  // Called exactly once: the answer (see the header comment for where and how).
  virtual void complete(const Result& result) = 0;
  // Any thread: whether the client cancelled or went away (the model's is_cancelled(),
  // queued work may be dropped). A front end that cannot tell leaves it false.
  virtual bool cancelled() const { return false; }

  std::string id;                 // the request's "id" ("" when it has none)
  std::vector<Input> inputs;      // what the client sent, in its order
  std::vector<int> outputs;       // requested outputs (Schema::outputs indexes); empty: all
  int64_t batch_size = 1;         // set by admit()
  int64_t shape_key = 0;          // set by admit(): requests batch only with equal keys
  int64_t arrival_ns = 0;         // CLOCK_MONOTONIC, when the front end framed it
};

class Lane {
 public:
  virtual ~Lane() = default;
  virtual const Schema& schema() const = 0;
  // Any thread. True: the lane owns the request now (`req` is emptied) and will complete
  // it. False: declined (closed, full, unloading); `req` is untouched and the caller
  // sends the request down the Python path instead.
  virtual bool submit(std::unique_ptr<Request>& req) = 0;
  // Any thread: after a burst of submits, let the queue decide once.
  virtual void flush() = 0;
};

// Checks `req` against `schema` and sets its batch size and shape key. False (decline)
// unless every input is known and given once, its shape matches the config (the batch
// dimension within max_batch_size, -1 dims free), its bytes are exactly shape × element
// size, every required input is present, and the batch dimension agrees across inputs.
inline bool admit(const Schema& schema, Request& req) {
  const size_t n = schema.inputs.size();
  if (req.inputs.empty() || req.inputs.size() > n) return false;
  uint64_t seen = 0;
  if (n > 64) return false;
  int64_t batch = 1;
  uint64_t key = 1469598103934665603ull;  // FNV-1a over the non-batch shapes, by input
  const bool batched = schema.max_batch_size > 0;
  for (size_t k = 0; k < req.inputs.size(); ++k) {
    Input& in = req.inputs[k];
    if (in.index < 0 || size_t(in.index) >= n) return false;
    if (seen & (1ull << in.index)) return false;
    seen |= 1ull << in.index;
    const InputSpec& spec = schema.inputs[in.index];
    const size_t skip = batched ? 1 : 0;
    if (in.shape.size() != spec.dims.size() + skip) return false;
    if (batched) {
      int64_t b = in.shape[0];
      if (b < 1 || b > schema.max_batch_size) return false;
      if (k == 0) batch = b;
      else if (b != batch) return false;
    }
    uint64_t count = 1;
    for (size_t d = 0; d < in.shape.size(); ++d) {
      int64_t v = in.shape[d];
      if (v < 0) return false;
      if (d >= skip) {
        int64_t want = spec.dims[d - skip];
        if (want != -1 && want != v) return false;
      }
      if (v != 0 && count > (uint64_t(1) << 62) / uint64_t(v)) return false;
      count *= uint64_t(v);
    }
    if (count * uint64_t(spec.elem_size) != in.size) return false;
    key ^= uint64_t(in.index) + 0x9e37;
    key *= 1099511628211ull;
    for (size_t d = skip; d < in.shape.size(); ++d) {
      key ^= uint64_t(in.shape[d]);
      key *= 1099511628211ull;
    }
  }
  for (size_t i = 0; i < n; ++i)
    if (!schema.inputs[i].optional && !(seen & (1ull << i))) return false;
  for (int o : req.outputs)
    if (o < 0 || size_t(o) >= schema.outputs.size()) return false;
  req.batch_size = batched ? batch : 1;
  req.shape_key = int64_t(key >> 2);  // non-negative
  return true;
}

}  // namespace naiad_lane
