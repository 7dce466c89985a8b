// The lanes a native front end may hand requests to (frontend/lane.h), as Python publishes
// them: a map (model, version) -> Lane behind a mutex, the global gate Python flips, the
// counters Python reads, and the per-thread list of lanes to flush once per burst.
//
// Python (the adapter's WatchLanes callback) writes the map; the front end's threads read
// it once per eligible request. Nothing here takes the GIL; `lane_from_capsule` is called
// by the module's Python bindings, with the GIL.
#pragma once

#include <Python.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "frontend/lane.h"

namespace naiad_frontend {

using LanePtr = std::shared_ptr<naiad_lane::Lane>;

// The Lane a "naiad.lane" capsule holds (None: no lane). Raises ValueError (as a C++
// exception pybind11 translates) for any other object.
inline LanePtr lane_from_capsule(PyObject* obj) {
  if (obj == Py_None) return nullptr;
  if (!PyCapsule_IsValid(obj, naiad_lane::kCapsuleName))
    throw std::invalid_argument(std::string("expected a ") + naiad_lane::kCapsuleName + " capsule or None");
  auto* held = static_cast<LanePtr*>(PyCapsule_GetPointer(obj, naiad_lane::kCapsuleName));
  return held ? *held : nullptr;
}

class LaneRegistry {
 public:
  // Python: publish, replace or (null) withdraw the lane of (model, version); version ""
  // is the model's default version.
  void set(const std::string& model, const std::string& version, LanePtr lane) {
    std::lock_guard<std::mutex> g(mu_);
    if (lane) lanes_[{model, version}] = std::move(lane);
    else lanes_.erase({model, version});
  }
  void clear() {
    std::map<Key, LanePtr> old;  // released outside the lock
    std::lock_guard<std::mutex> g(mu_);
    old.swap(lanes_);
  }
  size_t size() const {
    std::lock_guard<std::mutex> g(mu_);
    return lanes_.size();
  }
  void set_enabled(bool on) { enabled_.store(on, std::memory_order_relaxed); }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }

  // Any thread: the lane of (model, version) while lanes are on, else null.
  LanePtr find(std::string_view model, std::string_view version) const {
    if (!enabled()) return nullptr;
    std::lock_guard<std::mutex> g(mu_);
    if (lanes_.empty()) return nullptr;
    auto it = lanes_.find(Key(std::string(model), std::string(version)));
    return it == lanes_.end() ? nullptr : it->second;
  }

 private:
  using Key = std::pair<std::string, std::string>;
  mutable std::mutex mu_;
  std::map<Key, LanePtr> lanes_;
  std::atomic<bool> enabled_{false};
};

// Requests handed to lanes: `served` counts the answered ones, `inflight` those handed and
// not answered yet (a stop waits for them).
struct LaneCounters {
  std::atomic<int64_t> served{0};
  std::atomic<int64_t> inflight{0};
};

// One front-end thread's lanes submitted to since its last flush: each is flushed once
// per burst (the queue decides once for everything the burst brought).
class LaneFlushList {
 public:
  void touch(const LanePtr& lane) {
    for (auto& l : touched_)
      if (l == lane) return;
    touched_.push_back(lane);
  }
  void flush() {
    if (touched_.empty()) return;
    for (auto& l : touched_) l->flush();
    touched_.clear();
  }

 private:
  std::vector<LanePtr> touched_;
};

}  // namespace naiad_frontend
