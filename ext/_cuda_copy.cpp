// naiad.ext._cuda_copy: the native half of the CUDA path (the design card's "pinned-memory
// copies and CUDA stream execution"). Streams, events, page-locking of host buffers,
// host<->device copies and the batch gather into a pinned staging buffer, with the GIL
// released around every copy and wait.
//
// The CUDA runtime is opened with dlopen on first use, never linked: the module imports on
// machines without CUDA (probe() then says why), it picks up whichever libcudart the
// process can find (the toolkit's, or the one a `nvidia-cuda-runtime` wheel or torch
// brings), and importing it never initialises CUDA (a process that forks after
// initialising CUDA breaks its children). Function types come from the toolkit's header
// via decltype, so no CUDA signature is written here by hand.

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

// ------------------------------------------------------------------ the runtime, opened late --

struct Runtime {
#define NAIAD_CUDA_FN(name) decltype(&::name) name = nullptr;
    NAIAD_CUDA_FN(cudaGetDeviceCount)
    NAIAD_CUDA_FN(cudaSetDevice)
    NAIAD_CUDA_FN(cudaGetErrorName)
    NAIAD_CUDA_FN(cudaStreamCreateWithFlags)
    NAIAD_CUDA_FN(cudaStreamDestroy)
    NAIAD_CUDA_FN(cudaStreamSynchronize)
    NAIAD_CUDA_FN(cudaEventCreateWithFlags)
    NAIAD_CUDA_FN(cudaEventRecord)
    NAIAD_CUDA_FN(cudaEventSynchronize)
    NAIAD_CUDA_FN(cudaEventQuery)
    NAIAD_CUDA_FN(cudaEventDestroy)
    NAIAD_CUDA_FN(cudaEventElapsedTime)
    NAIAD_CUDA_FN(cudaMemcpyAsync)
    NAIAD_CUDA_FN(cudaMemcpy)
    NAIAD_CUDA_FN(cudaMalloc)
    NAIAD_CUDA_FN(cudaFree)
    NAIAD_CUDA_FN(cudaHostRegister)
    NAIAD_CUDA_FN(cudaHostUnregister)
    NAIAD_CUDA_FN(cudaMallocHost)
    NAIAD_CUDA_FN(cudaFreeHost)
#undef NAIAD_CUDA_FN
    void* library = nullptr;
    int device_count = 0;
    std::string why = "not probed";
    std::string path;
};

std::once_flag g_once;
Runtime g_rt;

// Where a libcudart may be: NAIAD_CUDART names one; then the loader's search path.
const char* kCandidates[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"};

template <typename F>
bool resolve(void* lib, const char* name, F& slot) {
    slot = reinterpret_cast<F>(dlsym(lib, name));
    return slot != nullptr;
}

void open_runtime() {
    Runtime& rt = g_rt;
    std::vector<std::string> candidates;
    if (const char* forced = std::getenv("NAIAD_CUDART")) candidates.emplace_back(forced);
    for (const char* c : kCandidates) candidates.emplace_back(c);
    for (const std::string& c : candidates) {
        rt.library = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (rt.library) {
            rt.path = c;
            break;
        }
    }
    if (!rt.library) {
        rt.why = "no CUDA runtime library (libcudart) could be loaded";
        return;
    }
    bool ok = true;
#define NAIAD_CUDA_RESOLVE(name) ok = resolve(rt.library, #name, rt.name) && ok;
    NAIAD_CUDA_RESOLVE(cudaGetDeviceCount)
    NAIAD_CUDA_RESOLVE(cudaSetDevice)
    NAIAD_CUDA_RESOLVE(cudaGetErrorName)
    NAIAD_CUDA_RESOLVE(cudaStreamCreateWithFlags)
    NAIAD_CUDA_RESOLVE(cudaStreamDestroy)
    NAIAD_CUDA_RESOLVE(cudaStreamSynchronize)
    NAIAD_CUDA_RESOLVE(cudaEventCreateWithFlags)
    NAIAD_CUDA_RESOLVE(cudaEventRecord)
    NAIAD_CUDA_RESOLVE(cudaEventSynchronize)
    NAIAD_CUDA_RESOLVE(cudaEventQuery)
    NAIAD_CUDA_RESOLVE(cudaEventDestroy)
    NAIAD_CUDA_RESOLVE(cudaEventElapsedTime)
    NAIAD_CUDA_RESOLVE(cudaMemcpyAsync)
    NAIAD_CUDA_RESOLVE(cudaMemcpy)
    NAIAD_CUDA_RESOLVE(cudaMalloc)
    NAIAD_CUDA_RESOLVE(cudaFree)
    NAIAD_CUDA_RESOLVE(cudaHostRegister)
    NAIAD_CUDA_RESOLVE(cudaHostUnregister)
    NAIAD_CUDA_RESOLVE(cudaMallocHost)
    NAIAD_CUDA_RESOLVE(cudaFreeHost)
#undef NAIAD_CUDA_RESOLVE
    if (!ok) {
        rt.why = rt.path + " lacks a CUDA runtime function naiad needs";
        return;
    }
    int count = 0;
    cudaError_t err = rt.cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        rt.why = std::string("no CUDA device (") + (err != cudaSuccess ? rt.cudaGetErrorName(err) : "0 devices") + ")";
        return;
    }
    rt.device_count = count;
    rt.why.clear();
}

Runtime& runtime() {
    std::call_once(g_once, open_runtime);
    return g_rt;
}

// Every entry point but probe() needs a usable device.
Runtime& require(const char* what) {
    Runtime& rt = runtime();
    if (rt.device_count == 0)
        throw std::runtime_error(std::string(what) + " needs CUDA, which is not available: " + rt.why);
    return rt;
}

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("CUDA error in ") + what + ": " + runtime().cudaGetErrorName(err));
}

// ------------------------------------------------------------------ host buffers --

struct HostView {
    char* data;
    size_t nbytes;
};

HostView host_view(const py::buffer& buffer, bool writable) {
    py::buffer_info info = buffer.request(writable);
    // A contiguous buffer of any item type: check that strides are C-order dense.
    ssize_t expected = info.itemsize;
    for (ssize_t i = info.ndim - 1; i >= 0; --i) {
        if (info.shape[i] > 1 && info.strides[i] != expected)
            throw std::invalid_argument("host buffer must be C-contiguous");
        expected *= info.shape[i];
    }
    return {static_cast<char*>(info.ptr), static_cast<size_t>(info.size) * static_cast<size_t>(info.itemsize)};
}

size_t pick_size(size_t available, int64_t nbytes) {
    if (nbytes < 0) return available;
    if (static_cast<size_t>(nbytes) > available)
        throw std::invalid_argument("nbytes (" + std::to_string(nbytes) + ") exceeds the host buffer (" +
                                    std::to_string(available) + " bytes)");
    return static_cast<size_t>(nbytes);
}

cudaStream_t as_stream(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// ------------------------------------------------------------------ streams and events --

class Stream {
public:
    explicit Stream(int device) : device_(device) {
        Runtime& rt = require("a CUDA stream");
        check(rt.cudaSetDevice(device), "cudaSetDevice");
        check(rt.cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    }
    ~Stream() { close(); }
    uintptr_t handle() const { return reinterpret_cast<uintptr_t>(stream_); }
    int device() const { return device_; }
    void synchronize() {
        cudaStream_t s = live();
        cudaError_t err;
        {
            py::gil_scoped_release nogil;
            err = g_rt.cudaStreamSynchronize(s);
        }
        check(err, "cudaStreamSynchronize");
    }
    void close() {
        if (stream_) {
            g_rt.cudaStreamDestroy(stream_);
            stream_ = nullptr;
        }
    }
    cudaStream_t live() const {
        if (!stream_) throw std::runtime_error("the CUDA stream is closed");
        return stream_;
    }

private:
    int device_;
    cudaStream_t stream_ = nullptr;
};

class Event {
public:
    explicit Event(bool blocking, bool timing) {
        Runtime& rt = require("a CUDA event");
        unsigned flags = (timing ? 0u : cudaEventDisableTiming) | (blocking ? cudaEventBlockingSync : 0u);
        check(rt.cudaEventCreateWithFlags(&event_, flags), "cudaEventCreateWithFlags");
    }
    ~Event() { close(); }
    void record(uintptr_t stream) { check(g_rt.cudaEventRecord(live(), as_stream(stream)), "cudaEventRecord"); }
    void synchronize() {
        cudaEvent_t e = live();
        cudaError_t err;
        {
            py::gil_scoped_release nogil;
            err = g_rt.cudaEventSynchronize(e);
        }
        check(err, "cudaEventSynchronize");
    }
    bool query() {
        cudaError_t err = g_rt.cudaEventQuery(live());
        if (err == cudaErrorNotReady) return false;
        check(err, "cudaEventQuery");
        return true;
    }
    float elapsed_ms(const Event& start) const {
        float ms = 0;
        check(g_rt.cudaEventElapsedTime(&ms, start.live(), live()), "cudaEventElapsedTime");
        return ms;
    }
    void close() {
        if (event_) {
            g_rt.cudaEventDestroy(event_);
            event_ = nullptr;
        }
    }
    cudaEvent_t live() const {
        if (!event_) throw std::runtime_error("the CUDA event is closed");
        return event_;
    }

private:
    cudaEvent_t event_ = nullptr;
};

// ------------------------------------------------------------------ copies --

void copy_async(uintptr_t dst, uintptr_t src, size_t nbytes, cudaMemcpyKind kind, uintptr_t stream, const char* what) {
    if (!nbytes) return;
    Runtime& rt = require(what);
    cudaError_t err;
    {
        py::gil_scoped_release nogil;
        err = rt.cudaMemcpyAsync(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), nbytes, kind,
                                 as_stream(stream));
    }
    check(err, what);
}

void copy_h2d(uintptr_t dst, const py::buffer& src, uintptr_t stream, int64_t nbytes) {
    HostView v = host_view(src, false);
    copy_async(dst, reinterpret_cast<uintptr_t>(v.data), pick_size(v.nbytes, nbytes), cudaMemcpyHostToDevice, stream,
               "cudaMemcpyAsync(host to device)");
}

void copy_d2h(const py::buffer& dst, uintptr_t src, uintptr_t stream, int64_t nbytes) {
    HostView v = host_view(dst, true);
    copy_async(reinterpret_cast<uintptr_t>(v.data), src, pick_size(v.nbytes, nbytes), cudaMemcpyDeviceToHost, stream,
               "cudaMemcpyAsync(device to host)");
}

void copy_d2d(uintptr_t dst, uintptr_t src, size_t nbytes, uintptr_t stream) {
    copy_async(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream, "cudaMemcpyAsync(device to device)");
}

// Gather the requests of a batch, back to back, into one host buffer (a pinned staging
// slab): one memcpy per request without the GIL. Returns each request's offset and the
// total. Needs no GPU.
std::vector<size_t> gather_into(const HostView& out, const py::list& sources, size_t& total) {
    std::vector<HostView> views;
    views.reserve(sources.size());
    total = 0;
    for (const py::handle& s : sources) {
        views.push_back(host_view(py::reinterpret_borrow<py::buffer>(s), false));
        total += views.back().nbytes;
    }
    if (total > out.nbytes)
        throw std::invalid_argument("the batch (" + std::to_string(total) + " bytes) does not fit the staging buffer (" +
                                    std::to_string(out.nbytes) + " bytes)");
    std::vector<size_t> offsets;
    offsets.reserve(views.size());
    py::gil_scoped_release nogil;
    size_t at = 0;
    for (const HostView& v : views) {
        offsets.push_back(at);
        std::memcpy(out.data + at, v.data, v.nbytes);
        at += v.nbytes;
    }
    return offsets;
}

std::vector<size_t> gather(const py::buffer& dst, const py::list& sources) {
    size_t total = 0;
    return gather_into(host_view(dst, true), sources, total);
}

// The batch gather and its host-to-device copy in one call: sources -> staging (pinned) ->
// device, the copy enqueued on `stream`. The caller keeps `staging` alive until the stream
// has passed the copy (an Event recorded after it says when).
std::vector<size_t> gather_to_device(uintptr_t dst, const py::buffer& staging, const py::list& sources,
                                     uintptr_t stream) {
    HostView out = host_view(staging, true);
    size_t total = 0;
    std::vector<size_t> offsets = gather_into(out, sources, total);
    copy_async(dst, reinterpret_cast<uintptr_t>(out.data), total, cudaMemcpyHostToDevice, stream,
               "cudaMemcpyAsync(host to device)");
    return offsets;
}

// Page-lock an existing host allocation (a HostBufferPool slab) so copies from it are async.
void pin(uintptr_t address, size_t nbytes) {
    check(require("page-locking host memory").cudaHostRegister(reinterpret_cast<void*>(address), nbytes,
                                                                cudaHostRegisterDefault),
          "cudaHostRegister");
}

void unpin(uintptr_t address) {
    check(require("page-locking host memory").cudaHostUnregister(reinterpret_cast<void*>(address)),
          "cudaHostUnregister");
}

uintptr_t device_alloc(size_t nbytes, int device) {
    Runtime& rt = require("device memory");
    check(rt.cudaSetDevice(device), "cudaSetDevice");
    void* p = nullptr;
    check(rt.cudaMalloc(&p, nbytes ? nbytes : 1), "cudaMalloc");
    return reinterpret_cast<uintptr_t>(p);
}

void device_free(uintptr_t ptr) {
    if (ptr) check(require("device memory").cudaFree(reinterpret_cast<void*>(ptr)), "cudaFree");
}

// Copy bandwidth, GB/s, for the bench: pinned buffers, `iters` copies of `nbytes` each way,
// (a) cudaMemcpyAsync on a non-blocking stream timed by events — naiad's path — and
// (b) plain cudaMemcpy on the same buffers, timed on the host — the runtime's own figure.
py::dict bandwidth(size_t nbytes, int iters, int device) {
    Runtime& rt = require("the copy bandwidth bench");
    check(rt.cudaSetDevice(device), "cudaSetDevice");
    void* host = nullptr;
    void* dev = nullptr;
    check(rt.cudaMallocHost(&host, nbytes), "cudaMallocHost");
    check(rt.cudaMalloc(&dev, nbytes), "cudaMalloc");
    std::memset(host, 1, nbytes);
    double gb = static_cast<double>(nbytes) * iters / 1e9;
    py::dict out;
    {
        Stream stream(device);
        Event start(true, true), stop(true, true);
        for (int dir = 0; dir < 2; ++dir) {
            cudaMemcpyKind kind = dir == 0 ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
            void* d = dir == 0 ? dev : host;
            void* s = dir == 0 ? host : dev;
            check(rt.cudaMemcpy(d, s, nbytes, kind), "cudaMemcpy (warm-up)");
            // naiad's path: async copies on its stream.
            check(rt.cudaEventRecord(start.live(), stream.live()), "cudaEventRecord");
            for (int i = 0; i < iters; ++i)
                check(rt.cudaMemcpyAsync(d, s, nbytes, kind, stream.live()), "cudaMemcpyAsync");
            check(rt.cudaEventRecord(stop.live(), stream.live()), "cudaEventRecord");
            stop.synchronize();
            double async_gbps = gb / (stop.elapsed_ms(start) / 1e3);
            // The runtime's own synchronous copy on the same buffers.
            auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < iters; ++i) check(rt.cudaMemcpy(d, s, nbytes, kind), "cudaMemcpy");
            double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const char* key = dir == 0 ? "h2d" : "d2h";
            out[py::str(std::string(key) + "_naiad_gbps")] = async_gbps;
            out[py::str(std::string(key) + "_cudamemcpy_gbps")] = gb / secs;
        }
    }
    rt.cudaFree(dev);
    rt.cudaFreeHost(host);
    out["bytes"] = nbytes;
    out["iters"] = iters;
    return out;
}

py::tuple probe() {
    Runtime& rt = runtime();
    return py::make_tuple(rt.device_count, rt.why, rt.path);
}

}  // namespace

PYBIND11_MODULE(_cuda_copy, m) {
    m.doc() = "Native CUDA streams, events, pinned copies and batch gather (libcudart opened at first use).";
    m.def("probe", &probe, "(device_count, why_not, library): opens the CUDA runtime once; never raises");
    py::class_<Stream>(m, "Stream")
        .def(py::init<int>(), py::arg("device") = 0)
        .def_property_readonly("handle", &Stream::handle)
        .def_property_readonly("device", &Stream::device)
        .def("synchronize", &Stream::synchronize)
        .def("close", &Stream::close);
    py::class_<Event>(m, "Event")
        .def(py::init<bool, bool>(), py::arg("blocking") = true, py::arg("timing") = false)
        .def("record", &Event::record, py::arg("stream"))
        .def("synchronize", &Event::synchronize)
        .def("query", &Event::query)
        .def("elapsed_ms", &Event::elapsed_ms, py::arg("start"))
        .def("close", &Event::close);
    m.def("copy_h2d", &copy_h2d, py::arg("dst"), py::arg("src"), py::arg("stream"), py::arg("nbytes") = -1);
    m.def("copy_d2h", &copy_d2h, py::arg("dst"), py::arg("src"), py::arg("stream"), py::arg("nbytes") = -1);
    m.def("copy_d2d", &copy_d2d, py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("stream"));
    m.def("gather", &gather, py::arg("dst"), py::arg("sources"));
    m.def("gather_to_device", &gather_to_device, py::arg("dst"), py::arg("staging"), py::arg("sources"),
          py::arg("stream"));
    m.def("pin", &pin, py::arg("address"), py::arg("nbytes"));
    m.def("unpin", &unpin, py::arg("address"));
    m.def("device_alloc", &device_alloc, py::arg("nbytes"), py::arg("device") = 0);
    m.def("device_free", &device_free, py::arg("ptr"));
    m.def("bandwidth", &bandwidth, py::arg("nbytes"), py::arg("iters") = 20, py::arg("device") = 0);
}
