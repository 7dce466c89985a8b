// A batch of lane requests on its way to a Python-backend stub and back (see
// frontend/lane.h): the only place a lane request meets Python, once per batch.
//
// layout(): the EXECUTE packet's per-request metadata, in the form Session._pack sends for
//   Python-path requests, with each input's offset in one 64-byte aligned block;
// copy_into(): every input into that block of the parent's arena (one memcpy each, the
//   GIL released);
// complete(): the stub's RESPONSES descriptors read straight out of its region, each
//   request answered through its front end (the requested outputs only, in the model's
//   order), and the figures the statistics need returned in one tuple.
// A batch dropped without an answer answers its requests UNAVAILABLE, so no client waits
// for ever.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "frontend/lane.h"

namespace naiad_lane {

namespace py = pybind11;

inline int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class LaneBatch {
 public:
  LaneBatch(std::shared_ptr<const Schema> schema, std::vector<std::unique_ptr<Request>> reqs)
      : schema_(std::move(schema)), reqs_(std::move(reqs)) {}
  ~LaneBatch() { fail(kUnavailable, "the request was dropped before its model answered"); }
  LaneBatch(const LaneBatch&) = delete;
  LaneBatch& operator=(const LaneBatch&) = delete;

  size_t size() const { return reqs_.size(); }

  int64_t batch_size() const {
    int64_t n = 0;
    for (auto& r : reqs_) n += r->batch_size;
    return n;
  }

  // Sum over the requests of (now - arrival): their queue time, for the statistics.
  int64_t waited_ns(int64_t now) const {
    int64_t t = 0;
    for (auto& r : reqs_) t += now - r->arrival_ns;
    return t;
  }

  // (metas, total): metas[i] = (id, sequence_id 0, flags 0, timeout 0, {}, outputs | None,
  // ((name, datatype, shape, offset, size), ...)), as Session._pack lays out a request.
  py::tuple layout() {
    const Schema& s = *schema_;
    offsets_.assign(reqs_.size(), {});
    size_t total = 0;
    py::tuple metas(reqs_.size());
    for (size_t i = 0; i < reqs_.size(); ++i) {
      Request& r = *reqs_[i];
      py::tuple ins(r.inputs.size());
      auto& offs = offsets_[i];
      offs.reserve(r.inputs.size());
      for (size_t k = 0; k < r.inputs.size(); ++k) {
        const Input& in = r.inputs[k];
        const InputSpec& spec = s.inputs[in.index];
        py::tuple shape(in.shape.size());
        for (size_t d = 0; d < in.shape.size(); ++d) shape[d] = py::int_(in.shape[d]);
        offs.push_back(total);
        ins[k] = py::make_tuple(py::str(spec.name), py::str(spec.datatype), std::move(shape), total, in.size);
        total += (in.size + 63) & ~size_t(63);
      }
      py::object outs = py::none();
      if (!r.outputs.empty()) {
        py::tuple names(r.outputs.size());
        for (size_t k = 0; k < r.outputs.size(); ++k) names[k] = py::str(s.outputs[r.outputs[k]]);
        outs = std::move(names);
      }
      metas[i] = py::make_tuple(py::str(r.id), 0, 0, 0, py::dict(), std::move(outs), std::move(ins));
    }
    total_ = total;
    return py::make_tuple(std::move(metas), total);
  }

  // Every input into `view` (a writable buffer) at base + its offset from layout().
  void copy_into(py::buffer view, size_t base) {
    py::buffer_info info = view.request(true);
    const size_t cap = size_t(info.size * info.itemsize);
    if (offsets_.size() != reqs_.size()) throw py::value_error("copy_into() before layout()");
    if (base + total_ > cap) throw py::value_error("the block does not fit the buffer");
    char* dst = static_cast<char*>(info.ptr) + base;
    py::gil_scoped_release nogil;
    for (size_t i = 0; i < reqs_.size(); ++i) {
      const Request& r = *reqs_[i];
      for (size_t k = 0; k < r.inputs.size(); ++k)
        if (r.inputs[k].size) std::memcpy(dst + offsets_[i][k], r.inputs[k].data, r.inputs[k].size);
    }
  }

  // Answer every request from the stub's RESPONSES descriptors: rds[i] is None (the model
  // released the request for rescheduling: answered with `reschedule_error`) or
  // (error | None, params | None, ((name, datatype, shape, offset, size), ...)); the output
  // bytes are in `block` (the stub's region from the block's base, or None when empty).
  // Returns (succeeded, their total ns, failed, their total ns, [ms to answer, per request]).
  py::tuple complete(py::sequence rds, py::object block, const std::string& reschedule_error) {
    if (size_t(py::len(rds)) != reqs_.size()) throw py::value_error("one descriptor per request expected");
    const char* base = nullptr;
    size_t cap = 0;
    py::buffer_info info;
    if (!block.is_none()) {
      info = py::reinterpret_borrow<py::buffer>(block).request();
      base = static_cast<const char*>(info.ptr);
      cap = size_t(info.size * info.itemsize);
    }
    const Schema& s = *schema_;
    int64_t ok = 0, ok_ns = 0, bad = 0, bad_ns = 0;
    py::list ms(reqs_.size());
    const int64_t now = mono_ns();
    for (size_t i = 0; i < reqs_.size(); ++i) {
      std::unique_ptr<Request> req = std::move(reqs_[i]);
      if (!req) continue;
      Result res;
      res.model = s.model;
      res.version = s.version;
      py::handle rd = rds[i];
      std::vector<std::string> keep;  // strings the result's views point into
      if (rd.is_none()) {
        res.error = kInvalidArg;
        res.message = reschedule_error;
      } else {
        try {
          py::tuple t = py::reinterpret_borrow<py::tuple>(rd);
          py::handle err = t[0];
          if (!err.is_none()) {
            py::tuple e = py::reinterpret_borrow<py::tuple>(err);
            res.error = e[0].cast<int>();
            res.message = e[1].cast<std::string>();
          } else {
            read_params(t[1], res.params);
            read_outputs(*req, t[2], base, cap, res, keep);
          }
        } catch (const std::exception& exc) {  // a malformed descriptor: this request fails
          res.outputs.clear();
          res.params.clear();
          res.error = kInternal;
          res.message = std::string("the model's response could not be read: ") + exc.what();
        }
      }
      const int64_t took = now - req->arrival_ns;
      if (res.error == kOk) {
        ++ok;
        ok_ns += took;
      } else {
        ++bad;
        bad_ns += took;
      }
      ms[i] = py::int_(took / 1000000);
      req->complete(res);
    }
    reqs_.clear();
    return py::make_tuple(ok, ok_ns, bad, bad_ns, std::move(ms));
  }

  // Whether request `i` of the batch was cancelled by its client (the model's
  // is_cancelled()); false past the end or once answered.
  bool is_cancelled(size_t i) const { return i < reqs_.size() && reqs_[i] && reqs_[i]->cancelled(); }

  // Answer the requests whose clients cancelled (Request::cancelled) with `code` and
  // `message` and leave them out of the batch; returns how many. (Before execution, as
  // the Python scheduler skips a request cancelled while queued.)
  int64_t drop_cancelled(int code, const std::string& message) {
    int64_t n = 0;
    const Result res = error_result(code, message);
    std::vector<std::unique_ptr<Request>> live;
    live.reserve(reqs_.size());
    for (auto& r : reqs_) {
      if (r && r->cancelled()) {
        r->complete(res);
        ++n;
      } else if (r) {
        live.push_back(std::move(r));
      }
    }
    reqs_.swap(live);
    return n;
  }

  // Answer every request still here with one error (the execution failed as a whole, the
  // stub died, the model is unloading). Returns (answered, their total ns). Needs no GIL.
  std::pair<int64_t, int64_t> fail(int code, const std::string& message) {
    const Result res = error_result(code, message);
    int64_t n = 0, ns = 0;
    const int64_t now = mono_ns();
    for (auto& r : reqs_) {
      if (!r) continue;
      ns += now - r->arrival_ns;
      r->complete(res);
      r.reset();
      ++n;
    }
    reqs_.clear();
    return {n, ns};
  }

  // fail() for Python: the tuple complete() returns.
  py::tuple fail_all(int code, const std::string& message) {
    std::vector<int64_t> ms;
    const int64_t now = mono_ns();
    for (auto& r : reqs_)
      if (r) ms.push_back((now - r->arrival_ns) / 1000000);
    auto [n, ns] = fail(code, message);
    py::list out(ms.size());
    for (size_t i = 0; i < ms.size(); ++i) out[i] = py::int_(ms[i]);
    return py::make_tuple(0, 0, n, ns, std::move(out));
  }

 private:
  // The answer every request of a failed or skipped batch gets.
  Result error_result(int code, const std::string& message) const {
    Result res;
    res.error = code;
    res.message = message;
    if (schema_) {
      res.model = schema_->model;
      res.version = schema_->version;
    }
    return res;
  }

  static void read_params(py::handle params, std::vector<Param>& out) {
    if (params.is_none()) return;
    py::dict d = py::reinterpret_borrow<py::dict>(params);
    for (auto item : d) {
      Param p;
      p.key = py::str(item.first).cast<std::string>();
      py::handle v = item.second;
      if (PyBool_Check(v.ptr())) {
        p.kind = Param::kBool;
        p.b = v.ptr() == Py_True;
      } else if (PyLong_Check(v.ptr())) {
        p.kind = Param::kInt;
        p.i = v.cast<int64_t>();
      } else if (PyFloat_Check(v.ptr())) {
        p.kind = Param::kDouble;
        p.d = v.cast<double>();
      } else {
        p.kind = Param::kString;
        p.s = py::str(v).cast<std::string>();
      }
      out.push_back(std::move(p));
    }
  }

  void read_outputs(const Request& req, py::handle outputs, const char* base, size_t cap, Result& res,
                    std::vector<std::string>& keep) {
    const Schema& s = *schema_;
    py::sequence outs = py::reinterpret_borrow<py::sequence>(outputs);
    const size_t n = size_t(py::len(outs));
    keep.reserve(2 * n);  // no reallocation: the views below point into these strings
    for (size_t k = 0; k < n; ++k) {
      py::tuple o = py::reinterpret_borrow<py::tuple>(outs[k]);
      keep.push_back(o[0].cast<std::string>());
      const std::string& name = keep.back();
      if (!req.outputs.empty()) {  // only what the client asked for (as ModelService._postprocess)
        int idx = s.output_index(name);
        bool wanted = false;
        for (int w : req.outputs) wanted = wanted || w == idx;
        if (idx < 0 || !wanted) {
          keep.pop_back();
          continue;
        }
      }
      keep.push_back(o[1].cast<std::string>());
      Output out;
      out.name = keep[keep.size() - 2];
      out.datatype = keep.back();
      for (auto d : py::reinterpret_borrow<py::sequence>(o[2])) out.shape.push_back(d.cast<int64_t>());
      size_t off = o[3].cast<size_t>(), size = o[4].cast<size_t>();
      if (size) {
        if (base == nullptr || off + size > cap) throw py::value_error("an output lies outside the stub's block");
        out.data = base + off;
      }
      out.size = size;
      res.outputs.push_back(std::move(out));
    }
  }

  std::shared_ptr<const Schema> schema_;
  std::vector<std::unique_ptr<Request>> reqs_;
  std::vector<std::vector<size_t>> offsets_;
  size_t total_ = 0;
};

}  // namespace naiad_lane
