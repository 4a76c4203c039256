#include "server/ledger_queue.h"

#include <cstdio>

namespace maas::server {

LedgerQueue::LedgerQueue(std::function<void(const UsageRecord&)> record)
    : record_(std::move(record)), thread_([this] { run(); }) {}

LedgerQueue::~LedgerQueue() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void LedgerQueue::push(UsageRecord rec, std::function<void()> then,
                       std::function<void(const std::string&)> failed) {
  {
    std::lock_guard lock(mu_);
    items_.push_back({std::move(rec), std::move(then), std::move(failed)});
  }
  cv_.notify_one();
}

void LedgerQueue::run() {
  while (true) {
    Item item;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !items_.empty(); });
      if (items_.empty()) return;  // stopping, and everything is written
      item = std::move(items_.front());
      items_.pop_front();
    }
    std::string error;
    try {
      record_(item.rec);
    } catch (const std::exception& e) {
      error = e.what();
      std::fprintf(stderr, "maas: usage ledger: request %s not recorded: %s\n",
                   item.rec.request_id.c_str(), error.c_str());
    }
    if (error.empty()) {
      item.then();
    } else {
      item.failed(error);
    }
  }
}

}  // namespace maas::server
