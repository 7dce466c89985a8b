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
        if (delay_ns_ > 0 || any_timeouts_) {
            efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
            if (efd_ < 0) throw py::error_already_set();
            timer_ = std::thread([this] { timer_loop(); });
        }
    }

    ~BatchQueue() { stop(); }

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
};

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
        .def("close", &BatchQueue::close)
        .def("take_all", &BatchQueue::take_all)
        .def("stop", &BatchQueue::stop, py::call_guard<py::gil_scoped_release>())
        .def("fileno", &BatchQueue::fileno)
        .def_property_readonly("size", &BatchQueue::size)
        .def_property_readonly("wants", &BatchQueue::wants);
    for (PyMethodDef* def : {&push_def, &pump_def}) {
        PyObject* method = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def);
        if (method == nullptr || PyObject_SetAttrString(cls.ptr(), def->ml_name, method) < 0) {
            Py_XDECREF(method);
            throw py::error_already_set();
        }
        Py_DECREF(method);
    }
}
