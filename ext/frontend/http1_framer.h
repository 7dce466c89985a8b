// naiad_frontend::Http1Framer: HTTP/1.1 request framing on llhttp (the parser of Node.js,
// aiohttp and httptools), fed incrementally from a connection's receive buffer.
//
// llhttp comes from the system at build time (Debian: node-llhttp's sources, compiled by
// setup.py with LLHTTP_STRICT_MODE=1); nothing of it lives in this repository. llhttp frames
// the request line, header fields, Content-Length and chunked bodies, and refuses what
// RFC 9112 calls invalid (non-token methods and header names, duplicate or malformed
// Content-Length, bad chunk sizes and chunk framing, CTLs in values). The checks it leaves to
// its user are here: obs-fold, an empty header name, a request line that is not exactly
// `method SP target SP HTTP/1.x`, transfer codings (a final chunked, once; 501 for codings
// naiad does not implement), and every size limit, each checked before anything is reserved.
//
// One request at a time: the parser pauses at the end of each message, and `next()` resumes
// it once the connection has handed that request over.

#pragma once

extern "C" {
#include <llhttp.h>
}

#include <cctype>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace naiad_frontend {

// What the framer fills in; the data plane's request type derives from it.
struct FramedRequest {
  std::string method, target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string buf;  // the body is [body_off, body_off + body_len): the receive buffer, or the chunks' data
  size_t body_off = 0, body_len = 0;
  bool keep_alive = true;
};

struct FramerLimits {
  size_t max_header_bytes = 64 << 10;  // request line and header fields: 431
  size_t max_headers = 100;            // header fields: 431
  size_t max_url_bytes = 16 << 10;     // request target: 414
  size_t max_body = size_t(1) << 30;   // body: 413
};

template <class Request>
class Http1Framer {
 public:
  enum Result { kMore, kDone, kError };

  explicit Http1Framer(const FramerLimits& limits) : lim_(limits) {
    llhttp_init(&parser_, HTTP_REQUEST, &settings());
    parser_.data = this;
    // Content-Length with chunked: framed by the chunks, and the caller closes the connection
    // after the reply (RFC 9112 §6.3 allows it; Triton serves such requests).
    llhttp_set_lenient_chunked_length(&parser_, 1);
  }
  Http1Framer(const Http1Framer&) = delete;
  Http1Framer& operator=(const Http1Framer&) = delete;

  // Parse what `in` gained since the last call. kDone: a request is complete, `request()`
  // holds it and `consumed()` bytes of `in` carry it (its body is `in[body_off, +body_len)`
  // unless the body was chunked); call `next()` once those bytes are gone from `in`.
  // kError: `status()` and `error()` say how to refuse; the connection must close.
  Result feed(const std::string& in) {
    if (fed_ >= in.size()) return kMore;
    base_ = in.data();
    llhttp_errno_t e = llhttp_execute(&parser_, base_ + fed_, in.size() - fed_);
    if (e == HPE_PAUSED && done_) {
      consumed_ = size_t(llhttp_get_error_pos(&parser_) - base_);
      fed_ = consumed_;
      return kDone;
    }
    fed_ = in.size();
    if (e != HPE_OK) return refuse(e);
    // The buffer starts with this request (the bytes of the ones before were removed).
    if (!head_done_ && lim_.max_header_bytes && in.size() > lim_.max_header_bytes)
      return fail(431, head_too_large());
    return kMore;
  }

  Request& request() { return *req_; }
  std::shared_ptr<Request> take() { return std::move(req_); }
  size_t consumed() const { return consumed_; }
  bool chunked() const { return chunked_; }

  // The request's bytes were removed from the front of the buffer: frame the next one.
  void next() {
    fed_ = 0;
    done_ = false;
    llhttp_resume(&parser_);
  }

  int status() const { return status_; }
  const std::string& error() const { return error_; }
  bool head_done() const { return head_done_; }  // its head is complete
  bool expect_continue() const { return expect_continue_; }
  // Body bytes declared by Content-Length and not yet received (0 otherwise).
  uint64_t body_remaining() const { return head_done_ && !chunked_ ? parser_.content_length : 0; }

 private:
  static Http1Framer& self(llhttp_t* p) { return *static_cast<Http1Framer*>(p->data); }
  size_t off(const char* at) const { return size_t(at - base_); }

  Result fail(int status, std::string why) {
    status_ = status;
    error_ = std::move(why);
    return kError;
  }
  int cb_fail(int status, std::string why) {
    fail(status, std::move(why));
    return HPE_USER;
  }
  std::string head_too_large() const {
    return "request headers exceed the limit of " + std::to_string(lim_.max_header_bytes) + " bytes";
  }
  std::string body_too_large() const {
    return "request body exceeds the limit of " + std::to_string(lim_.max_body) + " bytes";
  }

  // llhttp's own refusals: a size past what 64 bits hold is over any body limit (413); an
  // HTTP/2 preface is an unsupported version (505); the rest are malformed (400).
  Result refuse(llhttp_errno_t e) {
    if (status_) return kError;  // one of ours
    const char* reason = llhttp_get_error_reason(&parser_);
    std::string why = reason ? reason : llhttp_errno_name(e);
    bool overflow = why.find("overflow") != std::string::npos;
    if (overflow && (e == HPE_INVALID_CONTENT_LENGTH || e == HPE_INVALID_CHUNK_SIZE))
      return fail(413, body_too_large());
    if (e == HPE_PAUSED_H2_UPGRADE) return fail(505, "HTTP version not supported");
    return fail(400, "malformed request: " + why);
  }

  // The head's bytes so far, from the first byte of the request line.
  bool head_over(const char* end) const {
    return lim_.max_header_bytes && off(end) - start_ > lim_.max_header_bytes;
  }

  static int on_message_begin(llhttp_t* p) {
    Http1Framer& f = self(p);
    f.req_ = std::make_shared<Request>();
    f.start_ = f.fields_ = 0;
    f.head_done_ = f.chunked_ = f.expect_continue_ = f.in_trailers_ = f.in_field_ = false;
    f.has_te_ = f.has_version_ = false;
    f.codings_.clear();
    f.total_ = 0;
    return 0;
  }
  static int on_method(llhttp_t* p, const char* at, size_t n) {
    Http1Framer& f = self(p);
    if (f.req_->method.empty()) f.start_ = f.off(at);
    f.req_->method.append(at, n);
    f.method_end_ = f.last_end_ = f.off(at) + n;
    return 0;
  }
  static int on_url(llhttp_t* p, const char* at, size_t n) {
    Http1Framer& f = self(p);
    std::string& target = f.req_->target;
    if (target.empty() && f.off(at) != f.method_end_ + 1) return f.cb_fail(400, "malformed request line");
    target.append(at, n);
    f.url_end_ = f.last_end_ = f.off(at) + n;
    if (f.lim_.max_url_bytes && target.size() > f.lim_.max_url_bytes)
      return f.cb_fail(414, "request URL exceeds the limit of " + std::to_string(f.lim_.max_url_bytes) + " bytes");
    return 0;
  }
  static int on_version(llhttp_t* p, const char* at, size_t n) {
    Http1Framer& f = self(p);
    // ` HTTP/` and nothing more between the target and the version.
    if (!f.has_version_ && f.off(at) != f.url_end_ + 6) return f.cb_fail(400, "malformed request line");
    f.has_version_ = true;
    f.version_end_ = f.last_end_ = f.off(at) + n;
    return 0;
  }

  static int on_header_field(llhttp_t* p, const char* at, size_t n) {
    Http1Framer& f = self(p);
    if (!f.in_field_) {
      f.in_field_ = true;
      f.name_.clear();
      f.value_.clear();
      if (!f.in_trailers_ && f.lim_.max_headers && ++f.fields_ > f.lim_.max_headers)
        return f.cb_fail(431, "request has more than " + std::to_string(f.lim_.max_headers) + " header fields");
    }
    f.name_.append(at, n);
    return f.check_size(at + n);
  }
  static int on_header_value(llhttp_t* p, const char* at, size_t n) {
    Http1Framer& f = self(p);
    // A value's bytes right after a line break are a continuation line (llhttp joins them;
    // an empty value comes as an empty span there).
    if (n && f.off(at) > 0 && at[-1] == '\n') return f.cb_fail(400, "obsolete line folding in headers");
    f.value_.append(at, n);
    return f.check_size(at + n);
  }
  int check_size(const char* end) {
    last_end_ = off(end);
    if (in_trailers_) {
      if (off(end) - trailer_start_ > kMaxTrailerBytes) return cb_fail(431, "request trailers too large");
    } else if (head_over(end)) {
      return cb_fail(431, head_too_large());
    }
    return 0;
  }
  static int on_header_field_complete(llhttp_t* p) {
    Http1Framer& f = self(p);
    if (f.name_.empty()) return f.cb_fail(400, "malformed header");
    return 0;
  }
  static int on_header_value_complete(llhttp_t* p) {
    Http1Framer& f = self(p);
    f.in_field_ = false;
    if (f.in_trailers_) return 0;  // trailers are checked by llhttp and dropped
    std::string& v = f.value_;
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
    if (iequals(f.name_, "transfer-encoding")) {
      f.has_te_ = true;
      split_codings(v, f.codings_);
    } else if (iequals(f.name_, "expect")) {
      f.expect_continue_ = icontains(v, "100-continue");
    }
    f.req_->headers.emplace_back(std::move(f.name_), std::move(f.value_));
    f.name_.clear();
    f.value_.clear();
    return 0;
  }

  static int on_headers_complete(llhttp_t* p) {
    Http1Framer& f = self(p);
    f.head_done_ = true;
    f.chunk_line_ = f.last_end_;
    // llhttp takes a bare LF after the version; RFC 9112 §2.2 leaves that to us: refused.
    if (!f.has_version_ || f.base_[f.version_end_] != '\r') return f.cb_fail(400, "malformed request line");
    if (p->http_major != 1) return f.cb_fail(505, "HTTP version not supported");
    bool has_cl = p->flags & F_CONTENT_LENGTH;
    if (f.has_te_) {
      // RFC 9112 §6.1-6.3: TE in HTTP/1.0, or chunked not the final coding (once), leave the
      // body length unknown: 400. Codings before chunked that naiad does not implement: 501.
      if (p->http_minor == 0) return f.cb_fail(400, "Transfer-Encoding in an HTTP/1.0 request");
      size_t nchunked = 0;
      for (auto& coding : f.codings_) nchunked += coding == "chunked";
      if (f.codings_.empty() || f.codings_.back() != "chunked" || nchunked != 1)
        return f.cb_fail(400, "Transfer-Encoding must end in chunked, once");
      if (f.codings_.size() != 1) return f.cb_fail(501, "unsupported transfer coding");
      f.chunked_ = true;
    } else if (has_cl && p->content_length > f.lim_.max_body) {
      return f.cb_fail(413, f.body_too_large());
    }
    f.close_after_ = f.has_te_ && has_cl;  // framed by the chunks; nothing after them is read
    return 0;
  }

  static int on_chunk_header(llhttp_t* p) {
    Http1Framer& f = self(p);
    uint64_t size = p->content_length;
    if (size > f.lim_.max_body - f.total_) return f.cb_fail(413, f.body_too_large());
    f.total_ += size_t(size);
    if (size == 0) {
      f.in_trailers_ = true;
      f.trailer_start_ = f.chunk_line_;
    }
    return 0;
  }
  static int on_chunk_extension(llhttp_t* p, const char* at, size_t n) {
    Http1Framer& f = self(p);
    if (f.off(at + n) - f.chunk_line_ > kMaxTrailerBytes) return f.cb_fail(400, "chunk size line too long");
    return 0;
  }
  static int on_chunk_complete(llhttp_t* p) {
    Http1Framer& f = self(p);
    f.chunk_line_ = f.last_end_;
    return 0;
  }
  static int on_body(llhttp_t* p, const char* at, size_t n) {
    Http1Framer& f = self(p);
    Request& r = *f.req_;
    if (f.chunked_) {
      r.buf.append(at, n);  // grows as bytes arrive: a declared chunk size reserves nothing
    } else if (r.body_len == 0) {
      r.body_off = f.off(at);
    }
    r.body_len += n;
    f.last_end_ = f.off(at) + n + 2;  // a chunk's size line starts after its data's CRLF
    return 0;
  }
  static int on_message_complete(llhttp_t* p) {
    Http1Framer& f = self(p);
    Request& r = *f.req_;
    if (f.chunked_) r.body_off = 0;
    r.keep_alive = llhttp_should_keep_alive(p) && !f.close_after_ && !p->upgrade;
    f.done_ = true;
    f.head_done_ = false;
    return HPE_PAUSED;
  }

  static void split_codings(const std::string& value, std::vector<std::string>& out) {
    size_t start = 0;
    while (start <= value.size()) {
      size_t comma = value.find(',', start);
      if (comma == std::string::npos) comma = value.size();
      size_t b = start, e = comma;
      while (b < e && (value[b] == ' ' || value[b] == '\t')) ++b;
      while (e > b && (value[e - 1] == ' ' || value[e - 1] == '\t')) --e;
      std::string coding(value, b, e - b);
      for (auto& ch : coding) ch = char(std::tolower(static_cast<unsigned char>(ch)));
      if (!coding.empty()) out.push_back(std::move(coding));
      start = comma + 1;
    }
  }
  static bool iequals(const std::string& a, const char* b) {
    return a.size() == std::strlen(b) && strncasecmp(a.data(), b, a.size()) == 0;
  }
  static bool icontains(const std::string& a, const char* token) {
    std::string low(a);
    for (auto& c : low) c = char(std::tolower(static_cast<unsigned char>(c)));
    return low.find(token) != std::string::npos;
  }

  static const llhttp_settings_t& settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_message_begin = on_message_begin;
      s.on_method = on_method;
      s.on_url = on_url;
      s.on_version = on_version;
      s.on_header_field = on_header_field;
      s.on_header_value = on_header_value;
      s.on_header_field_complete = on_header_field_complete;
      s.on_header_value_complete = on_header_value_complete;
      s.on_headers_complete = on_headers_complete;
      s.on_chunk_header = on_chunk_header;
      s.on_chunk_extension_name = on_chunk_extension;
      s.on_chunk_extension_value = on_chunk_extension;
      s.on_chunk_complete = on_chunk_complete;
      s.on_body = on_body;
      s.on_message_complete = on_message_complete;
      return s;
    }();
    return s;
  }

  // A chunk's size line with its extensions, and the trailer section, are bounded too.
  static constexpr size_t kMaxTrailerBytes = 64 << 10;

  FramerLimits lim_;
  llhttp_t parser_{};
  const char* base_ = nullptr;  // the buffer of the current feed(); offsets are into it
  size_t fed_ = 0, consumed_ = 0;
  size_t start_ = 0, method_end_ = 0, url_end_ = 0, version_end_ = 0;
  size_t trailer_start_ = 0, chunk_line_ = 0, last_end_ = 0;
  size_t fields_ = 0, total_ = 0;
  std::shared_ptr<Request> req_;
  std::string name_, value_;
  std::vector<std::string> codings_;
  int status_ = 0;
  std::string error_;
  bool head_done_ = false, done_ = false, chunked_ = false, expect_continue_ = false;
  bool in_trailers_ = false, in_field_ = false, has_te_ = false, has_version_ = false, close_after_ = false;
};

}  // namespace naiad_frontend
