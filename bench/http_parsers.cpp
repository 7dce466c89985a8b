// Framing cost of one tritonclient-like infer request (head + 352-byte binary body with
// Inference-Header-Content-Length) with the two HTTP/1.1 parsers measured for the native front
// end: llhttp (Debian node-llhttp's sources, strict build, as setup.py builds it) and
// picohttpparser (exported by Debian's libh2o; Debian installs no picohttpparser.h, so its
// documented prototypes are declared here). Each parse stores method, target and headers as
// the server does; picohttpparser's side also reads Content-Length, which llhttp does itself.
//
//   apt-get install node-llhttp libh2o-dev
//   L=/usr/share/llhttp I=/usr/share/include/llhttp
//   for f in llhttp api http; do gcc -O3 -DLLHTTP_STRICT_MODE=1 -I$I -c $L/$f.c -o /tmp/$f.o; done
//   g++ -O3 -std=c++17 -I$I bench/http_parsers.cpp /tmp/{llhttp,api,http}.o -lh2o -o /tmp/http_parsers
//   /tmp/http_parsers 1000000
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <strings.h>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include <llhttp.h>
struct phr_header {
  const char* name;
  size_t name_len;
  const char* value;
  size_t value_len;
};
int phr_parse_request(const char* buf, size_t len, const char** method, size_t* method_len, const char** path,
                      size_t* path_len, int* minor_version, struct phr_header* headers, size_t* num_headers,
                      size_t last_len);
}

namespace {

struct Req {
  std::string method, target;
  std::vector<std::pair<std::string, std::string>> headers;
  size_t body_off = 0, body_len = 0;
  bool done = false;
  const char* base = nullptr;
};

int on_url(llhttp_t* p, const char* a, size_t n) {
  static_cast<Req*>(p->data)->target.append(a, n);
  return 0;
}
int on_field(llhttp_t* p, const char* a, size_t n) {
  auto* r = static_cast<Req*>(p->data);
  r->headers.emplace_back();
  r->headers.back().first.append(a, n);
  return 0;
}
int on_value(llhttp_t* p, const char* a, size_t n) {
  static_cast<Req*>(p->data)->headers.back().second.append(a, n);
  return 0;
}
int on_body(llhttp_t* p, const char* a, size_t n) {
  auto* r = static_cast<Req*>(p->data);
  if (!r->body_len) r->body_off = size_t(a - r->base);
  r->body_len += n;
  return 0;
}
int on_done(llhttp_t* p) {
  static_cast<Req*>(p->data)->done = true;
  return HPE_PAUSED;
}

double ns_per(std::chrono::steady_clock::time_point t0, int n) {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 1000000;
  const std::string body(352, 'x');
  const std::string heads[2] = {
      // tritonclient.http (geventhttpclient)
      "POST /v2/models/simple/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: python/gevent-http-client-2.3.1\r\n"
      "Inference-Header-Content-Length: 224\r\nContent-Length: 352\r\n\r\n",
      // perf_analyzer (libcurl)
      "POST /v2/models/simple/infer HTTP/1.1\r\nHost: localhost:8000\r\nAccept: */*\r\n"
      "Inference-Header-Content-Length: 224\r\nContent-Type: application/octet-stream\r\n"
      "Accept-Encoding: gzip, deflate\r\nContent-Length: 352\r\n\r\n"};
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_url = on_url;
  settings.on_header_field = on_field;
  settings.on_header_value = on_value;
  settings.on_body = on_body;
  settings.on_message_complete = on_done;
  size_t check = 0;
  for (int h = 0; h < 2; ++h) {
    const std::string in = heads[h] + body;
    for (int round = 0; round < 7; ++round) {
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
        Req r;
        r.base = in.data();
        llhttp_t p;
        llhttp_init(&p, HTTP_REQUEST, &settings);
        p.data = &r;
        if (llhttp_execute(&p, in.data(), in.size()) != HPE_PAUSED || !r.done) return 1;
        r.method = llhttp_method_name(llhttp_method_t(p.method));
        check += r.body_len + r.headers.size() + r.body_off;
      }
      double ll = ns_per(t0, n);
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
        Req r;
        const char *m, *path;
        size_t ml, pl, nh = 100;
        int minor;
        phr_header hs[100];
        int k = phr_parse_request(in.data(), in.size(), &m, &ml, &path, &pl, &minor, hs, &nh, 0);
        if (k <= 0) return 1;
        r.method.assign(m, ml);
        r.target.assign(path, pl);
        size_t cl = 0;
        for (size_t j = 0; j < nh; ++j) {
          r.headers.emplace_back(std::string(hs[j].name, hs[j].name_len), std::string(hs[j].value, hs[j].value_len));
          if (hs[j].name_len == 14 && strncasecmp(hs[j].name, "content-length", 14) == 0)
            for (size_t d = 0; d < hs[j].value_len; ++d) cl = cl * 10 + size_t(hs[j].value[d] - '0');
        }
        r.body_off = size_t(k);
        r.body_len = cl;
        check += r.body_len + r.headers.size() + r.body_off;
      }
      std::printf("head %d round %d: llhttp %.0f ns/request, picohttpparser %.0f ns/request\n", h, round, ll,
                  ns_per(t0, n));
    }
  }
  return check == 0;
}
