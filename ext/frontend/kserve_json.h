// KServe v2 JSON tensor data, natively: a tensor's `data` array into its bytes, and bytes
// back into `data` text, with the rules and the text of naiad's Python codec
// (services/http/codec.py: tensor_from_json / json_data / dumps), so that a request
// served natively and one served by Python read and answer alike.
//
// Reading follows Triton's ReadDataFromJson accessors as codec.py does: BOOL takes JSON
// booleans; UINT* non-negative integers; INT* integers; FP32/FP64 any number (integers
// too); narrower integer types wrap as a C cast does. `data` may be nested; only the leaf
// count must equal the shape's. Anything else (FP16, BF16, BYTES, a wrong leaf, a wrong
// count) returns false: the caller declines the request and the Python path words the
// error. Parse the document with rapidjson::kParseFullPrecisionFlag, so that decimals
// round exactly as Python's float() rounds them.
//
// Writing prints what codec.dumps prints for `arr.reshape(-1).tolist()`: integers in
// decimal, booleans as true/false, an FP32 element widened to double first, floats with
// their shortest round-trip digits in one of the two styles dumps uses: orjson's (for a
// document whose floats are all finite: exponent form below 1e-5 and from 1e16, as
// "1e-7", "1.5e+16") or json.dumps' (Python's repr, when any float of the document is not
// finite: exponent form below 1e-4, as "1e-05"; NaN, Infinity, -Infinity).
#pragma once

#include <rapidjson/document.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace naiad_frontend {
namespace kserve_json {

enum class Leaf { kBool, kUint, kInt, kDouble, kNone };

struct Kind {
  Leaf leaf = Leaf::kNone;
  int size = 0;  // bytes per element
};

inline Kind kind_of(std::string_view dt) {
  if (dt == "BOOL") return {Leaf::kBool, 1};
  if (dt == "UINT8") return {Leaf::kUint, 1};
  if (dt == "UINT16") return {Leaf::kUint, 2};
  if (dt == "UINT32") return {Leaf::kUint, 4};
  if (dt == "UINT64") return {Leaf::kUint, 8};
  if (dt == "INT8") return {Leaf::kInt, 1};
  if (dt == "INT16") return {Leaf::kInt, 2};
  if (dt == "INT32") return {Leaf::kInt, 4};
  if (dt == "INT64") return {Leaf::kInt, 8};
  if (dt == "FP32") return {Leaf::kDouble, 4};
  if (dt == "FP64") return {Leaf::kDouble, 8};
  return {};
}

namespace detail {

template <class T>
inline void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

inline bool leaf(const rapidjson::Value& v, Kind k, std::string& out) {
  switch (k.leaf) {
    case Leaf::kBool:
      if (!v.IsBool()) return false;
      put<uint8_t>(out, v.GetBool() ? 1 : 0);
      return true;
    case Leaf::kUint: {
      if (!v.IsUint64()) return false;
      uint64_t x = v.GetUint64();
      switch (k.size) {
        case 1: put<uint8_t>(out, uint8_t(x)); break;
        case 2: put<uint16_t>(out, uint16_t(x)); break;
        case 4: put<uint32_t>(out, uint32_t(x)); break;
        default: put<uint64_t>(out, x);
      }
      return true;
    }
    case Leaf::kInt: {
      if (!v.IsInt64()) return false;
      int64_t x = v.GetInt64();
      switch (k.size) {
        case 1: put<int8_t>(out, int8_t(x)); break;
        case 2: put<int16_t>(out, int16_t(x)); break;
        case 4: put<int32_t>(out, int32_t(x)); break;
        default: put<int64_t>(out, x);
      }
      return true;
    }
    case Leaf::kDouble: {
      if (!v.IsNumber()) return false;
      double x = v.GetDouble();
      if (k.size == 4) put<float>(out, float(x));
      else put<double>(out, x);
      return true;
    }
    default:
      return false;
  }
}

inline bool walk(const rapidjson::Value& a, Kind k, uint64_t count, std::string& out, size_t base, int depth) {
  if (depth > 64) return false;
  for (auto it = a.Begin(); it != a.End(); ++it) {
    if (it->IsArray()) {
      if (!walk(*it, k, count, out, base, depth + 1)) return false;
      continue;
    }
    if ((out.size() - base) / size_t(k.size) >= count) return false;
    if (!leaf(*it, k, out)) return false;
  }
  return true;
}

// A double as orjson writes it (`python` false) or as Python's repr does (`python` true).
inline void repr(std::string& out, double x, bool python) {
  if (std::isnan(x)) {
    out += "NaN";
    return;
  }
  if (std::isinf(x)) {
    out += x < 0 ? "-Infinity" : "Infinity";
    return;
  }
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string_view s(buf, size_t(r.ptr - buf));  // "-d.ddde+XX" or "de-XX"
  size_t e = s.find('e');
  std::string_view mant = s.substr(0, e);
  int exp = 0;
  std::from_chars(s.data() + e + 1 + (s[e + 1] == '+'), s.data() + s.size(), exp);
  bool neg = mant.size() && mant[0] == '-';
  if (neg) mant.remove_prefix(1);
  std::string digits;
  digits.reserve(mant.size());
  for (char c : mant)
    if (c != '.') digits += c;
  if (neg) out += '-';
  if (exp < (python ? -4 : -5) || exp >= 16) {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out.append(digits, 1, std::string::npos);
    }
    out += 'e';
    out += exp < 0 ? '-' : '+';
    int a = exp < 0 ? -exp : exp;
    if (a < 10 && (python || exp > 0)) out += '0';
    out += std::to_string(a);
    return;
  }
  if (exp < 0) {
    out += "0.";
    out.append(size_t(-exp - 1), '0');
    out += digits;
    return;
  }
  size_t point = size_t(exp) + 1;
  if (digits.size() <= point) {
    out += digits;
    out.append(point - digits.size(), '0');
    out += ".0";
  } else {
    out.append(digits, 0, point);
    out += '.';
    out.append(digits, point, std::string::npos);
  }
}

template <class T>
inline T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace detail

// `data` (an array, possibly nested) as `count` elements of datatype `dt`, appended to `out`.
inline bool decode_data(const rapidjson::Value& data, std::string_view dt, uint64_t count, std::string& out) {
  Kind k = kind_of(dt);
  if (k.leaf == Leaf::kNone || !data.IsArray()) return false;
  if (count > (uint64_t(1) << 40) / uint64_t(k.size)) return false;
  size_t base = out.size();
  out.reserve(base + size_t(count) * size_t(k.size));
  if (!detail::walk(data, k, count, out, base, 0)) return false;
  return out.size() - base == size_t(count) * size_t(k.size);
}

// Whether every element is finite (always, for non-float types): decides the style.
inline bool all_finite(std::string_view dt, const char* data, size_t size) {
  Kind k = kind_of(dt);
  if (k.leaf != Leaf::kDouble) return true;
  for (size_t i = 0; i + size_t(k.size) <= size; i += size_t(k.size)) {
    double v = k.size == 4 ? double(detail::get<float>(data + i)) : detail::get<double>(data + i);
    if (!std::isfinite(v)) return false;
  }
  return true;
}

// The JSON array text of `size` bytes of `dt` elements, appended to `out`; false when `dt`
// has no JSON form here (FP16, BF16, BYTES) or the bytes are not whole elements.
// `python_floats`: the document holds a non-finite float somewhere (see all_finite).
inline bool encode_data(std::string& out, std::string_view dt, const char* data, size_t size,
                        bool python_floats = false) {
  Kind k = kind_of(dt);
  if (k.leaf == Leaf::kNone || size % size_t(k.size)) return false;
  const size_t n = size / size_t(k.size);
  out.reserve(out.size() + 2 + n * (k.leaf == Leaf::kDouble ? 20 : 4));
  out += '[';
  char buf[32];
  for (size_t i = 0; i < n; ++i) {
    if (i) out += ',';
    const char* p = data + i * size_t(k.size);
    switch (k.leaf) {
      case Leaf::kBool:
        out += *p ? "true" : "false";
        break;
      case Leaf::kUint: {
        uint64_t v = k.size == 1 ? detail::get<uint8_t>(p) : k.size == 2 ? detail::get<uint16_t>(p)
                     : k.size == 4 ? detail::get<uint32_t>(p) : detail::get<uint64_t>(p);
        auto r = std::to_chars(buf, buf + sizeof buf, v);
        out.append(buf, size_t(r.ptr - buf));
        break;
      }
      case Leaf::kInt: {
        int64_t v = k.size == 1 ? detail::get<int8_t>(p) : k.size == 2 ? detail::get<int16_t>(p)
                    : k.size == 4 ? detail::get<int32_t>(p) : detail::get<int64_t>(p);
        auto r = std::to_chars(buf, buf + sizeof buf, v);
        out.append(buf, size_t(r.ptr - buf));
        break;
      }
      case Leaf::kDouble:
        detail::repr(out, k.size == 4 ? double(detail::get<float>(p)) : detail::get<double>(p), python_floats);
        break;
      default:
        return false;
    }
  }
  out += ']';
  return true;
}

}  // namespace kserve_json
}  // namespace naiad_frontend
