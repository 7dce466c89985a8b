// naiad.ext._native_grpc: the gRPC data plane on grpc++'s asynchronous generic server.
//
// One native thread drives the completion queue: it accepts calls, reads their messages,
// and writes the replies. Every call reaches Python through one hand-off queue
// (`frontend/handoff.h`, an eventfd the event loop watches), so Python wakes once for as
// many calls as have arrived. A ModelInfer request whose shape the fast reader knows
// (no parameters, raw_input_contents only) arrives already parsed, its tensors as
// buffers over the received message; any other call arrives as its serialized bytes for
// the Python servicer. Replies go back the same way: Python queues an action and the
// native thread carries it out (one grpc alarm wakes it per burst of actions).
//
// Native lanes (frontend/lane.h): a parsed ModelInfer call for a model version that has a
// lane, and that the lane's schema certainly accepts, never reaches Python. It is handed
// to the model's batch queue from this thread (the queue decides once per completion-queue
// drain), and its answer is encoded where the model completes it and written from here.
// Whatever the lane cannot take (an unknown name, another datatype, a shape the config
// refuses, a full queue) goes to Python as before, which words the error as Triton does.
//
// No Python object is touched without the GIL; the native thread never takes it.

#include <absl/synchronization/mutex.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <grpcpp/alarm.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/byte_buffer.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "frontend/handoff.h"
#include "frontend/lane.h"
#include "frontend/lane_registry.h"
#include "frontend/wire.h"

namespace py = pybind11;
using naiad_frontend::Handoff;

namespace {

constexpr const char* kInferMethod = "/inference.GRPCInferenceService/ModelInfer";
constexpr const char* kStreamMethod = "/inference.GRPCInferenceService/ModelStreamInfer";

enum Kind : int { UNARY = 0, INFER = 1, STREAM_START = 2, STREAM_MSG = 3, STREAM_END = 4, CANCELLED = 5 };
enum Op : int { OP_NEW, OP_READ, OP_WRITE, OP_FINISH, OP_DONE };
enum ActionType : int { A_REPLY, A_FAIL, A_WRITE, A_FINISH };

class Server;
struct Call;

struct Tag {
  Call* call;
  Op op;
};

struct InTensor {
  std::string name, datatype;
  std::vector<int64_t> shape;
  size_t off = 0, len = 0;
};

struct Parsed {
  std::string model, version, id;
  std::vector<InTensor> inputs;
  std::vector<std::string> outputs;
  std::vector<std::pair<size_t, size_t>> raws;
};

// ------------------------------------------------------------------ fast reader --

bool parse_input(const uint8_t* b, size_t n, InTensor& t) {
  naiad_frontend::Reader r(b, n);
  while (!r.done()) {
    uint64_t key = r.varint();
    if (!r.ok) return false;
    uint32_t field = uint32_t(key >> 3), wire = uint32_t(key & 7);
    if (field == 3 && wire == 0) {  // unpacked shape element
      t.shape.push_back(int64_t(r.varint()));
      if (!r.ok) return false;
      continue;
    }
    if (wire != 2) return false;
    const uint8_t* d;
    size_t len;
    if (!r.bytes(&d, &len)) return false;
    if (field == 1) {
      t.name.assign(reinterpret_cast<const char*>(d), len);
    } else if (field == 2) {
      t.datatype.assign(reinterpret_cast<const char*>(d), len);
    } else if (field == 3) {  // packed shape
      naiad_frontend::Reader s(d, len);
      while (!s.done()) {
        t.shape.push_back(int64_t(s.varint()));
        if (!s.ok) return false;
      }
    } else {
      return false;  // parameters (4), contents (5), unknown
    }
  }
  return true;
}

bool parse_output(const uint8_t* b, size_t n, std::string& name) {
  naiad_frontend::Reader r(b, n);
  while (!r.done()) {
    uint64_t key = r.varint();
    if (!r.ok || (key & 7) != 2) return false;
    const uint8_t* d;
    size_t len;
    if (!r.bytes(&d, &len)) return false;
    if ((key >> 3) == 1) {
      name.assign(reinterpret_cast<const char*>(d), len);
    } else {
      return false;  // parameters (2), unknown
    }
  }
  return true;
}

// A `parameters` map entry the fast path may take: only `triton_enable_empty_final_response`
// as a bool (perf_analyzer sends it on every call; it changes nothing for a unary call, and
// services/grpc/convert.py reads it as an option, not a request parameter).
bool parse_known_parameter(const uint8_t* b, size_t n) {
  static constexpr std::string_view kEmptyFinal = "triton_enable_empty_final_response";
  naiad_frontend::Reader r(b, n);
  bool key_ok = false, value_ok = false;
  while (!r.done()) {
    uint64_t key = r.varint();
    if (!r.ok || (key & 7) != 2) return false;
    const uint8_t* d;
    size_t len;
    if (!r.bytes(&d, &len)) return false;
    if ((key >> 3) == 1) {
      key_ok = std::string_view(reinterpret_cast<const char*>(d), len) == kEmptyFinal;
    } else if ((key >> 3) == 2) {  // InferParameter: bool_param (1) only
      naiad_frontend::Reader v(d, len);
      value_ok = false;
      while (!v.done()) {
        uint64_t k = v.varint();
        if (!v.ok || k != ((1 << 3) | 0)) return false;
        v.varint();
        if (!v.ok) return false;
        value_ok = true;
      }
    } else {
      return false;
    }
  }
  return key_ok && value_ok;
}

// The fields of a ModelInferRequest the fast path serves; false sends it to Python.
bool parse_infer(const uint8_t* b, size_t n, Parsed& out) {
  naiad_frontend::Reader r(b, n);
  while (!r.done()) {
    uint64_t key = r.varint();
    if (!r.ok || (key & 7) != 2) return false;
    const uint8_t* d;
    size_t len;
    if (!r.bytes(&d, &len)) return false;
    switch (key >> 3) {
      case 1: out.model.assign(reinterpret_cast<const char*>(d), len); break;
      case 2: out.version.assign(reinterpret_cast<const char*>(d), len); break;
      case 3: out.id.assign(reinterpret_cast<const char*>(d), len); break;
      case 5:
        out.inputs.emplace_back();
        if (!parse_input(d, len, out.inputs.back())) return false;
        break;
      case 6:
        out.outputs.emplace_back();
        if (!parse_output(d, len, out.outputs.back())) return false;
        break;
      case 4:
        if (!parse_known_parameter(d, len)) return false;  // any other parameter: Python reads it
        break;
      case 7: out.raws.emplace_back(size_t(d - b), len); break;
      default: return false;  // unknown fields
    }
  }
  if (out.raws.size() != out.inputs.size()) return false;
  for (size_t i = 0; i < out.inputs.size(); ++i) {
    out.inputs[i].off = out.raws[i].first;
    out.inputs[i].len = out.raws[i].second;
  }
  return true;
}

// ------------------------------------------------------------------ calls --

struct Action {
  std::shared_ptr<Call> call;
  ActionType type;
  grpc::ByteBuffer buf;
  grpc::Status status;
};

struct Call {
  Server* server;
  uint64_t id;
  grpc::GenericServerContext ctx;
  grpc::GenericServerAsyncReaderWriter rw{&ctx};
  grpc::ByteBuffer in;
  std::string method;
  bool streaming = false;
  int pending = 0;  // operations started and not completed (native thread only)
  bool finished = false;  // Finish started (or the call is dead)
  bool writing = false;
  bool finish_queued = false;
  bool lane = false;  // handed to a lane: Python never sees it
  std::atomic<bool> cancelled{false};  // the client cancelled or went away (read by lanes)
  grpc::Status finish_status;
  std::deque<grpc::ByteBuffer> writes;
  std::shared_ptr<Call> self;  // the native side's reference, dropped once the call is over
  Tag t_new{this, OP_NEW}, t_read{this, OP_READ}, t_write{this, OP_WRITE}, t_finish{this, OP_FINISH}, t_done{this, OP_DONE};

  Call(Server* s, uint64_t i) : server(s), id(i) {}

  void read() {
    ++pending;
    rw.Read(&in, &t_read);
  }
  void finish(const grpc::Status& status) {
    finished = true;
    ++pending;
    rw.Finish(status, &t_finish);
  }
  void write_next() {
    if (writes.empty()) {
      writing = false;
      if (finish_queued) finish(finish_status);
      return;
    }
    writing = true;
    ++pending;
    rw.Write(writes.front(), &t_write);
    writes.pop_front();
  }
  void maybe_release() {
    if (pending == 0 && finished) self.reset();
  }
  void on(Op op, bool ok);
  void apply(Action& a);
};

// What Python receives: a call event, with the message bytes where there is one.
struct Event {
  std::shared_ptr<Call> call;
  int kind;
  grpc::Slice data;  // holds the received bytes alive; tensors are views over them
  std::unique_ptr<Parsed> parsed;
};

// ------------------------------------------------------------------ lanes --

// What the lane requests share with the Server that submitted them. A model may answer
// after the front end stopped (or was destroyed): `server` is cleared at stop, and an
// answer that comes later has nowhere to go.
struct LaneShared {
  std::mutex mu;
  Server* server = nullptr;
  std::map<int, int> codes;  // naiad ErrorCode -> grpc status code (set from Python)
  naiad_frontend::LaneCounters counters;
};

// A ModelInfer call on a lane: owns the received message (the inputs are views over it)
// and the call its answer goes to.
class LaneCall final : public naiad_lane::Request {
 public:
  LaneCall(std::shared_ptr<Call> c, const grpc::Slice& d, std::shared_ptr<LaneShared> s)
      : call(std::move(c)), data(d), shared(std::move(s)) {}
  ~LaneCall() override { uncount(); }
  void complete(const naiad_lane::Result& result) override;
  bool cancelled() const override { return call->cancelled.load(std::memory_order_relaxed); }

  void count() {
    counted = true;
    shared->counters.inflight.fetch_add(1, std::memory_order_relaxed);
  }
  void uncount() {
    if (counted) {
      counted = false;
      shared->counters.inflight.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  std::shared_ptr<Call> call;
  grpc::Slice data;
  std::shared_ptr<LaneShared> shared;
  bool counted = false;
};

int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ------------------------------------------------------------------ server --

class Server {
 public:
  Server(const std::string& address, const std::map<std::string, int>& int_args, int max_message_bytes,
         int compression_level, const std::string& key, const std::string& cert, const std::string& root,
         bool mutual, int accept_depth) {
    grpc::ServerBuilder builder;
    std::shared_ptr<grpc::ServerCredentials> creds;
    if (!key.empty()) {
      grpc::SslServerCredentialsOptions opts(mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                                    : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      opts.pem_root_certs = root;
      opts.pem_key_cert_pairs.push_back({key, cert});
      creds = grpc::SslServerCredentials(opts);
    } else {
      creds = grpc::InsecureServerCredentials();
    }
    builder.AddListeningPort(address, creds, &port_);
    builder.RegisterAsyncGenericService(&service_);
    builder.SetMaxReceiveMessageSize(max_message_bytes);
    builder.SetMaxSendMessageSize(max_message_bytes);
    for (auto& kv : int_args) builder.AddChannelArgument(kv.first, kv.second);
    if (compression_level > 0) builder.SetDefaultCompressionLevel(grpc_compression_level(compression_level));
    cq_ = builder.AddCompletionQueue();
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      if (server_) server_->Shutdown();
      if (cq_) {
        cq_->Shutdown();
        void* tag;
        bool ok;
        while (cq_->Next(&tag, &ok)) {
        }
      }
      throw std::runtime_error("gRPC service cannot listen on " + address);
    }
    lane_shared_->server = this;
    for (int i = 0; i < accept_depth; ++i) accept();
    thread_ = std::thread([this] { run(); });
  }

  ~Server() { stop(0.0); }

  int port() const { return port_; }
  int fd() const { return events_.fd(); }

  std::vector<std::shared_ptr<Event>> take() { return events_.take(); }

  void push(std::shared_ptr<Event> e) { events_.push(std::move(e)); }

  // Actions are queued quietly; Python calls flush() once per event-loop iteration, which
  // wakes the completion-queue thread once for all of them.
  void post(Action a) {
    std::lock_guard<std::mutex> g(actions_mu_);
    if (stopping_) return;
    actions_.push_back(std::move(a));
  }

  void flush() {
    std::lock_guard<std::mutex> g(actions_mu_);
    if (stopping_ || actions_.empty()) return;
    wake_locked();
  }

  // A lane's answer (any thread): queued and the native thread woken, once per burst.
  void post_now(Action a) {
    std::lock_guard<std::mutex> g(actions_mu_);
    if (stopping_) return;
    actions_.push_back(std::move(a));
    wake_locked();
  }

  // ---------------------------------------------------------------- the lane registry --
  // Written by Python, read by the native thread for every parsed ModelInfer call.

  naiad_frontend::LaneRegistry& lanes() { return lanes_; }
  void set_error_codes(const std::map<int, int>& codes) {
    std::lock_guard<std::mutex> g(lane_shared_->mu);
    lane_shared_->codes = codes;
  }
  int64_t lane_served() const { return lane_shared_->counters.served.load(std::memory_order_relaxed); }
  int64_t lane_inflight() const { return lane_shared_->counters.inflight.load(std::memory_order_relaxed); }

  // The native thread: hand a parsed ModelInfer call to its model's lane. False (nothing
  // done) when lanes are off, the model version has none, or the request is not certainly
  // valid for it: the call then goes to Python.
  bool try_lane(const std::shared_ptr<Call>& call, const grpc::Slice& data, const Parsed& p) {
    naiad_frontend::LanePtr lane = lanes_.find(p.model, p.version);
    if (!lane) return false;
    const naiad_lane::Schema& s = lane->schema();
    auto req = std::make_unique<LaneCall>(call, data, lane_shared_);
    req->id = p.id;
    req->inputs.reserve(p.inputs.size());
    const char* base = reinterpret_cast<const char*>(data.begin());
    for (const InTensor& t : p.inputs) {
      int idx = s.input_index(t.name);
      if (idx < 0 || s.inputs[idx].datatype != t.datatype) return false;
      naiad_lane::Input in;
      in.index = idx;
      in.shape = t.shape;
      in.data = base + t.off;
      in.size = t.len;
      req->inputs.push_back(std::move(in));
    }
    for (const std::string& name : p.outputs) {
      int idx = s.output_index(name);
      if (idx < 0) return false;
      for (int seen : req->outputs)
        if (seen == idx) return false;  // asked twice: Python's rules decide
      req->outputs.push_back(idx);
    }
    if (!naiad_lane::admit(s, *req)) return false;
    req->arrival_ns = mono_ns();
    LaneCall* lc = req.get();
    lc->count();  // before submit: the model may answer before submit returns
    call->lane = true;
    std::unique_ptr<naiad_lane::Request> handed = std::move(req);
    if (!lane->submit(handed)) {  // declined: `handed` still holds it
      call->lane = false;
      lc->uncount();
      return false;
    }
    lane_shared_->counters.served.fetch_add(1, std::memory_order_relaxed);
    touched_.touch(lane);
    to_flush_ = true;
    return true;
  }

  // New calls are refused at once (the client sees UNAVAILABLE); the calls already
  // started may still be answered for `grace_secs` (replies posted meanwhile are sent),
  // then what is left is cancelled.
  void stop(double grace_secs) {
    {
      std::lock_guard<std::mutex> g(actions_mu_);
      if (shutting_down_) return;
      shutting_down_ = true;
    }
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(int64_t(grace_secs * 1000), GPR_TIMESPAN));
    lanes_.set_enabled(false);
    server_->Shutdown(deadline);
    {
      std::lock_guard<std::mutex> g(lane_shared_->mu);
      lane_shared_->server = nullptr;  // answers that come later have nowhere to go
    }
    {
      std::lock_guard<std::mutex> g(actions_mu_);
      stopping_ = true;  // no more replies: the completion queue goes next
    }
    cq_->Shutdown();
    if (thread_.joinable()) thread_.join();
    actions_.clear();
    lanes_.clear();
  }

  void accept() {
    auto call = std::make_shared<Call>(this, ++next_id_);
    call->self = call;
    ++call->pending;
    // Delivered once a started call is over (never for one that did not start).
    call->ctx.AsyncNotifyWhenDone(&call->t_done);
    service_.RequestCall(&call->ctx, &call->rw, cq_.get(), cq_.get(), &call->t_new);
  }

  bool stopping() {
    std::lock_guard<std::mutex> g(actions_mu_);
    return shutting_down_;
  }

 private:
  void wake_locked() {
    if (!wake_pending_) {
      wake_pending_ = true;
      alarm_.Set(cq_.get(), gpr_time_0(GPR_CLOCK_MONOTONIC), &wake_tag_);
    }
  }


  void run() {
    void* tag;
    bool ok;
    for (;;) {
      // Block while no lane waits for a flush; else poll, and flush once the queue is drained.
      gpr_timespec until = to_flush_ ? gpr_time_0(GPR_CLOCK_MONOTONIC) : gpr_inf_future(GPR_CLOCK_MONOTONIC);
      grpc::CompletionQueue::NextStatus st = cq_->AsyncNext(&tag, &ok, until);
      if (st == grpc::CompletionQueue::TIMEOUT) {  // drained: the lanes submitted to decide now
        touched_.flush();
        to_flush_ = false;
        continue;
      }
      if (st == grpc::CompletionQueue::SHUTDOWN) break;
      if (tag == &wake_tag_) {
        std::vector<Action> todo;
        {
          std::lock_guard<std::mutex> g(actions_mu_);
          wake_pending_ = false;
          todo.swap(actions_);
        }
        for (auto& a : todo) a.call->apply(a);
        continue;
      }
      Tag* t = static_cast<Tag*>(tag);
      t->call->on(t->op, ok);
    }
    touched_.flush();
  }

  int port_ = 0;
  grpc::AsyncGenericService service_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::unique_ptr<grpc::Server> server_;
  std::thread thread_;
  Handoff<std::shared_ptr<Event>> events_;
  std::mutex actions_mu_;
  std::vector<Action> actions_;
  bool wake_pending_ = false;
  bool shutting_down_ = false;  // stop() began: no new calls are asked for
  bool stopping_ = false;  // the completion queue is shutting down: nothing more is posted
  grpc::Alarm alarm_;
  int wake_tag_ = 0;
  uint64_t next_id_ = 0;
  std::shared_ptr<LaneShared> lane_shared_ = std::make_shared<LaneShared>();
  naiad_frontend::LaneRegistry lanes_;
  naiad_frontend::LaneFlushList touched_;  // (the native thread only)
  bool to_flush_ = false;                  // touched_ holds lanes (the native thread only)
};

grpc::Slice contiguous(const grpc::ByteBuffer& buf) {
  grpc::Slice s;
  if (!buf.TrySingleSlice(&s).ok()) (void)buf.DumpToSingleSlice(&s);
  return s;
}

void Call::on(Op op, bool ok) {
  std::shared_ptr<Call> hold = self;  // keep alive through this method
  --pending;
  switch (op) {
    case OP_NEW:
      if (!ok) {  // the server is shutting down
        finished = true;
        break;
      }
      ++pending;  // OP_DONE will come: the call started
      if (!server->stopping()) server->accept();
      method = ctx.method();
      streaming = method == kStreamMethod;
      if (streaming) {
        auto e = std::make_shared<Event>();
        e->call = hold;
        e->kind = STREAM_START;
        server->push(std::move(e));
      }
      read();
      break;
    case OP_READ: {
      if (!ok) {
        if (streaming) {
          auto e = std::make_shared<Event>();
          e->call = hold;
          e->kind = STREAM_END;
          server->push(std::move(e));
        } else if (!finished) {
          finish(grpc::Status(grpc::StatusCode::INTERNAL, "the request message was not received"));
        }
        break;
      }
      auto e = std::make_shared<Event>();
      e->call = hold;
      e->data = contiguous(in);
      in.Clear();
      if (streaming) {
        e->kind = STREAM_MSG;
        server->push(std::move(e));
        read();
        break;
      }
      e->kind = UNARY;
      if (method == kInferMethod) {
        auto parsed = std::make_unique<Parsed>();
        if (parse_infer(e->data.begin(), e->data.size(), *parsed)) {
          if (server->try_lane(hold, e->data, *parsed)) break;  // the lane answers it
          e->kind = INFER;
          e->parsed = std::move(parsed);
        }
      }
      server->push(std::move(e));
      break;
    }
    case OP_WRITE:
      if (!ok) {  // the client is gone: nothing more will be written
        writes.clear();
        writing = false;
        if (!finished) finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
        break;
      }
      write_next();
      break;
    case OP_FINISH:
      break;
    case OP_DONE:
      if (ctx.IsCancelled()) {  // the client cancelled or went away: Python cancels the work
        cancelled.store(true, std::memory_order_relaxed);
        if (!lane) {  // (a lane's request runs on; its answer finds the call finished)
          auto e = std::make_shared<Event>();
          e->call = hold;
          e->kind = CANCELLED;
          server->push(std::move(e));
        }
        if (!finished) {
          finished = true;  // nothing more can be sent
          writes.clear();
        }
      }
      break;
  }
  maybe_release();
}

void Call::apply(Action& a) {
  std::shared_ptr<Call> hold = self;
  if (!hold || finished) return;  // answered already, or dead
  switch (a.type) {
    case A_REPLY:
      finished = true;
      ++pending;
      rw.WriteAndFinish(a.buf, grpc::WriteOptions(), grpc::Status::OK, &t_finish);
      break;
    case A_FAIL:
      finish(a.status);
      break;
    case A_WRITE:
      writes.push_back(std::move(a.buf));
      if (!writing) write_next();
      break;
    case A_FINISH:
      if (writing || !writes.empty()) {
        finish_queued = true;
        finish_status = a.status;
      } else {
        finish(a.status);
      }
      break;
  }
  maybe_release();
}

// ------------------------------------------------------------------ Python surface --

grpc::ByteBuffer buffer_of(py::buffer data) {
  py::buffer_info info = data.request();
  size_t n = size_t(info.size * info.itemsize);
  grpc::Slice s(n);
  if (n) std::memcpy(const_cast<uint8_t*>(s.begin()), info.ptr, n);
  return grpc::ByteBuffer(&s, 1);
}

void post(Event& e, ActionType type, grpc::ByteBuffer buf, grpc::Status status) {
  Action a{e.call, type, std::move(buf), std::move(status)};
  e.call->server->post(std::move(a));
}

py::tuple fields(py::object self_obj) {
  Event& e = self_obj.cast<Event&>();
  if (!e.parsed) throw std::runtime_error("not a parsed ModelInfer request");
  Parsed& p = *e.parsed;
  py::memoryview whole(self_obj);
  py::list inputs;
  for (auto& t : p.inputs) {
    py::tuple shape(t.shape.size());
    for (size_t i = 0; i < t.shape.size(); ++i) shape[i] = py::int_(t.shape[i]);
    py::object view = whole[py::slice(py::int_(t.off), py::int_(t.off + t.len), py::none())];
    inputs.append(py::make_tuple(py::str(t.name), py::str(t.datatype), shape, view));
  }
  py::object outputs = py::none();
  if (!p.outputs.empty()) {
    py::list names;
    for (auto& o : p.outputs) names.append(py::str(o));
    outputs = names;
  }
  return py::make_tuple(py::str(p.model), py::str(p.version), py::str(p.id), inputs, outputs);
}

void put_param(std::string& head, const naiad_lane::Param& p) {
  using namespace naiad_frontend;
  std::string value, entry;
  switch (p.kind) {  // InferParameter's oneof: bool 1, int64 2, string 3, double 4
    case naiad_lane::Param::kBool:
      put_tag(value, 1, 0);
      put_varint(value, p.b ? 1 : 0);
      break;
    case naiad_lane::Param::kInt:
      put_tag(value, 2, 0);
      put_varint(value, uint64_t(p.i));
      break;
    case naiad_lane::Param::kString:
      put_bytes(value, 3, p.s.data(), p.s.size());
      break;
    case naiad_lane::Param::kDouble: {
      uint64_t bits;
      std::memcpy(&bits, &p.d, sizeof bits);
      put_fixed64(value, 4, bits);
      break;
    }
  }
  put_bytes(entry, 1, p.key.data(), p.key.size());  // a map entry: key 1, value 2
  put_bytes(entry, 2, value.data(), value.size());
  put_bytes(head, 4, entry.data(), entry.size());
}

// A ModelInferResponse from its parts: the head fields (parameters, outputs' metadata),
// then raw_output_contents, as the protobuf classes write it (field order).
grpc::ByteBuffer encode_infer(std::string_view model, std::string_view version, std::string_view id,
                              const std::vector<naiad_lane::Param>& params,
                              const std::vector<naiad_lane::Output>& outputs) {
  using namespace naiad_frontend;
  std::string head;
  put_string_if(head, 1, model);
  put_string_if(head, 2, version);
  put_string_if(head, 3, id);
  for (const auto& p : params) put_param(head, p);
  std::string tensor, shape;
  for (const auto& o : outputs) {
    tensor.clear();
    shape.clear();
    put_string_if(tensor, 1, o.name);
    put_string_if(tensor, 2, o.datatype);
    for (int64_t d : o.shape) put_varint(shape, uint64_t(d));
    if (!shape.empty()) put_bytes(tensor, 3, shape.data(), shape.size());
    put_bytes(head, 5, tensor.data(), tensor.size());
  }
  size_t total = head.size();
  for (const auto& o : outputs) total += 1 + varint_size(o.size) + o.size;
  grpc::Slice s(total);
  uint8_t* w = const_cast<uint8_t*>(s.begin());
  std::memcpy(w, head.data(), head.size());
  w += head.size();
  std::string hdr;
  for (const auto& o : outputs) {
    hdr.clear();
    put_tag(hdr, 6, 2);
    put_varint(hdr, o.size);
    std::memcpy(w, hdr.data(), hdr.size());
    w += hdr.size();
    if (o.size) std::memcpy(w, o.data, o.size);
    w += o.size;
  }
  return grpc::ByteBuffer(&s, 1);
}

// encode_infer for Python's answers: outputs as [(name, datatype, shape, buffer)].
grpc::ByteBuffer encode_reply(const std::string& model, const std::string& version, const std::string& id,
                              py::list outputs) {
  const size_t n = outputs.size();
  std::vector<std::string> keep;  // the names and datatypes the views point into
  keep.reserve(2 * n);
  std::vector<py::buffer_info> raws;
  raws.reserve(n);
  std::vector<naiad_lane::Output> outs(n);
  for (size_t k = 0; k < n; ++k) {
    py::tuple t = outputs[k].cast<py::tuple>();
    keep.push_back(t[0].cast<std::string>());
    keep.push_back(t[1].cast<std::string>());
    naiad_lane::Output& o = outs[k];
    o.name = keep[2 * k];
    o.datatype = keep[2 * k + 1];
    for (auto d : t[2]) o.shape.push_back(d.cast<int64_t>());
    raws.push_back(t[3].cast<py::buffer>().request());
    o.data = static_cast<const char*>(raws.back().ptr);
    o.size = size_t(raws.back().size * raws.back().itemsize);
  }
  return encode_infer(model, version, id, {}, outs);
}

// On the thread the model completes it (the GIL held or not; no Python touched): the
// reply, or the error with the status Python's path gives it, for the native thread.
void LaneCall::complete(const naiad_lane::Result& result) {
  Action a{call, A_REPLY, grpc::ByteBuffer(), grpc::Status::OK};
  if (result.error == naiad_lane::kOk) a.buf = encode_infer(result.model, result.version, id, result.params, result.outputs);
  std::lock_guard<std::mutex> g(shared->mu);
  uncount();
  if (shared->server == nullptr) return;
  if (result.error != naiad_lane::kOk) {
    auto it = shared->codes.find(result.error);
    a.type = A_FAIL;
    a.status = grpc::Status(grpc::StatusCode(it == shared->codes.end() ? int(grpc::StatusCode::UNKNOWN) : it->second),
                            result.message);
  }
  shared->server->post_now(std::move(a));
}

py::list metadata(Event& e) {
  py::list out;
  for (auto& kv : e.call->ctx.client_metadata()) {
    std::string key(kv.first.data(), kv.first.size());
    py::object value;
    if (key.size() > 4 && key.compare(key.size() - 4, 4, "-bin") == 0) {
      value = py::bytes(kv.second.data(), kv.second.size());
    } else {
      value = py::reinterpret_steal<py::object>(PyUnicode_DecodeLatin1(kv.second.data(), kv.second.size(), nullptr));
    }
    out.append(py::make_tuple(py::str(key), value));
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_native_grpc, m) {
  m.doc() = "naiad's native gRPC front end (grpc++ asynchronous generic server)";
  // Debian builds abseil with mutex deadlock detection on: it walks a lock graph on every
  // grpc core lock (about 3% of a ModelInfer's CPU here). Off, as in release builds.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  m.attr("UNARY") = int(UNARY);
  m.attr("INFER") = int(INFER);
  m.attr("STREAM_START") = int(STREAM_START);
  m.attr("STREAM_MSG") = int(STREAM_MSG);
  m.attr("STREAM_END") = int(STREAM_END);
  m.attr("CANCELLED") = int(CANCELLED);

  py::class_<Event, std::shared_ptr<Event>>(m, "Event", py::buffer_protocol())
      .def_buffer([](Event& e) -> py::buffer_info {
        return py::buffer_info(const_cast<uint8_t*>(e.data.begin()), 1, py::format_descriptor<uint8_t>::format(),
                               1, {ssize_t(e.data.size())}, {1}, true);
      })
      .def_property_readonly("kind", [](Event& e) { return e.kind; })
      .def_property_readonly("call_id", [](Event& e) { return e.call->id; })
      .def_property_readonly("method", [](Event& e) { return e.call->method; })
      .def("fields", &fields, "(model, version, id, [(name, datatype, shape, view)], [output] | None)")
      .def("metadata", &metadata)
      .def("respond", [](Event& e, py::buffer data) { post(e, A_REPLY, buffer_of(data), grpc::Status::OK); })
      .def("respond_infer",
           [](Event& e, const std::string& model, const std::string& version, const std::string& id,
              py::list outputs) { post(e, A_REPLY, encode_reply(model, version, id, outputs), grpc::Status::OK); })
      .def("fail",
           [](Event& e, int code, const std::string& message) {
             post(e, A_FAIL, grpc::ByteBuffer(), grpc::Status(grpc::StatusCode(code), message));
           })
      .def("write", [](Event& e, py::buffer data) { post(e, A_WRITE, buffer_of(data), grpc::Status::OK); })
      .def("finish", [](Event& e, int code, const std::string& message) {
        post(e, A_FINISH, grpc::ByteBuffer(), grpc::Status(grpc::StatusCode(code), message));
      });

  py::class_<Server>(m, "Server")
      .def(py::init<const std::string&, const std::map<std::string, int>&, int, int, const std::string&,
                    const std::string&, const std::string&, bool, int>(),
           py::arg("address"), py::arg("int_args"), py::arg("max_message_bytes"), py::arg("compression_level"),
           py::arg("key") = "", py::arg("cert") = "", py::arg("root") = "", py::arg("mutual") = false,
           py::arg("accept_depth") = 32, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("port", &Server::port)
      .def("fileno", &Server::fd)
      .def("take", &Server::take, "every event queued since the last call (one eventfd wake-up)")
      .def("flush", &Server::flush, "wake the native thread for every action queued since the last flush")
      .def("stop", &Server::stop, py::arg("grace_secs") = 0.0, py::call_guard<py::gil_scoped_release>())
      .def(
          "set_lane",
          [](Server& s, const std::string& model, const std::string& version, py::object capsule) {
            s.lanes().set(model, version, naiad_frontend::lane_from_capsule(capsule.ptr()));
          },
          py::arg("model"), py::arg("version"), py::arg("lane"),
          "serve ModelInfer calls for (model, version) on `lane` (a naiad.lane capsule; version \"\": the "
          "calls that name none); None removes it")
      .def("clear_lanes", [](Server& s) { s.lanes().clear(); })
      .def_property_readonly("lane_count", [](Server& s) { return s.lanes().size(); })
      .def("set_lanes_enabled", [](Server& s, bool on) { s.lanes().set_enabled(on); }, py::arg("enabled"))
      .def_property_readonly("lanes_enabled", [](Server& s) { return s.lanes().enabled(); })
      .def("set_error_codes", &Server::set_error_codes, py::arg("codes"),
           "{naiad ErrorCode: grpc status code} for the errors lanes answer")
      .def_property_readonly("lane_served", &Server::lane_served, "ModelInfer calls answered through lanes")
      .def_property_readonly("lane_inflight", &Server::lane_inflight, "lane calls not answered yet");
}
