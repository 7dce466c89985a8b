// Minimal protobuf wire-format reading and writing for the one message pair the native
// gRPC front end handles itself (ModelInferRequest in, ModelInferResponse out). Anything
// the fast reader does not recognise makes it give up, and the request goes to the
// Python servicer, which parses it with the generated classes: no rule exists twice.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace naiad_frontend {

struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  bool ok = true;

  Reader(const uint8_t* b, size_t n) : p(b), end(b + n) {}
  bool done() const { return p >= end; }

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) { ok = false; return 0; }
      uint8_t b = *p++;
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    ok = false;
    return 0;
  }
  // A length-delimited field: [*off, *off + *len) of the message.
  bool bytes(const uint8_t** out, size_t* len) {
    uint64_t n = varint();
    if (!ok || n > size_t(end - p)) { ok = false; return false; }
    *out = p;
    *len = size_t(n);
    p += n;
    return true;
  }
};

inline void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) { s.push_back(char((v & 0x7F) | 0x80)); v >>= 7; }
  s.push_back(char(v));
}
inline size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) { v >>= 7; ++n; }
  return n;
}
inline void put_tag(std::string& s, uint32_t field, uint32_t wire) { put_varint(s, (field << 3) | wire); }
inline void put_bytes(std::string& s, uint32_t field, const void* data, size_t n) {
  put_tag(s, field, 2);
  put_varint(s, n);
  s.append(static_cast<const char*>(data), n);
}
inline void put_string_if(std::string& s, uint32_t field, std::string_view v) {
  if (!v.empty()) put_bytes(s, field, v.data(), v.size());
}
inline void put_fixed64(std::string& s, uint32_t field, uint64_t v) {
  put_tag(s, field, 1);
  for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}

}  // namespace naiad_frontend
