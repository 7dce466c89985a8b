// KServe v2 HTTP for the native lanes (frontend/lane.h): which requests a lane may take,
// how their JSON inference header is read, and how the answer is written as JSON.
//
// A request is taken only in its plain forms — tensors in binary (what tritonclient and
// perf_analyzer send) or as JSON `data` (what curl users send), outputs in binary or as
// JSON — and only when everything in it is certainly what naiad's Python path
// (services/http/codec.py decode_infer) would accept the same way; anything else returns
// false and the request takes the Python path, which answers it (or words its error) as
// Triton does. The reply is written byte for byte as the Python path writes it
// (codec.encode_infer through orjson or json.dumps; errors as router.error_response
// through json.dumps). JSON tensor data is read and written by frontend/kserve_json.h.
//
// The JSON header is parsed with RapidJSON (Debian's rapidjson-dev), iteratively (no
// recursion on the front end's thread), validating UTF-8.
#pragma once

#include <rapidjson/document.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "frontend/kserve_json.h"
#include "frontend/lane.h"

namespace naiad_http_lane {

using Headers = std::vector<std::pair<std::string, std::string>>;

// JSON headers larger than this are left to Python (which reads them off its event loop
// from its offload_bytes, 1 MiB by default; the binary form's header is a few hundred bytes).
constexpr size_t kMaxJsonHeader = 1 << 20;

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// `/v2/models/<model>/infer` or `/v2/models/<model>/versions/<digits>/infer`, exactly (no
// query, no escapes, ASCII): the model and the version as the core keys it ("" for none;
// "007" is "7", as the Python route reads it).
inline bool infer_target(std::string_view target, std::string_view& model, std::string& version) {
  constexpr std::string_view kPrefix = "/v2/models/", kInfer = "/infer", kVersions = "/versions/";
  if (target.size() <= kPrefix.size() + kInfer.size() || target.compare(0, kPrefix.size(), kPrefix) != 0 ||
      target.compare(target.size() - kInfer.size(), kInfer.size(), kInfer) != 0)
    return false;
  for (char ch : target) {
    unsigned char u = static_cast<unsigned char>(ch);
    if (u <= 0x20 || u >= 0x7f || ch == '%' || ch == '?' || ch == '#') return false;
  }
  std::string_view middle = target.substr(kPrefix.size(), target.size() - kPrefix.size() - kInfer.size());
  size_t slash = middle.find('/');
  if (slash == std::string_view::npos) {
    model = middle;
    version.clear();
    return !model.empty();
  }
  model = middle.substr(0, slash);
  std::string_view rest = middle.substr(slash);
  if (model.empty() || rest.size() <= kVersions.size() || rest.compare(0, kVersions.size(), kVersions) != 0)
    return false;
  std::string_view digits = rest.substr(kVersions.size());
  for (char ch : digits)
    if (ch < '0' || ch > '9') return false;
  while (digits.size() > 1 && digits[0] == '0') digits.remove_prefix(1);
  if (digits.size() > 18) return false;
  version.assign(digits);
  return true;
}

// The JSON header's length when the request's headers are plain for a lane: at most one
// Inference-Header-Content-Length (digits, within the body; none: the whole body is JSON,
// and `binary` is false), no Content-Encoding but identity and no Accept-Encoding asking for
// anything but identity (codec: compression's request_encoding / response_encoding give
// identity). 0: not plain.
inline size_t plain_header_length(const Headers& headers, size_t body_len, bool& binary) {
  size_t hlen = 0;
  int seen = 0;
  for (auto& kv : headers) {
    const std::string& v = kv.second;
    if (iequals(kv.first, "inference-header-content-length")) {
      if (++seen > 1 || v.empty() || v.size() > 18) return 0;
      size_t n = 0;
      for (char ch : v) {
        if (ch < '0' || ch > '9') return 0;
        n = n * 10 + size_t(ch - '0');
      }
      hlen = n;
    } else if (iequals(kv.first, "content-encoding") || iequals(kv.first, "accept-encoding")) {
      if (!v.empty() && v != "identity") return 0;
    }
  }
  binary = seen == 1;
  if (!binary) hlen = body_len;
  if (hlen == 0 || hlen > body_len || hlen > kMaxJsonHeader) return 0;
  return hlen;
}

// ------------------------------------------------------------------ the JSON header --

// How a request's answer is written, and the bytes of its JSON inputs (which the Request's
// inputs view).
struct ReplyPlan {
  bool default_binary = false;  // outputs the request did not name: binary_data_output
  std::vector<std::pair<std::string, bool>> requested;  // named outputs: binary_data
  std::string json_inputs;

  bool binary(std::string_view name) const {  // codec.ResponsePlan.binary
    for (auto& r : requested)
      if (r.first == name) return r.second;
    return default_binary;
  }
};

// Memory a parse may use without allocating (the front end's thread keeps one).
struct ParseScratch {
  char values[16 << 10];
  char stack[4 << 10];
};

namespace detail {

using Alloc = rapidjson::MemoryPoolAllocator<rapidjson::CrtAllocator>;
using Document = rapidjson::GenericDocument<rapidjson::UTF8<>, Alloc, Alloc>;
using Value = rapidjson::GenericValue<rapidjson::UTF8<>, Alloc>;

inline std::string_view str(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

// A string the Python path would hold as the same text: UTF-8 (validated by the parse)
// with no surrogate code point (a lone "\udc00" escape RapidJSON lets through).
inline bool clean_utf8(std::string_view s) {
  for (size_t i = 0; i + 1 < s.size(); ++i)
    if (static_cast<unsigned char>(s[i]) == 0xED && static_cast<unsigned char>(s[i + 1]) >= 0xA0) return false;
  return true;
}

// An object whose members are all in `keys` (at most 8), each at most once; `found[i]` is
// the member named keys[i] or null.
template <size_t N>
bool members(const Value& obj, const char* const (&keys)[N], const Value* (&found)[N]) {
  if (!obj.IsObject()) return false;
  for (auto& f : found) f = nullptr;
  for (auto m = obj.MemberBegin(); m != obj.MemberEnd(); ++m) {
    std::string_view k = str(m->name);
    size_t i = 0;
    while (i < N && k != keys[i]) ++i;
    if (i == N || found[i] != nullptr) return false;
    found[i] = &m->value;
  }
  return true;
}

// An object with exactly one member, `key`.
inline const Value* only(const Value& obj, std::string_view key) {
  if (!obj.IsObject() || obj.MemberCount() != 1) return nullptr;
  auto m = obj.MemberBegin();
  return str(m->name) == key ? &m->value : nullptr;
}

}  // namespace detail

// Fill `req` (id, inputs as views into `body` or `plan.json_inputs`, requested outputs) and
// `plan` from the request's body (`hlen` bytes of JSON, then the inputs' bytes; `binary`:
// the request named its JSON header's length). False unless the header is a plain form:
// top-level keys only id (string), inputs, outputs, parameters (only binary_data_output:
// bool); each input exactly {name, datatype, shape, parameters: {binary_data_size}} or
// {name, datatype, shape, data} (parameters, if any, empty) with the schema's datatype;
// outputs absent or each {name} with parameters, if any, only {binary_data: bool}, named
// once each in the schema; the binary inputs' bytes, in order, exactly the rest of the body.
inline bool parse_infer(const naiad_lane::Schema& schema, const char* body, size_t body_len, size_t hlen,
                        bool binary, naiad_lane::Request& req, ReplyPlan& plan, ParseScratch& scratch) {
  using namespace detail;
  Alloc values(scratch.values, sizeof scratch.values);
  Alloc stack(scratch.stack, sizeof scratch.stack);
  Document doc(&values, 1024, &stack);
  // Full precision: decimals round as Python's float() rounds them (kserve_json.h).
  doc.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag |
            rapidjson::kParseFullPrecisionFlag>(body, hlen);
  if (doc.HasParseError()) return false;

  static const char* const kTop[] = {"id", "inputs", "outputs", "parameters"};
  const Value* top[4];
  if (!members(doc, kTop, top)) return false;
  const Value *id = top[0], *inputs = top[1], *outputs = top[2], *params = top[3];

  if (id != nullptr) {
    if (!id->IsString() || !clean_utf8(str(*id))) return false;
    req.id.assign(id->GetString(), id->GetStringLength());
  }
  bool binary_output = false;
  if (params != nullptr) {
    static const char* const kParams[] = {"binary_data_output"};
    const Value* p[1];
    if (!members(*params, kParams, p)) return false;
    if (p[0] != nullptr) {
      if (!p[0]->IsBool()) return false;
      binary_output = p[0]->GetBool();
    }
  }

  if (inputs == nullptr || !inputs->IsArray() || inputs->Empty()) return false;
  size_t offset = hlen;
  std::vector<std::pair<size_t, size_t>> json_at;  // (input, offset in plan.json_inputs)
  req.inputs.reserve(inputs->Size());
  for (auto& item : inputs->GetArray()) {
    static const char* const kInput[] = {"name", "datatype", "shape", "parameters", "data"};
    const Value* f[5];
    if (!members(item, kInput, f)) return false;
    if (f[0] == nullptr || f[1] == nullptr || f[2] == nullptr) return false;
    if (!f[0]->IsString() || !f[1]->IsString() || !f[2]->IsArray()) return false;
    int index = schema.input_index(str(*f[0]));
    if (index < 0 || str(*f[1]) != schema.inputs[size_t(index)].datatype) return false;
    naiad_lane::Input in;
    in.index = index;
    in.shape.reserve(f[2]->Size());
    uint64_t count = 1;
    for (auto& d : f[2]->GetArray()) {
      if (!d.IsInt64() || d.GetInt64() < 0 || d.GetInt64() > (int64_t(1) << 40)) return false;
      in.shape.push_back(d.GetInt64());
      uint64_t v = uint64_t(d.GetInt64());  // (saturates past 2^40: such JSON is left to Python)
      count = v && count > (uint64_t(1) << 40) / v ? (uint64_t(1) << 40) + 1 : count * v;
    }
    if (f[4] != nullptr) {  // JSON data: no parameters but an empty object
      if (f[3] != nullptr && (!f[3]->IsObject() || f[3]->MemberCount() != 0)) return false;
      if (count > (uint64_t(1) << 40)) return false;
      size_t at = plan.json_inputs.size();
      if (!naiad_frontend::kserve_json::decode_data(*f[4], str(*f[1]), count, plan.json_inputs)) return false;
      json_at.emplace_back(req.inputs.size(), at);
      in.size = plan.json_inputs.size() - at;
    } else {
      if (f[3] == nullptr) return false;
      const Value* size = only(*f[3], "binary_data_size");
      if (size == nullptr || !size->IsUint64()) return false;
      uint64_t n = size->GetUint64();
      if (n > body_len - offset || (n && !binary)) return false;  // (bytes without a header length: Python refuses)
      in.data = body + offset;
      in.size = size_t(n);
      offset += size_t(n);
    }
    req.inputs.push_back(std::move(in));
  }
  if (offset != body_len) return false;
  for (auto& [k, at] : json_at) req.inputs[k].data = plan.json_inputs.data() + at;  // (the buffer is whole now)

  plan.default_binary = binary_output;
  // Outputs written as JSON are written on the Python loop's thread (Request::complete):
  // large ones are left to Python, which writes them off its loop (codec's offload_bytes).
  const bool large = body_len - hlen + plan.json_inputs.size() > kMaxJsonHeader;
  if (outputs == nullptr) return !large || binary_output;
  if (!outputs->IsArray() || outputs->Empty()) return false;
  req.outputs.reserve(outputs->Size());
  plan.requested.reserve(outputs->Size());
  for (auto& item : outputs->GetArray()) {
    static const char* const kOutput[] = {"name", "parameters"};
    const Value* f[2];
    if (!members(item, kOutput, f) || f[0] == nullptr || !f[0]->IsString()) return false;
    bool as_binary = false;  // (a named output without binary_data goes as JSON)
    if (f[1] != nullptr) {
      static const char* const kOutParams[] = {"binary_data"};
      const Value* p[1];
      if (!members(*f[1], kOutParams, p)) return false;
      if (p[0] != nullptr) {
        if (!p[0]->IsBool()) return false;
        as_binary = p[0]->GetBool();
      }
    }
    int index = schema.output_index(str(*f[0]));
    if (index < 0) return false;
    for (int o : req.outputs)
      if (o == index) return false;
    req.outputs.push_back(index);
    if (large && !as_binary) return false;
    plan.requested.emplace_back(std::string(str(*f[0])), as_binary);
  }
  return true;
}

// ------------------------------------------------------------------ writing JSON --

// A JSON string as orjson (and json.dumps(ensure_ascii=False)) writes it: '"', '\\' and
// the control characters escaped (\b \t \n \f \r by name, the rest \u00xx), the rest as is.
// With `ascii` (json.dumps' default, the error replies) every code point past 0x7e is
// \uxxxx too (UTF-16 pairs past the BMP; bytes that are not UTF-8 as U+FFFD).
inline void json_string(std::string& out, std::string_view s, bool ascii = false) {
  static const char* hex = "0123456789abcdef";
  auto u4 = [&](uint32_t c) {
    char b[6] = {'\\', 'u', hex[(c >> 12) & 15], hex[(c >> 8) & 15], hex[(c >> 4) & 15], hex[c & 15]};
    out.append(b, 6);
  };
  out += '"';
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char ch = static_cast<unsigned char>(s[i]);
    switch (ch) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\b': out += "\\b"; continue;
      case '\t': out += "\\t"; continue;
      case '\n': out += "\\n"; continue;
      case '\f': out += "\\f"; continue;
      case '\r': out += "\\r"; continue;
      default: break;
    }
    if (ch < 0x20) {
      u4(ch);
    } else if (!ascii || ch < 0x7f) {
      out += char(ch);
    } else if (ch == 0x7f) {
      u4(ch);
    } else {
      // One UTF-8 sequence -> its code point (U+FFFD for anything malformed).
      int extra = ch >= 0xF0 ? 3 : ch >= 0xE0 ? 2 : ch >= 0xC0 ? 1 : -1;
      uint32_t cp = 0xFFFD;
      if (extra > 0 && i + size_t(extra) < s.size()) {
        uint32_t c = ch & (0x3F >> extra);
        bool ok = true;
        for (int k = 1; k <= extra; ++k) {
          unsigned char cont = static_cast<unsigned char>(s[i + size_t(k)]);
          if ((cont & 0xC0) != 0x80) { ok = false; break; }
          c = (c << 6) | (cont & 0x3F);
        }
        if (ok) {
          cp = c;
          i += size_t(extra);
        }
      }
      if (cp >= 0x10000) {
        cp -= 0x10000;
        u4(0xD800 + (cp >> 10));
        u4(0xDC00 + (cp & 0x3FF));
      } else {
        u4(cp);
      }
    }
  }
  out += '"';
}

namespace detail {

// Whether `s` is UTF-8 as Python's strict decoder takes it (no overlong forms, no
// surrogates, nothing past U+10FFFF).
inline bool strict_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) { ++i; continue; }
    size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

// The elements of a BYTES tensor's bytes (each a 4-byte little-endian length, then that
// many bytes); false when they do not parse.
template <class F>
bool each_bytes_element(const char* data, size_t size, F&& f) {
  size_t i = 0;
  while (i < size) {
    if (size - i < 4) return false;
    uint32_t len;
    std::memcpy(&len, data + i, 4);
    i += 4;
    if (len > size - i) return false;
    f(std::string_view(data + i, len));
    i += len;
  }
  return true;
}

}  // namespace detail

// The JSON header of a successful answer, as codec.encode_infer writes it: id (when not
// empty), model_name, model_version, parameters (when the model set any), each output with
// its binary_data_size (its bytes follow the header; `blobs` gets their total) or its
// `data`, as `plan` says. The floats are written as orjson writes them, or as json.dumps
// does when the Python path would fall back to it (a float that is not finite in the
// parameters or a JSON output, a BYTES element that is not UTF-8). False: the answer is an
// error instead, INVALID_ARG with the text in `error` (FP16 or BF16 asked for as JSON).
inline bool infer_header(const naiad_lane::Result& r, std::string_view id, const ReplyPlan& plan,
                         std::string& out, size_t& blobs, std::string& error) {
  namespace kj = naiad_frontend::kserve_json;
  // The style first: the Python path picks one for the whole document.
  bool repr = false;
  for (auto& p : r.params)
    if (p.kind == naiad_lane::Param::kDouble && !std::isfinite(p.d)) repr = true;
  for (auto& o : r.outputs) {
    if (plan.binary(o.name)) continue;
    if (o.datatype == "FP16" || o.datatype == "BF16") {
      error = "sending " + std::string(o.datatype) + " data via JSON is not supported. Please use the binary "
              "data format for output";
      return false;
    }
    if (o.datatype == "BYTES") {
      detail::each_bytes_element(o.data, o.size, [&](std::string_view e) { repr = repr || !detail::strict_utf8(e); });
    } else if (!repr && !kj::all_finite(o.datatype, o.data, o.size)) {
      repr = true;
    }
  }
  out.reserve(160 + 96 * r.outputs.size());
  out += '{';
  if (!id.empty()) {
    out += "\"id\":";
    json_string(out, id);
    out += ',';
  }
  out += "\"model_name\":";
  json_string(out, r.model);
  out += ",\"model_version\":";
  json_string(out, r.version);
  if (!r.params.empty()) {
    out += ",\"parameters\":{";
    bool first = true;
    for (auto& p : r.params) {
      if (!first) out += ',';
      first = false;
      json_string(out, p.key);
      out += ':';
      switch (p.kind) {
        case naiad_lane::Param::kBool: out += p.b ? "true" : "false"; break;
        case naiad_lane::Param::kInt: out += std::to_string(p.i); break;
        case naiad_lane::Param::kDouble: kj::detail::repr(out, p.d, repr); break;
        case naiad_lane::Param::kString: json_string(out, p.s); break;
      }
    }
    out += '}';
  }
  out += ",\"outputs\":[";
  blobs = 0;
  for (size_t k = 0; k < r.outputs.size(); ++k) {
    const naiad_lane::Output& o = r.outputs[k];
    if (k) out += ',';
    out += "{\"name\":";
    json_string(out, o.name);
    out += ",\"datatype\":";
    json_string(out, o.datatype);
    out += ",\"shape\":[";
    for (size_t d = 0; d < o.shape.size(); ++d) {
      if (d) out += ',';
      out += std::to_string(o.shape[d]);
    }
    out += ']';
    if (plan.binary(o.name)) {
      out += ",\"parameters\":{\"binary_data_size\":";
      out += std::to_string(o.size);
      out += "}}";
      blobs += o.size;
      continue;
    }
    out += ",\"data\":";
    if (o.datatype == "BYTES") {
      out += '[';
      bool first = true;
      detail::each_bytes_element(o.data, o.size, [&](std::string_view e) {
        if (!first) out += ',';
        first = false;
        json_string(out, e);  // (bytes that are not UTF-8 go as they are, as surrogateescape does)
      });
      out += ']';
    } else if (!kj::encode_data(out, o.datatype, o.data, o.size, repr)) {
      error = "invalid datatype for output " + std::string(o.name);
      return false;
    }
    out += '}';
  }
  out += "]}";
  return true;
}

// The body of an error reply: {"error":"<message>"} as json.dumps writes it (ASCII).
inline std::string error_body(std::string_view message) {
  std::string out = "{\"error\":";
  json_string(out, message, true);
  out += '}';
  return out;
}

}  // namespace naiad_http_lane
