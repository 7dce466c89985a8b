// The dynamic batcher's queue and decisions for one model version (native twin of
// batcher_py.py; the Python `Scheduler` in services/models/scheduler.py drives either).
//
// Python hands in opaque integer handles (one per queued request) with what the rules
// need: priority, the request's own timeout, its batch size, an interned shape key and
// when it entered.  The queue decides, under its own mutex and never with the GIL:
//   - which priority level a request joins (Triton: 0 or above the levels = default),
//   - whether the level is full (max_queue_size),
//   - its deadline (the level's default timeout, shortened by the request's own only
//     when the policy allows the override),
//   - which requests form the next batch (FIFO per level, highest level first, then the
//     requests a DELAY policy moved behind everything; one shape per batch; never over
//     max_batch_size; the largest preferred size that can be formed goes at once),
//   - when a batch that is not final fires (the oldest request waited
//     max_queue_delay_microseconds, another idle worker asks, or the queue is closing),
//   - which requests time out (REJECT: reported to Python; DELAY: moved to the back).
// Batches are formed only for workers that asked (`want`), so requests keep gathering
// while every instance is busy.
//
// Threads and the GIL: push/want/pump/close/take_all run on the caller's thread and
// hold the GIL only to convert arguments (their work is microseconds, shorter than a
// GIL release/reacquire).  When a model has a queue delay or timeouts, one timer thread
// per queue sleeps until the next due time (a delayed batch, a deadline), decides there
// without the GIL, and writes an eventfd once when something became ready; Python's loop
// reads it (one wake-up per batch) and calls pump() to collect the results.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "frontend/lane.h"
#include "lane/batch.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC, as Python's time.monotonic_ns

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

struct Policy {
    bool reject = true;            // timeout_action REJECT (else DELAY)
    int64_t default_timeout_us = 0;
    bool allow_override = false;
    int64_t max_queue_size = 0;    // 0 = unbounded
};

struct Entry {
    int64_t handle;
    int64_t batch_size;
    int64_t shape_key;
    int64_t enqueue_ns;
    int64_t deadline_ns;  // 0 = none
};

class BatchQueue;

// The Lane a queue publishes to the front ends (frontend/lane.h). Front ends hold it by
// shared_ptr and the queue may go first, so every call checks, under the hub's mutex,
// that the queue is still attached (detach() is called when the lane closes).
class LaneHub final : public naiad_lane::Lane {
public:
    LaneHub(BatchQueue* q, std::shared_ptr<const naiad_lane::Schema> schema) : q_(q), schema_(std::move(schema)) {}
    const naiad_lane::Schema& schema() const override { return *schema_; }
    bool submit(std::unique_ptr<naiad_lane::Request>& req) override;
    void flush() override;
    void detach() {
        std::lock_guard<std::mutex> lock(mu_);
        q_ = nullptr;
    }

private:
    std::mutex mu_;
    BatchQueue* q_;
    std::shared_ptr<const naiad_lane::Schema> schema_;
};

class BatchQueue {
public:
    BatchQueue(bool dynamic, int64_t max_batch_size, std::vector<int64_t> preferred, int64_t delay_ns, int levels,
               int default_level, std::vector<std::tuple<bool, int64_t, bool, int64_t>> policies)
        : dynamic_(dynamic), max_batch_(max_batch_size), preferred_(std::move(preferred)), delay_ns_(delay_ns),
          levels_(std::max(levels, 1)), default_level_(default_level) {
        if (default_level_ < 1 || default_level_ > levels_)
            throw py::value_error("default_level " + std::to_string(default_level) + " is outside 1.." +
                                  std::to_string(levels_));
        if (policies.size() != static_cast<size_t>(levels_))
            throw py::value_error("need one policy per level: " + std::to_string(levels_) + " levels, " +
                                  std::to_string(policies.size()) + " policies");
        std::sort(preferred_.begin(), preferred_.end());
        for (auto& [reject, timeout, override_ok, max_size] : policies) {
            policies_.push_back(Policy{reject, timeout, override_ok, max_size});
            any_timeouts_ = any_timeouts_ || timeout > 0;
        }
        queues_.resize(levels_);
        // The eventfd also carries the batches that lane submits (front-end threads) form.
        efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (efd_ < 0) throw py::error_already_set();
        if (delay_ns_ > 0 || any_timeouts_) timer_ = std::thread([this] { timer_loop(); });
    }

    ~BatchQueue() {
        close_lane();
        stop();
        // Lane requests still queued: their clients are answered, not left waiting.
        naiad_lane::Result res;
        res.error = naiad_lane::kUnavailable;
        res.message = "the model's queue was destroyed";
        for (auto& [h, r] : lane_reqs_) r->complete(res);
    }

    static constexpr int64_t kLaneBase = int64_t(1) << 62;   // lane handles: kLaneBase + n
    static constexpr int64_t kLaneKeyBit = int64_t(1) << 61; // lane shape keys never meet Python's

    static bool is_lane(int64_t handle) { return handle >= kLaneBase; }

    // A front end's thread: queue a lane request at the default priority level. False
    // (declined, `req` untouched) when the queue is closing or the level is full.
    bool lane_push(std::unique_ptr<naiad_lane::Request>& req) {
        std::lock_guard<std::mutex> lock(mu_);
        if (closing_ || stopping_) return false;
        const Policy& policy = policies_[default_level_ - 1];
        auto& q = queues_[default_level_ - 1];
        if (policy.max_queue_size && static_cast<int64_t>(q.size()) >= policy.max_queue_size) return false;
        int64_t enqueue_ns = now_ns();
        int64_t deadline = policy.default_timeout_us ? enqueue_ns + policy.default_timeout_us * 1000 : 0;
        int64_t handle = kLaneBase + next_lane_++;
        int64_t key = kLaneKeyBit | (req->shape_key & (kLaneKeyBit - 1));
        q.push_back(Entry{handle, req->batch_size, dynamic_ ? key : 0, enqueue_ns, deadline});
        ++size_;
        lane_reqs_.emplace(handle, std::move(req));
        if (deadline && (!due_ || deadline < due_)) {
            due_ = deadline;
            if (!timer_target_ || deadline < timer_target_) cv_.notify_one();
        }
        return true;
    }

    // A front end's thread, after a burst of lane_push: if workers wait, decide now and
    // wake Python once for the batches formed.
    void lane_flush() {
        std::lock_guard<std::mutex> lock(mu_);
        if (wants_ <= 0 || size_ == 0 || stopping_ || efd_ < 0) return;
        decide(now_ns());
        if ((!ready_.empty() || !expired_.empty()) && !signalled_) {
            signalled_ = true;
            uint64_t one = 1;
            ssize_t r = ::write(efd_, &one, sizeof one);
            (void)r;
        }
        if (due_ && (!timer_target_ || due_ < timer_target_)) cv_.notify_one();
    }

    // The lane requests behind `handles` (all lane handles), taken out of the queue's keeping.
    std::vector<std::unique_ptr<naiad_lane::Request>> take_lane(const std::vector<int64_t>& handles) {
        std::vector<std::unique_ptr<naiad_lane::Request>> out;
        out.reserve(handles.size());
        std::lock_guard<std::mutex> lock(mu_);
        for (int64_t h : handles) {
            auto it = lane_reqs_.find(h);
            if (it == lane_reqs_.end()) throw py::key_error("no lane request " + std::to_string(h));
            out.push_back(std::move(it->second));
            lane_reqs_.erase(it);
        }
        return out;
    }

    // Publish a lane for this queue; the capsule goes to the front ends.
    std::shared_ptr<naiad_lane::Lane> open_lane(std::shared_ptr<const naiad_lane::Schema> schema) {
        close_lane();
        lane_schema_ = schema;
        hub_ = std::make_shared<LaneHub>(this, std::move(schema));
        return hub_;
    }

    // Front ends decline from now on; lane requests already queued still run.
    void close_lane() {
        if (hub_) hub_->detach();
        hub_.reset();
    }

    bool lane_open() const { return hub_ != nullptr; }

    // The schema of the lane (kept after it closes, for the requests still queued).
    std::shared_ptr<const naiad_lane::Schema> lane_schema() const { return lane_schema_; }

    int64_t lane_queued() {
        std::lock_guard<std::mutex> lock(mu_);
        return static_cast<int64_t>(lane_reqs_.size());
    }

    BatchQueue(const BatchQueue&) = delete;
    BatchQueue& operator=(const BatchQueue&) = delete;

    // Queue one request.  Returns false when its level is full (nothing queued).
    bool push(int64_t handle, int64_t priority, int64_t timeout_us, int64_t batch_size, int64_t shape_key,
              int64_t enqueue_ns) {
        std::lock_guard<std::mutex> lock(mu_);
        int level = (priority >= 1 && priority <= levels_) ? static_cast<int>(priority) : default_level_;
        const Policy& policy = policies_[level - 1];
        auto& q = queues_[level - 1];
        if (policy.max_queue_size && static_cast<int64_t>(q.size()) >= policy.max_queue_size) return false;
        int64_t timeout = policy.default_timeout_us;
        // A request's own timeout may only shorten the default (no default: no timeout).
        if (policy.allow_override && timeout_us > 0 && timeout_us < timeout) timeout = timeout_us;
        int64_t deadline = timeout ? enqueue_ns + timeout * 1000 : 0;
        q.push_back(Entry{handle, batch_size, dynamic_ ? shape_key : 0, enqueue_ns, deadline});
        ++size_;
        if (deadline && (!due_ || deadline < due_)) {
            due_ = deadline;
            if (!timer_target_ || deadline < timer_target_) cv_.notify_one();
        }
        return true;
    }

    // `idle` workers wait for a batch: the batches the timer formed since the last call
    // go to the first of them, then the queue decides for the rest now.  Returns
    // (batches, handles rejected on timeout) since the last call.
    std::pair<std::vector<std::vector<int64_t>>, std::vector<int64_t>> pump(int64_t idle) {
        std::pair<std::vector<std::vector<int64_t>>, std::vector<int64_t>> out;
        {
            std::lock_guard<std::mutex> lock(mu_);
            wants_ = std::max<int64_t>(0, idle - static_cast<int64_t>(ready_.size()));
            decide(now_ns());
            out.first.swap(ready_);
            out.second.swap(expired_);
            if (signalled_) {  // drop the wake-up the timer wrote for what we just collected
                signalled_ = false;
                uint64_t v;
                ssize_t r = ::read(efd_, &v, sizeof v);
                (void)r;
            }
            // The timer thread sleeps until its own target: wake it for an earlier one.
            if (due_ && (!timer_target_ || due_ < timer_target_)) cv_.notify_one();
        }
        return out;
    }

    // Closing: what is queued goes without waiting for the delay.
    void close() {
        std::lock_guard<std::mutex> lock(mu_);
        closing_ = true;
        cv_.notify_one();
    }

    // Everything still queued, in service order (for failing it).
    std::vector<int64_t> take_all() {
        std::lock_guard<std::mutex> lock(mu_);
        std::vector<int64_t> out;
        for (auto* q : order()) {
            for (auto& e : *q) out.push_back(e.handle);
            q->clear();
        }
        size_ = 0;
        return out;
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (stopping_) return;
            stopping_ = true;
            cv_.notify_one();
        }
        if (timer_.joinable()) timer_.join();
        std::lock_guard<std::mutex> lock(mu_);  // (lane_flush writes it from other threads)
        if (efd_ >= 0) ::close(efd_);
        efd_ = -1;
    }

    int fileno() const { return efd_; }

    int64_t size() {
        std::lock_guard<std::mutex> lock(mu_);
        return size_;
    }

    int64_t wants() {
        std::lock_guard<std::mutex> lock(mu_);
        return wants_;
    }

private:
    // Levels in service order, then the delayed requests.
    std::vector<std::deque<Entry>*> order() {
        std::vector<std::deque<Entry>*> out;
        out.reserve(queues_.size() + 1);
        for (auto& q : queues_) out.push_back(&q);
        out.push_back(&delayed_);
        return out;
    }

    void expire(int64_t now) {
        for (int lvl = 0; lvl < levels_; ++lvl) {
            auto& q = queues_[lvl];
            if (q.empty()) continue;
            bool reject = policies_[lvl].reject;
            std::deque<Entry> keep;
            bool changed = false;
            for (auto& e : q) {
                if (e.deadline_ns && now >= e.deadline_ns) {
                    changed = true;
                    if (reject) {
                        expired_.push_back(e.handle);
                        --size_;
                    } else {
                        e.deadline_ns = 0;
                        delayed_.push_back(e);
                    }
                } else {
                    keep.push_back(e);
                }
            }
            if (changed) q.swap(keep);
        }
    }

    // (requests in the next batch, whether it is final: send now).
    std::pair<int64_t, bool> plan() {
        if (!dynamic_) return {1, true};
        int64_t total = 0, count = 0, best_preferred = 0, key = 0;
        for (auto* q : order()) {
            for (auto& e : *q) {
                if (count && e.shape_key != key) return {best_preferred ? best_preferred : count, true};
                if (total + e.batch_size > max_batch_) return {best_preferred ? best_preferred : count, true};
                if (!count) key = e.shape_key;
                total += e.batch_size;
                ++count;
                if (std::binary_search(preferred_.begin(), preferred_.end(), total)) best_preferred = count;
                if (total == max_batch_) return {count, true};
            }
        }
        if (best_preferred) return {best_preferred, true};
        return {count, false};
    }

    void take(int64_t n) {
        std::vector<int64_t> batch;
        batch.reserve(n);
        for (auto* q : order()) {
            while (!q->empty() && static_cast<int64_t>(batch.size()) < n) {
                batch.push_back(q->front().handle);
                q->pop_front();
            }
            if (static_cast<int64_t>(batch.size()) >= n) break;
        }
        size_ -= static_cast<int64_t>(batch.size());
        ready_.push_back(std::move(batch));
    }

    int64_t oldest_enqueue() {
        int64_t oldest = INT64_MAX;
        for (auto* q : order())
            if (!q->empty()) oldest = std::min(oldest, q->front().enqueue_ns);
        return oldest;
    }

    int64_t earliest_deadline() {
        int64_t best = 0;
        for (auto& q : queues_)
            for (auto& e : q)
                if (e.deadline_ns && (!best || e.deadline_ns < best)) best = e.deadline_ns;
        return best;
    }

    // The decisions, under mu_.  Sets due_ to when they must be taken again (0: only
    // when something changes).
    void decide(int64_t now) {
        if (any_timeouts_ && size_) expire(now);
        int64_t due = 0;
        while (wants_ > 0 && size_ > 0) {
            auto [count, final] = plan();
            // A second idle worker does not wait: it takes what is there.
            if (!final && delay_ns_ > 0 && !closing_ && wants_ < 2) {
                int64_t fire_at = oldest_enqueue() + delay_ns_;
                if (fire_at > now) {
                    due = fire_at;
                    break;
                }
            }
            take(count);
            --wants_;
        }
        if (any_timeouts_ && size_) {
            int64_t d = earliest_deadline();
            if (d && (!due || d < due)) due = d;
        }
        due_ = due;
    }

    void timer_loop() {
        std::unique_lock<std::mutex> lock(mu_);
        while (!stopping_) {
            // Decide only when something fell due: between due times the queue changes only
            // by Python's calls, which decide on the loop themselves.
            int64_t now = now_ns();
            if (due_ && now >= due_) decide(now);
            if ((!ready_.empty() || !expired_.empty()) && !signalled_) {
                signalled_ = true;
                uint64_t one = 1;
                ssize_t r = ::write(efd_, &one, sizeof one);
                (void)r;
            }
            timer_target_ = due_;
            if (due_ == 0) {
                cv_.wait(lock);
            } else {
                auto until = Clock::time_point(std::chrono::nanoseconds(due_));
                cv_.wait_until(lock, until);
            }
            timer_target_ = 0;
        }
    }

    const bool dynamic_;
    const int64_t max_batch_;
    std::vector<int64_t> preferred_;
    const int64_t delay_ns_;
    const int levels_;
    const int default_level_;
    std::vector<Policy> policies_;
    bool any_timeouts_ = false;

    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::deque<Entry>> queues_;
    std::deque<Entry> delayed_;  // timed out under a DELAY policy
    int64_t size_ = 0;
    int64_t wants_ = 0;
    bool closing_ = false;
    bool stopping_ = false;
    bool signalled_ = false;
    int64_t due_ = 0;
    int64_t timer_target_ = 0;
    std::vector<std::vector<int64_t>> ready_;
    std::vector<int64_t> expired_;
    int efd_ = -1;
    std::thread timer_;
    std::unordered_map<int64_t, std::unique_ptr<naiad_lane::Request>> lane_reqs_;
    int64_t next_lane_ = 0;
    std::shared_ptr<LaneHub> hub_;  // (Python's thread only)
    std::shared_ptr<const naiad_lane::Schema> lane_schema_;
};

bool LaneHub::submit(std::unique_ptr<naiad_lane::Request>& req) {
    std::lock_guard<std::mutex> lock(mu_);
    return q_ != nullptr && q_->lane_push(req);
}

void LaneHub::flush() {
    std::lock_guard<std::mutex> lock(mu_);
    if (q_ != nullptr) q_->lane_flush();
}

// schema: (model, version, max_batch_size, [(name, datatype, dims, elem_size, optional)], [outputs])
py::capsule open_lane(BatchQueue& q, py::tuple spec) {
    auto schema = std::make_shared<naiad_lane::Schema>();
    schema->model = spec[0].cast<std::string>();
    schema->version = spec[1].cast<std::string>();
    schema->max_batch_size = spec[2].cast<int64_t>();
    for (auto item : spec[3].cast<py::list>()) {
        py::tuple t = item.cast<py::tuple>();
        naiad_lane::InputSpec in;
        in.name = t[0].cast<std::string>();
        in.datatype = t[1].cast<std::string>();
        in.dims = t[2].cast<std::vector<int64_t>>();
        in.elem_size = t[3].cast<int64_t>();
        in.optional = t[4].cast<bool>();
        if (in.elem_size <= 0) throw py::value_error("input '" + in.name + "' has no fixed element size");
        schema->inputs.push_back(std::move(in));
    }
    if (schema->inputs.empty() || schema->inputs.size() > 64) throw py::value_error("a lane needs 1..64 inputs");
    schema->outputs = spec[4].cast<std::vector<std::string>>();
    auto* held = new std::shared_ptr<naiad_lane::Lane>(q.open_lane(std::move(schema)));
    return py::capsule(held, naiad_lane::kCapsuleName, [](PyObject* cap) {
        delete static_cast<std::shared_ptr<naiad_lane::Lane>*>(PyCapsule_GetPointer(cap, naiad_lane::kCapsuleName));
    });
}

// The queue inside a BatchQueue instance (nullptr with TypeError before __init__).
BatchQueue* queue_of(PyObject* self) {
    BatchQueue* q = reinterpret_cast<py::detail::instance*>(self)->get_value_and_holder().value_ptr<BatchQueue>();
    if (q == nullptr) PyErr_SetString(PyExc_TypeError, "BatchQueue.__init__ was not called");
    return q;
}

// push() is called once per request: a METH_FASTCALL method (positional arguments only)
// costs a fifth of pybind11's general dispatch.  The pybind11 instance holds the queue by
// value; a Python subclass (batcher.NativeBatchQueue) keeps the same layout.
PyObject* push_fast(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "push(handle, priority, timeout_us, batch_size, shape_key, enqueue_ns) takes 6 positional "
                     "arguments (%zd given)", nargs);
        return nullptr;
    }
    BatchQueue* q = queue_of(self);
    if (q == nullptr) return nullptr;
    int64_t v[6];
    for (int i = 0; i < 6; ++i) {
        v[i] = PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred()) return nullptr;
    }
    return PyBool_FromLong(q->push(v[0], v[1], v[2], v[3], v[4], v[5]));
}

// A Python list of make(item) for each item (nullptr with the error set if one fails).
template <typename T, typename Make>
PyObject* list_of(const std::vector<T>& items, Make make) {
    PyObject* out = PyList_New(static_cast<Py_ssize_t>(items.size()));
    if (out == nullptr) return nullptr;
    for (size_t i = 0; i < items.size(); ++i) {
        PyObject* x = make(items[i]);
        if (x == nullptr) {
            Py_DECREF(out);
            return nullptr;
        }
        PyList_SET_ITEM(out, static_cast<Py_ssize_t>(i), x);
    }
    return out;
}

PyObject* int_list(const std::vector<int64_t>& v) {
    return list_of(v, [](int64_t x) { return PyLong_FromLongLong(x); });
}

// pump() is called once per batch: METH_FASTCALL too, building the lists directly.
PyObject* pump_fast(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "pump(idle) takes 1 positional argument (%zd given)", nargs);
        return nullptr;
    }
    BatchQueue* q = queue_of(self);
    if (q == nullptr) return nullptr;
    int64_t idle = PyLong_AsLongLong(args[0]);
    if (idle == -1 && PyErr_Occurred()) return nullptr;
    auto [batches, expired] = q->pump(idle);
    PyObject* b = list_of(batches, int_list);
    if (b == nullptr) return nullptr;
    PyObject* e = int_list(expired);
    if (e == nullptr) {
        Py_DECREF(b);
        return nullptr;
    }
    PyObject* out = PyTuple_Pack(2, b, e);
    Py_DECREF(b);
    Py_DECREF(e);
    return out;
}

PyMethodDef pump_def = {"pump", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(pump_fast)),
                        METH_FASTCALL,
                        "pump(idle) -> (batches, expired)\n\n"
                        "`idle` workers wait: decide now; the batches for them and the handles rejected on "
                        "timeout since the last call."};

PyMethodDef push_def = {"push", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(push_fast)),
                        METH_FASTCALL,
                        "push(handle, priority, timeout_us, batch_size, shape_key, enqueue_ns) -> bool\n\n"
                        "Queue one request; False when its level is full."};

}  // namespace

PYBIND11_MODULE(_batcher, m) {
    m.doc() = "The dynamic batcher's per-model queue and batching decisions (native).";
    py::class_<BatchQueue> cls(m, "BatchQueue");
    cls.def(py::init<bool, int64_t, std::vector<int64_t>, int64_t, int, int,
                      std::vector<std::tuple<bool, int64_t, bool, int64_t>>>(),
             py::arg("dynamic"), py::arg("max_batch_size"), py::arg("preferred"), py::arg("delay_ns"),
             py::arg("levels"), py::arg("default_level"), py::arg("policies"))
        .def("close", [](BatchQueue& q) {
            q.close_lane();  // front ends decline from now on; what is queued still runs
            q.close();
        })
        .def("open_lane", &open_lane, py::arg("schema"),
             "publish a lane for this queue (frontend/lane.h): a capsule for the front ends")
        .def("close_lane", &BatchQueue::close_lane)
        .def_property_readonly("lane_open", &BatchQueue::lane_open)
        .def("take_lane", [](BatchQueue& q, const std::vector<int64_t>& handles) {
            return std::make_unique<naiad_lane::LaneBatch>(q.lane_schema(), q.take_lane(handles));
        }, "the lane requests behind `handles` (one batch) as a LaneBatch")
        .def_property_readonly("lane_queued", &BatchQueue::lane_queued)
        .def("take_all", &BatchQueue::take_all)
        .def("stop", [](BatchQueue& q) {
            q.close_lane();
            py::gil_scoped_release nogil;
            q.stop();
        })
        .def("fileno", &BatchQueue::fileno)
        .def_property_readonly("size", &BatchQueue::size)
        .def_property_readonly("wants", &BatchQueue::wants);
    cls.attr("LANE_BASE") = py::int_(BatchQueue::kLaneBase);
    py::class_<naiad_lane::LaneBatch>(m, "LaneBatch",
                                      "lane requests forming one batch (lane/batch.h): Python meets them once")
        .def("__len__", &naiad_lane::LaneBatch::size)
        .def_property_readonly("batch_size", &naiad_lane::LaneBatch::batch_size)
        .def("waited_ns", &naiad_lane::LaneBatch::waited_ns, py::arg("now"))
        .def("drop_cancelled", &naiad_lane::LaneBatch::drop_cancelled, py::arg("code"), py::arg("message"),
             "answer the requests whose clients cancelled and leave them out: how many")
        .def("is_cancelled", &naiad_lane::LaneBatch::is_cancelled, py::arg("index"))
        .def("layout", &naiad_lane::LaneBatch::layout)
        .def("copy_into", &naiad_lane::LaneBatch::copy_into, py::arg("view"), py::arg("base"))
        .def("complete", &naiad_lane::LaneBatch::complete, py::arg("rds"), py::arg("block"),
             py::arg("reschedule_error"))
        .def("fail", &naiad_lane::LaneBatch::fail_all, py::arg("code"), py::arg("message"),
             "answer every request with this error: (0, 0, failed, their ns, [ms per request])");
    for (PyMethodDef* def : {&push_def, &pump_def}) {
        PyObject* method = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def);
        if (method == nullptr || PyObject_SetAttrString(cls.ptr(), def->ml_name, method) < 0) {
            Py_XDECREF(method);
            throw py::error_already_set();
        }
        Py_DECREF(method);
    }
}
