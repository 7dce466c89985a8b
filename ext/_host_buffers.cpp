// Aligned, reusable host staging buffers (native twin of host_buffers_py.py).
//
// A HostBufferPool hands out HostBuffers backed by aligned "slabs", one slab per
// buffer, sized to a small set of size classes so that released slabs can be
// reused.  Slabs are cached up to max_cached_bytes and freed beyond it.  Optional
// Python hooks see every slab when it is first allocated and when it is finally
// freed, so the Python side can page-lock (pin) them for CUDA.
//
// Concurrency: pool bookkeeping is under a std::mutex so native threads can share
// it later; Python hooks are never called while that mutex is held (a hook needs
// the GIL, and a GIL holder may be waiting for the mutex).
//
// Buffer exports: HostBuffer implements the buffer protocol itself (not through
// pybind11's def_buffer) so that it can count live exports; release() refuses
// (BufferError) while any memoryview/ndarray over the buffer is alive.

#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

constexpr size_t kMinClass = size_t(4) << 10;    // smallest slab: one page
constexpr size_t kFineClassesAbove = size_t(1) << 20;  // finer classes above 1 MiB
constexpr size_t kMaxRequest = size_t(1) << 48;   // sanity bound, far above any RAM
constexpr size_t kMaxAlignment = size_t(1) << 20;

size_t next_pow2(size_t n) {
    size_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

// Powers of two up to 1 MiB; above that, quarter steps between powers of two
// (1.25x, 1.5x, 1.75x, 2x), so a large request wastes at most 25%.
size_t size_class(size_t nbytes) {
    if (nbytes <= kMinClass) return kMinClass;
    size_t p = next_pow2(nbytes);
    if (nbytes <= kFineClassesAbove) return p;
    size_t step = p / 8;
    return (nbytes + step - 1) / step * step;
}

size_t checked_request(long long nbytes) {
    if (nbytes < 0) throw py::value_error("nbytes must be >= 0, got " + std::to_string(nbytes));
    if (static_cast<unsigned long long>(nbytes) > kMaxRequest)
        throw py::value_error("nbytes too large: " + std::to_string(nbytes));
    return static_cast<size_t>(nbytes);
}

// Calls a slab hook; failures on the free path cannot propagate (it runs from
// destructors), so they are reported like exceptions in __del__.
void call_free_hook(const py::object& hook, void* slab, size_t capacity) {
    if (hook.is_none() || !Py_IsInitialized()) return;
    try {
        hook(reinterpret_cast<uintptr_t>(slab), capacity);
    } catch (py::error_already_set& err) {
        err.discard_as_unraisable("naiad.ext._host_buffers on_free_slab hook");
    }
}

// Shared by the pool object and every buffer it handed out, so buffers may
// outlive the Python pool object.  Hooks are py::objects: the last reference
// must be dropped with the GIL held, which every current path (Python dealloc)
// does.
class PoolCore {
public:
    PoolCore(size_t alignment, size_t max_cached_bytes, py::object on_new, py::object on_free)
        : alignment_(alignment),
          max_cached_bytes_(max_cached_bytes),
          on_new_slab_(std::move(on_new)),
          on_free_slab_(std::move(on_free)) {}

    PoolCore(const PoolCore&) = delete;
    PoolCore& operator=(const PoolCore&) = delete;

    ~PoolCore() { trim(); }

    size_t alignment() const { return alignment_; }
    size_t max_cached_bytes() const { return max_cached_bytes_; }

    // Returns a slab of exactly `capacity` bytes (a size class): cached or new.
    void* take(size_t capacity) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = free_.find(capacity);
            if (it != free_.end() && !it->second.empty()) {
                void* slab = it->second.back();
                it->second.pop_back();
                bytes_cached_ -= capacity;
                bytes_in_use_ += capacity;
                ++reuses_;
                return slab;
            }
        }
        void* slab = nullptr;
        if (posix_memalign(&slab, alignment_, capacity) != 0 || slab == nullptr) throw std::bad_alloc();
        if (!on_new_slab_.is_none()) {
            try {
                on_new_slab_(reinterpret_cast<uintptr_t>(slab), capacity);
            } catch (...) {
                std::free(slab);
                throw;
            }
        }
        std::lock_guard<std::mutex> lock(mu_);
        ++allocations_;
        bytes_in_use_ += capacity;
        return slab;
    }

    // Takes a slab back: cached for reuse, or freed if the cache is full.
    void give_back(void* slab, size_t capacity) noexcept {
        {
            std::lock_guard<std::mutex> lock(mu_);
            ++releases_;
            bytes_in_use_ -= capacity;
            if (bytes_cached_ + capacity <= max_cached_bytes_) {
                try {
                    free_[capacity].push_back(slab);
                    bytes_cached_ += capacity;
                    return;
                } catch (const std::bad_alloc&) {
                    // No room to remember it: free it instead.
                }
            }
            ++frees_;
        }
        free_slab(slab, capacity);
    }

    // Frees every cached slab; returns the bytes freed.
    size_t trim() noexcept {
        std::vector<std::pair<void*, size_t>> doomed;
        size_t freed = 0;
        {
            std::lock_guard<std::mutex> lock(mu_);
            for (auto& [capacity, slabs] : free_) {
                for (void* slab : slabs) doomed.emplace_back(slab, capacity);
                freed += capacity * slabs.size();
            }
            free_.clear();
            bytes_cached_ = 0;
            frees_ += doomed.size();
        }
        for (auto& [slab, capacity] : doomed) free_slab(slab, capacity);
        return freed;
    }

    py::dict stats() {
        std::lock_guard<std::mutex> lock(mu_);
        py::dict d;
        d["bytes_in_use"] = bytes_in_use_;
        d["bytes_cached"] = bytes_cached_;
        d["allocations"] = allocations_;
        d["reuses"] = reuses_;
        d["releases"] = releases_;
        d["frees"] = frees_;
        return d;
    }

private:
    void free_slab(void* slab, size_t capacity) noexcept {
        call_free_hook(on_free_slab_, slab, capacity);
        std::free(slab);
    }

    const size_t alignment_;
    const size_t max_cached_bytes_;
    const py::object on_new_slab_;
    const py::object on_free_slab_;

    std::mutex mu_;
    std::unordered_map<size_t, std::vector<void*>> free_;  // capacity -> cached slabs
    size_t bytes_in_use_ = 0;
    size_t bytes_cached_ = 0;
    size_t allocations_ = 0;
    size_t reuses_ = 0;
    size_t releases_ = 0;
    size_t frees_ = 0;
};

// One leased slab.  All Python-facing methods run with the GIL held, which is
// what serialises `exports_` and `slab_`.
class HostBuffer {
public:
    HostBuffer(std::shared_ptr<PoolCore> pool, size_t nbytes)
        : pool_(std::move(pool)), nbytes_(nbytes), capacity_(size_class(nbytes)) {
        slab_ = pool_->take(capacity_);
    }

    HostBuffer(const HostBuffer&) = delete;
    HostBuffer& operator=(const HostBuffer&) = delete;

    // Reached only when no export is alive: each export holds a reference.
    ~HostBuffer() { return_slab(); }

    size_t nbytes() const { return nbytes_; }
    size_t capacity() const { return capacity_; }
    bool released() const { return slab_ == nullptr; }

    uintptr_t address() const {
        check_live();
        return reinterpret_cast<uintptr_t>(slab_);
    }

    void release() {
        if (slab_ == nullptr) return;
        if (exports_ > 0)
            throw py::buffer_error("cannot release a HostBuffer while " + std::to_string(exports_) +
                                   " export(s) of it (memoryview/ndarray) are alive");
        return_slab();
    }

    // Context-manager exit: while an exception propagates, views in the traceback
    // keep exports alive; raising BufferError then would mask the real error, so
    // the slab is left to return when the buffer is garbage collected.
    void exit(const py::object& exc_type) {
        if (exports_ > 0 && !exc_type.is_none()) return;
        release();
    }

    std::string repr() const {
        if (slab_ == nullptr) return "<HostBuffer released>";
        char addr[32];
        std::snprintf(addr, sizeof addr, "%#zx", reinterpret_cast<size_t>(slab_));
        return "<HostBuffer nbytes=" + std::to_string(nbytes_) + " capacity=" + std::to_string(capacity_) +
               " address=" + addr + ">";
    }

    int get_buffer(PyObject* owner, Py_buffer* view, int flags) {
        if (slab_ == nullptr) {
            PyErr_SetString(PyExc_ValueError, "operation on a released HostBuffer");
            view->obj = nullptr;
            return -1;
        }
        if (PyBuffer_FillInfo(view, owner, slab_, static_cast<Py_ssize_t>(nbytes_), 0, flags) < 0) return -1;
        ++exports_;
        return 0;
    }

    void release_buffer() { --exports_; }

private:
    void check_live() const {
        if (slab_ == nullptr) throw py::value_error("operation on a released HostBuffer");
    }

    void return_slab() noexcept {
        if (slab_ == nullptr) return;
        void* slab = slab_;
        slab_ = nullptr;
        pool_->give_back(slab, capacity_);
        pool_.reset();
    }

    std::shared_ptr<PoolCore> pool_;
    void* slab_ = nullptr;
    const size_t nbytes_;
    const size_t capacity_;
    Py_ssize_t exports_ = 0;
};

class HostBufferPool {
public:
    HostBufferPool(long long alignment, long long max_cached_bytes, py::object on_new, py::object on_free) {
        if (alignment < 1 || static_cast<size_t>(alignment) > kMaxAlignment || (alignment & (alignment - 1)) != 0)
            throw py::value_error("alignment must be a power of two in [1, 1 MiB], got " + std::to_string(alignment));
        if (max_cached_bytes < 0)
            throw py::value_error("max_cached_bytes must be >= 0, got " + std::to_string(max_cached_bytes));
        check_hook(on_new, "on_new_slab");
        check_hook(on_free, "on_free_slab");
        requested_alignment_ = static_cast<size_t>(alignment);
        // posix_memalign needs a multiple of sizeof(void*); a stronger alignment satisfies the weaker.
        size_t effective = std::max(requested_alignment_, sizeof(void*));
        core_ = std::make_shared<PoolCore>(effective, static_cast<size_t>(max_cached_bytes), std::move(on_new),
                                           std::move(on_free));
    }

    std::unique_ptr<HostBuffer> acquire(long long nbytes) {
        return std::make_unique<HostBuffer>(core_, checked_request(nbytes));
    }

    size_t alignment() const { return requested_alignment_; }
    size_t max_cached_bytes() const { return core_->max_cached_bytes(); }
    py::dict stats() { return core_->stats(); }
    size_t trim() { return core_->trim(); }

private:
    static void check_hook(const py::object& hook, const char* name) {
        if (!hook.is_none() && !PyCallable_Check(hook.ptr()))
            throw py::type_error(std::string(name) + " must be callable or None");
    }

    size_t requested_alignment_ = 0;
    std::shared_ptr<PoolCore> core_;
};

// Buffer-protocol slots, installed over pybind11's so that exports are counted.
int host_buffer_getbuffer(PyObject* self, Py_buffer* view, int flags) {
    HostBuffer* buffer;
    try {
        buffer = py::cast<HostBuffer*>(py::handle(self));
    } catch (...) {
        PyErr_SetString(PyExc_TypeError, "not a HostBuffer");
        view->obj = nullptr;
        return -1;
    }
    return buffer->get_buffer(self, view, flags);
}

void host_buffer_releasebuffer(PyObject* self, Py_buffer* /*view*/) {
    try {
        py::cast<HostBuffer*>(py::handle(self))->release_buffer();
    } catch (...) {
        // Cannot happen for an object that exported successfully; never throw into CPython.
    }
}

}  // namespace

PYBIND11_MODULE(_host_buffers, m) {
    m.doc() = "Aligned, reusable host staging buffers (see host_buffers.pyi).";

    m.def("size_class", [](long long nbytes) { return size_class(checked_request(nbytes)); }, py::arg("nbytes"),
          "The capacity a request of `nbytes` is rounded up to.");

    auto buffer_cls =
        py::class_<HostBuffer>(m, "HostBuffer", py::buffer_protocol(),
                               "A leased, aligned host buffer: writable 1-D uint8 buffer protocol.")
            .def_property_readonly("nbytes", &HostBuffer::nbytes)
            .def_property_readonly("capacity", &HostBuffer::capacity)
            .def_property_readonly("address", &HostBuffer::address)
            .def_property_readonly("released", &HostBuffer::released)
            .def("release", &HostBuffer::release)
            .def("__enter__", [](py::object self) { return self; })
            .def("__exit__",
                 [](HostBuffer& self, py::object exc_type, py::object, py::object) { self.exit(exc_type); })
            .def("__repr__", &HostBuffer::repr);
    // py::buffer_protocol() gave the type its own PyBufferProcs; point them at ours.
    // (On Python >= 3.12 an explicit HostBuffer.__buffer__() call still reaches
    // pybind11's slot and fails with BufferError; memoryview(), numpy and every
    // C consumer use the slots below.)
    auto* type = reinterpret_cast<PyTypeObject*>(buffer_cls.ptr());
    type->tp_as_buffer->bf_getbuffer = host_buffer_getbuffer;
    type->tp_as_buffer->bf_releasebuffer = host_buffer_releasebuffer;
    PyType_Modified(type);

    py::class_<HostBufferPool>(m, "HostBufferPool", "Pool of aligned host buffers, reused by size class.")
        .def(py::init<long long, long long, py::object, py::object>(), py::arg("alignment") = 64,
             py::arg("max_cached_bytes") = 256LL << 20, py::kw_only(), py::arg("on_new_slab") = py::none(),
             py::arg("on_free_slab") = py::none())
        .def("acquire", &HostBufferPool::acquire, py::arg("nbytes"))
        .def("stats", &HostBufferPool::stats)
        .def("trim", &HostBufferPool::trim)
        .def_property_readonly("alignment", &HostBufferPool::alignment)
        .def_property_readonly("max_cached_bytes", &HostBufferPool::max_cached_bytes);
}
