// naiad.ext._native_http: the HTTP/1.1 data plane on its own epoll loop.
//
// One native thread accepts connections, reads and frames requests (llhttp, through
// `frontend/http1_framer.h`: request line, headers, Content-Length or chunked bodies,
// keep-alive; Expect: 100-continue here), and writes replies. Each complete request reaches Python through one hand-off queue
// (`frontend/handoff.h`: an eventfd the event loop watches, written once per burst) as
// method, path, headers and the body as a buffer over the bytes received. Python's
// router answers every route; its reply goes back through a second queue whose eventfd
// the native thread polls, and the native thread writes it.
//
// A connection carries one request at a time: bytes of a pipelined next request wait in
// its buffer until the reply to the current one is queued.
//
// Native lanes (frontend/lane.h): a plain `POST /v2/models/<m>[/versions/<v>]/infer`
// for a model version that has a lane, and that the lane's schema certainly accepts
// (frontend/http_lane.h), never reaches Python: the native thread hands it to the lane
// and the lane's answer is encoded natively (on the Python loop's thread, where the
// models service completes a batch) and queued for the native thread to write, byte for
// byte the reply the Python path writes. Everything else, and everything while Python
// has lanes off (`set_lanes_enabled`), takes the hand-off queue as before.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "frontend/handoff.h"
#include "frontend/http1_framer.h"
#include "frontend/lane_registry.h"
#ifdef NAIAD_HTTP_LANES  // setup.py defines it where RapidJSON is installed
#include "frontend/http_lane.h"
#endif

namespace py = pybind11;
using naiad_frontend::Handoff;
using naiad_frontend::FramedRequest;
using naiad_frontend::FramerLimits;

namespace {

constexpr size_t kReadChunk = 64 << 10;
// A declared Content-Length reserves at most this much up front; the rest grows as bytes
// arrive (a client that declares 1 GiB and sends nothing must not cost 1 GiB).
constexpr size_t kMaxReserve = 1 << 20;
// Bytes read ahead on a connection while its request is with Python.
constexpr size_t kMaxPipelined = 1 << 20;
// How long accepting pauses when accept() fails for want of descriptors or memory.
constexpr std::chrono::milliseconds kAcceptBackoff{100};

// Method, target, headers, keep-alive and the body as [body_off, +body_len) of `buf` (the
// bytes received, or a chunked body's data).
struct Request : FramedRequest {
  uint64_t conn = 0;
};
using Framer = naiad_frontend::Http1Framer<Request>;

enum OutKind : int { OUT_FULL, OUT_HEAD, OUT_CHUNK, OUT_END };

struct Out {
  uint64_t conn;
  OutKind kind;
  std::string data;
  bool close;
};

struct Conn {
  int fd;
  uint64_t id;
  std::string in;
  std::unique_ptr<Framer> framer;  // frames the requests in `in`
  std::string out;
  size_t out_off = 0;
  bool busy = false;            // a request is with Python
  bool close_after = false;     // close once `out` is written
  bool continue_sent = false;   // 100 Continue sent for the request being read
  bool want_write = false;      // EPOLLOUT registered
  bool peer_done = false;       // the client half-closed: answer what it sent, then close
  bool paused = false;          // not read while a request is with Python and enough is queued
  std::chrono::steady_clock::time_point started;  // the first byte of the request being read
  std::chrono::steady_clock::time_point rate_mark;  // body rate window: since when
  size_t rate_bytes = 0;                            // and how many bytes came in it
  std::chrono::steady_clock::time_point last;
};

const char* reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Request Entity Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

// A reply's status line and headers: head_start, a head_field per header, head_end.
void head_start(std::string& s, int status) {
  s += "HTTP/1.1 ";
  s += std::to_string(status);
  s += ' ';
  s += reason(status);
  s += "\r\n";
}
void head_field(std::string& s, std::string_view key, std::string_view value) {
  s += key;
  s += ": ";
  s += value;
  s += "\r\n";
}
void head_end(std::string& s, long long content_length, bool chunked, bool close) {
  if (chunked) s += "Transfer-Encoding: chunked\r\n";
  else {
    s += "Content-Length: ";
    s += std::to_string(content_length);
    s += "\r\n";
  }
  if (close) s += "Connection: close\r\n";
  s += "\r\n";
}

std::string simple_reply(int status, const std::string& message) {
  std::string body = "{\"error\":\"" + message + "\"}";
  std::string s = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
                  "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                  "\r\nConnection: close\r\n\r\n";
  return s + body;
}

// What a client may take, each from `[services.http]` (0 turns a limit off).
struct Limits {
  size_t max_header_bytes = 64 << 10;  // request line and headers: 431
  size_t max_headers = 100;            // header fields: 431
  size_t max_url_bytes = 16 << 10;     // request target: 414
  double header_timeout = 30.0;        // whole head, from its first byte: 408
  double body_timeout = 30.0;          // body: a window in which at least
  size_t body_min_rate = 1024;         // body_timeout * body_min_rate bytes must come: 408
  size_t max_connections = 10000;      // more are answered 503 and closed
};

// ------------------------------------------------------------------ lanes --

// What the requests handed to lanes share with their Server (which may be gone by the time
// a model answers): where replies go, the error table, the counters.
struct LaneShared {
  std::shared_ptr<Handoff<Out>> outbox;
  std::atomic<bool> stopped{false};  // the server stopped: answers are dropped
  std::atomic<bool> closing{false};  // shutdown began: answers close their connection
  naiad_frontend::LaneCounters counters;
  // ErrorCode -> HTTP status (services/http/errors.status_for, set from Python).
  std::atomic<int> status[8] = {400, 500, 404, 400, 503, 501, 400, 400};

  int status_for(int code) const {
    return code >= 0 && code < 8 ? status[code].load(std::memory_order_relaxed) : 400;
  }
};

using Framed = Request;

// An infer request on a lane: keeps the framed request (the inputs are views over its
// bytes) and writes the answer.
class LaneRequest final : public naiad_lane::Request {
 public:
  LaneRequest(std::shared_ptr<Framed> framed, std::shared_ptr<LaneShared> shared)
      : framed_(std::move(framed)), shared_(std::move(shared)) {
    shared_->counters.inflight.fetch_add(1, std::memory_order_relaxed);
  }
  ~LaneRequest() override { settle(); }

  // On the Python loop's thread, with the GIL: encode the reply as the Python path does
  // (codec.encode_infer + native.py's respond; router.error_response) and queue it.
  void complete(const naiad_lane::Result& r) override {
    LaneShared& sh = *shared_;
    settle();
    sh.counters.served.fetch_add(1, std::memory_order_relaxed);
    if (sh.stopped.load(std::memory_order_relaxed)) return;
    bool close = !framed_->keep_alive || sh.closing.load(std::memory_order_relaxed);
    std::string data;
#ifdef NAIAD_HTTP_LANES
    auto error_reply = [&](int status, const std::string& message) {
      std::string body = naiad_http_lane::error_body(message);
      data.reserve(160 + body.size());
      head_start(data, status);
      head_field(data, "Content-Type", "application/json");
      head_end(data, (long long)body.size(), false, close);
      data += body;
    };
    std::string header, error;
    size_t blobs = 0;
    if (r.error != naiad_lane::kOk) {
      error_reply(sh.status_for(r.error), r.message);
    } else if (!naiad_http_lane::infer_header(r, id, plan, header, blobs, error)) {
      error_reply(sh.status_for(naiad_lane::kInvalidArg), error);
    } else {
      data.reserve(200 + header.size() + blobs);
      head_start(data, 200);
      if (blobs) {
        head_field(data, "Content-Type", "application/octet-stream");
        head_field(data, "Inference-Header-Content-Length", std::to_string(header.size()));
      } else {  // no output bytes: the header alone, as JSON
        head_field(data, "Content-Type", "application/json");
      }
      head_end(data, (long long)(header.size() + blobs), false, close);
      data += header;
      for (auto& o : r.outputs)
        if (o.size && plan.binary(o.name)) data.append(o.data, o.size);
    }
#else
    (void)r;
    data = simple_reply(500, "native lanes not built");
    close = true;
#endif
    sh.outbox->push(Out{framed_->conn, OUT_FULL, std::move(data), close});  // wakes the writer once a burst
  }

 private:
  // No longer in flight (answered, or never taken).
  void settle() {
    if (counted_) {
      counted_ = false;
      shared_->counters.inflight.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  std::shared_ptr<Framed> framed_;
  std::shared_ptr<LaneShared> shared_;
  bool counted_ = true;

 public:
#ifdef NAIAD_HTTP_LANES
  naiad_http_lane::ReplyPlan plan;  // how the answer is written; the JSON inputs' bytes
#endif
};

class Server {
 public:
  Server(const std::string& host, int port, bool reuse_port, size_t max_body, double keepalive_secs,
         Limits limits = Limits())
      : max_body_(max_body), keepalive_(keepalive_secs), lim_(limits) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    std::string service = std::to_string(port);
    int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
    if (rc != 0) throw std::runtime_error("HTTP service cannot resolve " + host + ": " + gai_strerror(rc));
    int err = 0;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) { err = errno; continue; }
      int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
      if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) {
        listen_fd_ = fd;
        break;
      }
      err = errno;
      ::close(fd);
    }
    freeaddrinfo(res);
    if (listen_fd_ < 0)
      throw std::runtime_error("HTTP service cannot listen on " + host + ":" + service + ": " + std::strerror(err));
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    add(listen_fd_, EPOLLIN, kListenTag);
    add(outbox_->fd(), EPOLLIN, kOutboxTag);
    lane_shared_->outbox = outbox_;
    thread_ = std::thread([this] { run(); });
  }

  ~Server() {
    stop(0.0);
    if (ep_ >= 0) ::close(ep_);
  }

  int port() const { return port_; }
  int fd() const { return inbox_.fd(); }
  std::vector<std::shared_ptr<Request>> take() { return inbox_.take(); }

  // Replies are queued quietly; Python calls flush() once per event-loop iteration.
  void post(Out o) {
    if (stopped_.load()) return;
    outbox_->push_quiet(std::move(o));
  }
  void flush_replies() { outbox_->flush(); }

  void stop(double grace_secs) {
    if (stopping_.exchange(true)) {
      if (thread_.joinable()) thread_.join();
      return;
    }
    grace_ = grace_secs;
    outbox_->signal();
    if (thread_.joinable()) thread_.join();
    stopped_ = true;
    lane_shared_->stopped = true;
  }

  size_t connections() const { return nconns_.load(); }

  // Stop accepting: the listening socket closes; open connections are served on (Triton's
  // HTTPServer::Stop refuses new connections while it waits for the open ones).
  void close_listener() {
    refuse_new_ = true;
    lane_shared_->closing = true;
    outbox_->signal();
  }

  // ---------------------------------------------------------------- lanes --

  naiad_frontend::LaneRegistry& lanes() { return lanes_; }
  LaneShared& lane_shared() { return *lane_shared_; }
  static constexpr bool lanes_supported() {
#ifdef NAIAD_HTTP_LANES
    return true;
#else
    return false;
#endif
  }

 private:
  static constexpr uint64_t kListenTag = ~uint64_t(0);
  static constexpr uint64_t kOutboxTag = ~uint64_t(0) - 1;

  void add(int fd, uint32_t events, uint64_t tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
  void mod(Conn& c, bool want_write) {
    if (c.want_write == want_write) return;
    c.want_write = want_write;
    rearm(c);
  }
  // A half-closed peer is not watched for reading: its EOF would be reported on every wait.
  void rearm(Conn& c) {
    epoll_event ev{};
    ev.events = (c.peer_done || c.paused ? 0 : EPOLLIN | EPOLLRDHUP) | (c.want_write ? EPOLLOUT : 0);
    ev.data.u64 = c.id;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
  }

  void run() {
    std::vector<epoll_event> events(256);
    auto last_sweep = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point deadline{};
    bool draining = false;
    for (;;) {
      if ((refuse_new_.load() || stopping_.load()) && listen_fd_ >= 0) {
        epoll_ctl(ep_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        ::close(listen_fd_);
        listen_fd_ = -1;
      }
      if (stopping_.load() && !draining) {
        draining = true;
        deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(grace_ * 1000));
      }
      if (draining) {
        // Idle connections close now; busy ones once their reply is written.
        std::vector<uint64_t> idle;
        for (auto& kv : conns_)
          if (!kv.second->busy && kv.second->out.size() == kv.second->out_off) idle.push_back(kv.first);
        for (auto id : idle) close_conn(id);
        if (conns_.empty() || std::chrono::steady_clock::now() >= deadline) break;
      }
      if (accept_paused_ && listen_fd_ >= 0 && std::chrono::steady_clock::now() >= accept_resume_) {
        accept_paused_ = false;
        add(listen_fd_, EPOLLIN, kListenTag);
      }
      int n = epoll_wait(ep_, events.data(), int(events.size()), draining ? 20 : accept_paused_ ? 100 : 1000);
      for (int i = 0; i < n; ++i) {
        uint64_t tag = events[i].data.u64;
        if (tag == kListenTag) {
          accept_all();
        } else if (tag == kOutboxTag) {
          for (auto& o : outbox_->take()) deliver(o);
        } else {
          auto it = conns_.find(tag);
          if (it == conns_.end()) continue;
          uint32_t e = events[i].events;
          if (e & EPOLLOUT) {
            if (!flush(*it->second)) continue;
          }
          if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(tag);
        }
      }
      lane_flush_.flush();  // the lanes this burst submitted to decide once
      auto now = std::chrono::steady_clock::now();
      if (now - last_sweep > std::chrono::milliseconds(250)) {
        last_sweep = now;
        std::vector<uint64_t> idle, slow;
        for (auto& kv : conns_) {
          Conn& c = *kv.second;
          if (c.busy || c.close_after || c.out.size() != c.out_off) continue;
          if (c.in.empty()) {
            if (keepalive_ > 0 && std::chrono::duration<double>(now - c.last).count() > keepalive_)
              idle.push_back(kv.first);
          } else if (too_slow(c, now)) {
            slow.push_back(kv.first);
          }
        }
        for (auto id : idle) close_conn(id);
        for (auto id : slow) {
          auto it = conns_.find(id);
          if (it != conns_.end()) fail(*it->second, 408, "request timed out");
        }
      }
    }
    for (auto& o : outbox_->take()) deliver(o);
    std::vector<uint64_t> all;
    for (auto& kv : conns_) all.push_back(kv.first);
    for (auto id : all) close_conn(id);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
  }

  // A request being read whose head took longer than header_timeout from its first byte, or
  // whose body brought fewer than body_min_rate bytes a second over a body_timeout window
  // (one byte now and then does not keep a connection).
  bool too_slow(Conn& c, std::chrono::steady_clock::time_point now) {
    double since_start = std::chrono::duration<double>(now - c.started).count();
    if (!c.framer->head_done())
      return lim_.header_timeout > 0 && since_start > lim_.header_timeout;
    if (lim_.body_timeout <= 0) return false;
    double window = std::chrono::duration<double>(now - c.rate_mark).count();
    if (window < lim_.body_timeout) return false;
    if (double(c.rate_bytes) < window * double(lim_.body_min_rate) || c.rate_bytes == 0) return true;
    c.rate_mark = now;
    c.rate_bytes = 0;
    return false;
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors or memory: the pending connection stays in the backlog and the
          // listening socket stays readable, so stop watching it for a while instead of
          // spinning; connections already open are served on and free descriptors.
          epoll_ctl(ep_, EPOLL_CTL_DEL, listen_fd_, nullptr);
          accept_paused_ = true;
          accept_resume_ = std::chrono::steady_clock::now() + kAcceptBackoff;
        }
        return;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      c->id = ++next_id_;
      c->last = std::chrono::steady_clock::now();
      c->framer = std::make_unique<Framer>(FramerLimits{lim_.max_header_bytes, lim_.max_headers,
                                                        lim_.max_url_bytes, max_body_});
      if (lim_.max_connections && conns_.size() >= lim_.max_connections) {
        // Over the limit: a best-effort 503 (the socket's buffer is empty), then close.
        std::string reply = simple_reply(503, "too many connections");
        (void)!::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::shutdown(fd, SHUT_WR);
        ::close(fd);
        continue;
      }
      add(fd, EPOLLIN | EPOLLRDHUP, c->id);
      conns_.emplace(c->id, std::move(c));
      nconns_ = conns_.size();
    }
  }

  void close_conn(uint64_t id) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    epoll_ctl(ep_, EPOLL_CTL_DEL, it->second->fd, nullptr);
    ::close(it->second->fd);
    conns_.erase(it);
    nconns_ = conns_.size();
  }

  // Write what is pending; false when the connection was closed.
  bool flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t w = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          mod(c, true);
          return true;
        }
        if (errno == EINTR) continue;
        close_conn(c.id);
        return false;
      }
      c.out_off += size_t(w);
    }
    c.out.clear();
    c.out_off = 0;
    mod(c, false);
    if (c.close_after && !c.busy) {
      close_conn(c.id);
      return false;
    }
    return true;
  }

  void send_now(Conn& c, std::string data) {
    if (c.out.empty()) c.out = std::move(data);
    else c.out += data;
  }

  void deliver(Out& o) {
    auto it = conns_.find(o.conn);
    if (it == conns_.end()) return;  // the client went away
    Conn& c = *it->second;
    send_now(c, std::move(o.data));
    if (o.kind == OUT_FULL || o.kind == OUT_END) {
      c.busy = false;
      c.last = std::chrono::steady_clock::now();
      start_request(c, c.last);
      if (c.paused) {
        c.paused = false;
        rearm(c);
      }
      if (o.close) c.close_after = true;
    }
    uint64_t id = c.id;
    if (!flush(c)) return;
    if (conns_.count(id) && !c.busy && !c.close_after && !c.in.empty()) parse(c);
  }

  void start_request(Conn& c, std::chrono::steady_clock::time_point now) {
    c.started = c.rate_mark = now;
    c.rate_bytes = 0;
  }

  void on_readable(uint64_t id) {
    Conn& c = *conns_[id];
    if (c.in.empty() && !c.busy) start_request(c, std::chrono::steady_clock::now());
    if (c.peer_done) {  // only a hang-up or an error reaches a half-closed connection
      close_conn(id);
      return;
    }
    for (;;) {
      // Into the thread's scratch, then appended: growing `in` by a whole chunk first would
      // zero-fill 64 KiB per read (a std::string cannot grow uninitialised).
      if (rbuf_.size() < kReadChunk) rbuf_.resize(kReadChunk);
      ssize_t r = ::recv(c.fd, rbuf_.data(), kReadChunk, 0);
      if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) {
          peer_closed(c);
          return;
        }
        close_conn(id);  // a reset or error: a request with Python is answered into the void
        return;
      }
      c.in.append(rbuf_.data(), size_t(r));
      c.rate_bytes += size_t(r);
      if (c.busy && c.in.size() >= kMaxPipelined) {
        // Pipelined bytes wait in the socket until the request with Python is answered.
        c.paused = true;
        rearm(c);
        break;
      }
      if (size_t(r) < kReadChunk) break;
    }
    c.last = std::chrono::steady_clock::now();
    if (c.close_after) c.in.clear();  // nothing after a refused or last request is read
    else if (!c.busy) parse(c);
  }

  // The client sent FIN (a half-close, as `shutdown(SHUT_WR)` after a request does): what it
  // sent is still answered, as Triton does, and the connection closes after that reply.
  void peer_closed(Conn& c) {
    uint64_t id = c.id;
    c.last = std::chrono::steady_clock::now();
    if (c.close_after) c.in.clear();  // nothing after a refused or last request is read
    else if (!c.busy && !c.in.empty()) parse(c);
    if (!conns_.count(id)) return;
    if (!c.busy && c.out.size() == c.out_off) {  // nothing taken and nothing to write
      close_conn(id);
      return;
    }
    c.peer_done = true;
    c.close_after = true;
    rearm(c);
  }

  // Refuse the request being read and close once the reply is out. What the client sent
  // after it is never read as a request; what is already queued is read and dropped so the
  // close is a FIN after the reply rather than a reset that could overtake it.
  void fail(Conn& c, int status, const std::string& message) {
    char sink[16 << 10];
    for (int i = 0; i < 64 && ::recv(c.fd, sink, sizeof sink, 0) > 0; ++i) {
    }
    c.in.clear();
    c.in.shrink_to_fit();
    c.busy = false;
    c.close_after = true;
    send_now(c, simple_reply(status, message));
    flush(c);
  }

  // Frame one request from c.in, if complete, and hand it to Python. Framing follows
  // RFC 9112 strictly (`Http1Framer`): anything ambiguous or malformed is answered with an
  // error and the connection closes, so no byte a client sends is ever read as the start of
  // another request.
  void parse(Conn& c) {
    Framer& f = *c.framer;
    switch (f.feed(c.in)) {
      case Framer::kError:
        fail(c, f.status(), f.error());
        return;
      case Framer::kMore:
        if (!f.head_done()) return;
        if (uint64_t rest = f.body_remaining()) {
          // A declared Content-Length reserves at most kMaxReserve; the rest grows as it comes.
          size_t want = size_t(std::min<uint64_t>(c.in.size() + rest, kMaxReserve));
          if (want > c.in.capacity()) c.in.reserve(want);
        }
        if (f.expect_continue() && !c.continue_sent) {
          c.continue_sent = true;
          send_now(c, "HTTP/1.1 100 Continue\r\n\r\n");
          flush(c);
        }
        return;
      case Framer::kDone:
        break;
    }
    std::shared_ptr<Request> req = f.take();
    req->conn = c.id;
    size_t consumed = f.consumed();
    if (f.chunked()) {  // the chunks' data is in req->buf already
      c.in.erase(0, consumed);
    } else if (consumed == c.in.size()) {  // the usual case: hand the buffer over, no copy
      req->buf = std::move(c.in);
      c.in = std::string();
    } else {
      req->buf.assign(c.in, 0, consumed);
      c.in.erase(0, consumed);
    }
    f.next();
    c.continue_sent = false;
    c.busy = true;
    if (!req->keep_alive) c.close_after = true;
    if (try_lane(req)) return;
    inbox_.push(std::move(req));
  }

  // Hand a framed request to its model's lane when lanes are on, it is a plain
  // infer for a version with a lane, and the lane takes it; false (nothing done) otherwise.
  bool try_lane(const std::shared_ptr<Request>& req) {
#ifdef NAIAD_HTTP_LANES
    if (!lanes_.enabled() || stopping_.load(std::memory_order_relaxed) || req->method != "POST") return false;
    std::string_view model;
    std::string version;
    if (!naiad_http_lane::infer_target(req->target, model, version)) return false;
    naiad_frontend::LanePtr lane = lanes_.find(model, version);
    if (!lane) return false;
    bool binary = false;
    size_t hlen = naiad_http_lane::plain_header_length(req->headers, req->body_len, binary);
    if (!hlen) return false;
    const naiad_lane::Schema& schema = lane->schema();
    auto lr = std::make_unique<LaneRequest>(req, lane_shared_);
    if (!scratch_) scratch_ = std::make_unique<naiad_http_lane::ParseScratch>();
    if (!naiad_http_lane::parse_infer(schema, req->buf.data() + req->body_off, req->body_len, hlen, binary, *lr,
                                      lr->plan, *scratch_) ||
        !naiad_lane::admit(schema, *lr))
      return false;
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lr->arrival_ns = int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    std::unique_ptr<naiad_lane::Request> handed = std::move(lr);
    if (!lane->submit(handed)) return false;  // declined: `handed` still holds it
    lane_flush_.touch(lane);
    return true;
#else
    (void)req;
    return false;
#endif
  }

  int listen_fd_ = -1;
  int port_ = 0;
  int ep_ = -1;
  size_t max_body_;
  Limits lim_;
  bool accept_paused_ = false;  // out of descriptors: the listening socket is not watched
  std::chrono::steady_clock::time_point accept_resume_{};
  double keepalive_;
  double grace_ = 0.0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> refuse_new_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<size_t> nconns_{0};
  uint64_t next_id_ = 0;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::vector<char> rbuf_;  // the native thread's read scratch (kReadChunk)
  Handoff<std::shared_ptr<Request>> inbox_;
  std::shared_ptr<Handoff<Out>> outbox_ = std::make_shared<Handoff<Out>>();
  naiad_frontend::LaneRegistry lanes_;
  std::shared_ptr<LaneShared> lane_shared_ = std::make_shared<LaneShared>();
  naiad_frontend::LaneFlushList lane_flush_;  // the native thread's
#ifdef NAIAD_HTTP_LANES
  std::unique_ptr<naiad_http_lane::ParseScratch> scratch_;  // the native thread's
#endif
  std::thread thread_;
};

// The status line and headers of a reply.
std::string head(int status, py::object headers, long long content_length, bool chunked, bool close) {
  std::string s;
  s.reserve(256);
  head_start(s, status);
  if (!headers.is_none()) {
    for (auto item : headers) {
      py::tuple kv = item.cast<py::tuple>();
      head_field(s, kv[0].cast<std::string>(), kv[1].cast<std::string>());
    }
  }
  head_end(s, content_length, chunked, close);
  return s;
}

}  // namespace

PYBIND11_MODULE(_native_http, m) {
  m.doc() = "naiad's native HTTP/1.1 front end (own epoll loop)";

  py::class_<Request, std::shared_ptr<Request>>(m, "Request", py::buffer_protocol())
      .def_buffer([](Request& r) -> py::buffer_info {
        return py::buffer_info(const_cast<char*>(r.buf.data()) + r.body_off, 1,
                               py::format_descriptor<uint8_t>::format(), 1, {ssize_t(r.body_len)}, {1}, true);
      })
      .def_property_readonly("conn", [](Request& r) { return r.conn; })
      .def_property_readonly("method", [](Request& r) {  // a token (ASCII) by the time it gets here
        return py::reinterpret_steal<py::object>(PyUnicode_DecodeLatin1(r.method.data(), r.method.size(), nullptr));
      })
      .def_property_readonly("target", [](Request& r) {
        return py::reinterpret_steal<py::object>(PyUnicode_DecodeLatin1(r.target.data(), r.target.size(), nullptr));
      })
      .def_property_readonly("keep_alive", [](Request& r) { return r.keep_alive; })
      .def_property_readonly("body_len", [](Request& r) { return r.body_len; })
      .def("headers", [](Request& r) {
        py::list out;
        for (auto& kv : r.headers)
          out.append(py::make_tuple(
              py::reinterpret_steal<py::object>(PyUnicode_DecodeLatin1(kv.first.data(), kv.first.size(), nullptr)),
              py::reinterpret_steal<py::object>(
                  PyUnicode_DecodeLatin1(kv.second.data(), kv.second.size(), nullptr))));
        return out;
      });

  py::class_<Server>(m, "Server")
      .def(py::init([](const std::string& host, int port, bool reuse_port, size_t max_body, double keepalive,
                       size_t max_header_bytes, size_t max_headers, size_t max_url_bytes, double header_timeout,
                       double body_timeout, size_t body_min_rate, size_t max_connections) {
             Limits l{max_header_bytes, max_headers, max_url_bytes, header_timeout, body_timeout, body_min_rate,
                      max_connections};
             return std::make_unique<Server>(host, port, reuse_port, max_body, keepalive, l);
           }),
           py::arg("host"), py::arg("port"), py::arg("reuse_port") = false,
           py::arg("max_body_bytes") = size_t(1) << 30, py::arg("keepalive_secs") = 75.0,
           py::arg("max_header_bytes") = Limits().max_header_bytes, py::arg("max_headers") = Limits().max_headers,
           py::arg("max_url_bytes") = Limits().max_url_bytes, py::arg("header_timeout_secs") = Limits().header_timeout,
           py::arg("body_timeout_secs") = Limits().body_timeout,
           py::arg("body_min_bytes_per_sec") = Limits().body_min_rate,
           py::arg("max_connections") = Limits().max_connections)
      .def_property_readonly("port", &Server::port)
      .def_property_readonly("connections", &Server::connections)
      .def("close_listener", &Server::close_listener, "stop accepting connections; open ones are served on")
      .def("fileno", &Server::fd)
      .def("take", &Server::take, "every request framed since the last call (one eventfd wake-up)")
      .def(
          "respond",
          [](Server& s, uint64_t conn, int status, py::object headers, py::buffer body, bool close) {
            py::buffer_info info = body.request();
            size_t n = size_t(info.size * info.itemsize);
            std::string data = head(status, headers, (long long)n, false, close);
            data.append(static_cast<const char*>(info.ptr), n);
            s.post(Out{conn, OUT_FULL, std::move(data), close});
          },
          py::arg("conn"), py::arg("status"), py::arg("headers"), py::arg("body"), py::arg("close") = false)
      .def("start_chunked",
           [](Server& s, uint64_t conn, int status, py::object headers) {
             s.post(Out{conn, OUT_HEAD, head(status, headers, 0, true, false), false});
           })
      .def("chunk",
           [](Server& s, uint64_t conn, py::buffer body) {
             py::buffer_info info = body.request();
             size_t n = size_t(info.size * info.itemsize);
             if (!n) return;
             char size[32];
             int k = std::snprintf(size, sizeof size, "%zx\r\n", n);
             std::string data(size, size_t(k));
             data.append(static_cast<const char*>(info.ptr), n);
             data += "\r\n";
             s.post(Out{conn, OUT_CHUNK, std::move(data), false});
           })
      .def("end_chunked",
           [](Server& s, uint64_t conn, bool close) { s.post(Out{conn, OUT_END, "0\r\n\r\n", close}); },
           py::arg("conn"), py::arg("close") = false)
      .def("flush", &Server::flush_replies, "wake the native thread for every reply queued since the last flush")
      .def_property_readonly_static("lanes_supported", [](py::object) { return Server::lanes_supported(); },
                                    "built with RapidJSON: plain infer requests can take native lanes")
      .def(
          "set_lane",
          [](Server& s, const std::string& model, const std::string& version, py::object lane) {
            s.lanes().set(model, version, naiad_frontend::lane_from_capsule(lane.ptr()));
          },
          py::arg("model"), py::arg("version"), py::arg("lane"),
          "publish (a naiad.lane capsule) or withdraw (None) the lane of a model version (\"\": the default)")
      .def("clear_lanes", [](Server& s) { s.lanes().clear(); }, "forget every lane")
      .def_property_readonly("lane_count", [](Server& s) { return s.lanes().size(); })
      .def("set_lanes_enabled", [](Server& s, bool on) { s.lanes().set_enabled(on); },
           "the gate: while off, every request takes the Python path")
      .def_property_readonly("lanes_enabled", [](Server& s) { return s.lanes().enabled(); })
      .def(
          "set_error_status",
          [](Server& s, const std::map<int, int>& table) {
            for (auto& kv : table)
              if (kv.first >= 0 && kv.first < 8) s.lane_shared().status[kv.first] = kv.second;
          },
          "the HTTP status of each error code, for lane answers (services/http/errors.status_for)")
      .def_property_readonly("lane_served",
                             [](Server& s) { return s.lane_shared().counters.served.load(); },
                             "requests answered through a lane")
      .def_property_readonly("lane_inflight",
                             [](Server& s) { return s.lane_shared().counters.inflight.load(); },
                             "requests handed to a lane and not answered yet")
      .def("stop", &Server::stop, py::arg("grace_secs") = 0.0, py::call_guard<py::gil_scoped_release>());
}
