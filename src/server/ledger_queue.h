// A worker thread that writes usage records durably and, after each commit, releases the
// response bytes that carry that usage. Records are written one at a time in arrival order; the
// engine and I/O threads never wait for the disk. Internal to the server layer.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "server/api.h"

namespace maas::server {

class LedgerQueue {
 public:
  // record: writes one record durably; throws on failure.
  explicit LedgerQueue(std::function<void(const UsageRecord&)> record);
  // Finishes everything queued, then stops.
  ~LedgerQueue();
  LedgerQueue(const LedgerQueue&) = delete;
  LedgerQueue& operator=(const LedgerQueue&) = delete;

  // After `rec` is committed, runs `then`; if it could not be, runs `failed` with the reason.
  void push(UsageRecord rec, std::function<void()> then,
            std::function<void(const std::string&)> failed);

 private:
  struct Item {
    UsageRecord rec;
    std::function<void()> then;
    std::function<void(const std::string&)> failed;
  };
  void run();

  std::function<void(const UsageRecord&)> record_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> items_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace maas::server
