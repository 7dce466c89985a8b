// The hand-off between a native front end's threads and the Python event loop.
//
// Native threads push items; the event loop owns an eventfd (registered with
// `loop.add_reader`) and takes everything queued in one call. The eventfd is written
// only when the queue goes from "Python already told" to "not told", so a burst of
// requests costs Python one wake-up, however many arrive before it runs.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

namespace naiad_frontend {

template <class T>
class Handoff {
 public:
  Handoff() {
    fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("eventfd failed");
  }
  ~Handoff() { ::close(fd_); }
  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;

  int fd() const { return fd_; }

  // Any thread: queue one item; wake the consumer if it has not been woken yet.
  void push(T item) {
    bool wake;
    {
      std::lock_guard<std::mutex> g(mu_);
      items_.push_back(std::move(item));
      wake = !notified_;
      notified_ = true;
    }
    if (wake) signal();
  }

  // Any thread: queue one item without waking the consumer; `flush()` wakes it once for
  // everything queued this way (a producer that sends bursts calls it once per burst).
  void push_quiet(T item) {
    std::lock_guard<std::mutex> g(mu_);
    items_.push_back(std::move(item));
  }

  void flush() {
    bool wake;
    {
      std::lock_guard<std::mutex> g(mu_);
      wake = !items_.empty() && !notified_;
      if (wake) notified_ = true;
    }
    if (wake) signal();
  }

  // The consumer: everything queued so far; the next push wakes it again.
  std::vector<T> take() {
    uint64_t v;
    ssize_t r = ::read(fd_, &v, sizeof v);  // EAGAIN on a spurious wake: fine
    (void)r;
    std::vector<T> out;
    {
      std::lock_guard<std::mutex> g(mu_);
      out.swap(items_);
      notified_ = false;
    }
    return out;
  }

  // Wake the consumer with nothing queued (stop requests).
  void signal() {
    uint64_t one = 1;
    ssize_t r = ::write(fd_, &one, sizeof one);
    (void)r;
  }

 private:
  int fd_ = -1;
  std::mutex mu_;
  std::vector<T> items_;
  bool notified_ = false;
};

}  // namespace naiad_frontend
