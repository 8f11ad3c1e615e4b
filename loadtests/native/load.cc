// infergate-load's native engine: unary gRPC calls over one HTTP/2 connection from one thread, for
// offered rates a Python client cannot sustain on one core. It runs one client process's share of a
// step that loadtests.native planned (the schedule, the payloads, the bounds) and writes one record per
// call.
//
// usage: load TARGET METHOD PAYLOADS DEADLINE_NS END_NS DRAIN_NS MAX_INFLIGHT OUT open SCHEDULE
//        load TARGET METHOD PAYLOADS DEADLINE_NS END_NS DRAIN_NS MAX_INFLIGHT OUT closed CONCURRENCY START_NS
//
// Times are CLOCK_MONOTONIC ns (Python's time.perf_counter_ns on Linux). PAYLOADS: serialized requests,
// each a little-endian uint32 length then the bytes, sent in turn. SCHEDULE: little-endian int64 intended
// send times. OUT: little-endian int64 records (intended, sent, done, code), code a gRPC status code or
// 17 (not sent: MAX_INFLIGHT calls were outstanding) or 18 (unanswered DRAIN_NS after the last send).
// Open loop: each call is sent at its intended time (late if the client lags: the record shows it),
// never waiting for answers. Closed loop: CONCURRENCY chains, each sending its next call when the last
// completes, until END_NS. Every call's deadline is DEADLINE_NS after it is sent, carried as
// grpc-timeout.
//
// Like a gRPC client, the engine keeps at most the server's SETTINGS_MAX_CONCURRENT_STREAMS calls
// started; the rest wait in order for a stream, and a call whose deadline passes (waiting or started)
// finishes DEADLINE_EXCEEDED, a started one with RST_STREAM CANCEL. Unlike gRPC's C++ client it has no
// threads, timers or per-call allocations: one ppoll() loop sends, reads and expires (h2.h).
#include <poll.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "h2.h"

namespace {

constexpr int64_t kDropped = 17;
constexpr int64_t kDrainTimeout = 18;
constexpr int kDeadlineExceeded = 4;
constexpr int kUnavailable = 14;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

int64_t Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

void SleepUntil(int64_t due) {
  timespec ts{time_t(due / 1000000000LL), long(due % 1000000000LL)};
  while (Now() < due && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

std::string ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> ReadPayloads(const char* path) {
  std::string data = ReadFile(path);
  std::vector<std::string> payloads;
  size_t at = 0;
  while (at + 4 <= data.size()) {
    uint32_t size = uint8_t(data[at]) | uint8_t(data[at + 1]) << 8 | uint8_t(data[at + 2]) << 16 |
                    uint32_t(uint8_t(data[at + 3])) << 24;
    at += 4;
    if (at + size > data.size()) break;
    payloads.emplace_back(data, at, size);
    at += size;
  }
  return payloads;
}

struct Call {
  int64_t intended;
  int64_t sent;
  int64_t deadline;
  int chain;        // closed loop: the chain to continue; -1 in open loop
  uint32_t stream;  // 0 until started
  uint32_t payload;
  bool done;
};

// The calls of one step: started on the connection, waiting for a stream, or finished into records.
class Engine {
 public:
  Engine(h2::Connection* connection, std::vector<std::string> payloads, int64_t deadline_ns,
         int64_t max_inflight, size_t expected_calls)
      : connection_(connection), payloads_(std::move(payloads)), deadline_ns_(deadline_ns),
        max_inflight_(max_inflight) {
    calls_.reserve(expected_calls);
    records_.reserve(expected_calls);
  }

  // Sends a call intended at ``intended`` now, queues it for a stream, or drops it (MAX_INFLIGHT).
  void Submit(int64_t intended, int chain) {
    int64_t now = Now();
    if (outstanding_ >= max_inflight_) {
      records_.push_back({intended, now, now, kDropped});
      return;
    }
    calls_.push_back({intended, now, now + deadline_ns_, chain, 0, uint32_t(next_payload_++ % payloads_.size()),
                      false});
    ++outstanding_;
    size_t index = calls_.size() - 1;
    if (waiting_.empty() && started_ < connection_->MaxStreams()) {
      Start(index, now);
    } else {
      waiting_.push_back(index);
    }
  }

  // Finishes the calls whose deadline has passed, then starts waiting calls on the freed streams.
  void Expire(int64_t now) {
    while (!waiting_.empty() && calls_[waiting_.front()].deadline <= now) {
      Finish(waiting_.front(), kDeadlineExceeded, now);
      waiting_.pop_front();
    }
    while (!started_order_.empty()) {
      Call& call = calls_[started_order_.front()];
      if (!call.done) {
        if (call.deadline > now) break;
        connection_->Cancel(call.stream);
        Finish(started_order_.front(), kDeadlineExceeded, now);
      }
      started_order_.pop_front();
    }
    StartWaiting(now);
  }

  // Waits for the socket until ``wake`` at most, then finishes every call the server answered.
  void Poll(int64_t wake) {
    connection_->Flush();
    int64_t now = Now();
    bool readable = true;
    if (wake > now && connection_->fd() < 0) SleepUntil(wake);  // nothing to read: keep the schedule
    if (wake > now && connection_->fd() >= 0) {
      pollfd socket{connection_->fd(), short(POLLIN | (connection_->WantsWrite() ? POLLOUT : 0)), 0};
      int64_t left = std::min<int64_t>(wake - now, 1000000000LL);
      timespec timeout{time_t(left / 1000000000LL), long(left % 1000000000LL)};
      readable = ppoll(&socket, 1, &timeout, nullptr) > 0 && (socket.revents & ~POLLOUT) != 0;
    }
    finished_.clear();
    if (readable && connection_->fd() >= 0) connection_->Read(&finished_);
    now = Now();
    for (const h2::Finished& answer : finished_) {
      size_t slot = answer.stream >> 1;
      if (slot < by_stream_.size() && by_stream_[slot] >= 0) Finish(size_t(by_stream_[slot]), answer.code, now);
    }
    if (!connection_->Usable()) {  // GOAWAY or a failed socket: what the server will not answer fails
      for (size_t index : started_order_) {
        if (!calls_[index].done && calls_[index].stream > connection_->LastStream()) {
          Finish(index, kUnavailable, now);
        }
      }
    }
    StartWaiting(now);
    connection_->Flush();
  }

  // Finishes every outstanding call with ``code`` (a started one is cancelled).
  void FinishAll(int64_t code, int64_t now) {
    for (size_t index : started_order_) {
      if (calls_[index].done) continue;
      connection_->Cancel(calls_[index].stream);
      Finish(index, code, now);
    }
    for (size_t index : waiting_) Finish(index, code, now);
    started_order_.clear();
    waiting_.clear();
    connection_->Flush();
  }

  // The earliest deadline of an outstanding call (calls start in the order they were sent).
  int64_t NextDeadline() const {
    int64_t next = waiting_.empty() ? kNever : calls_[waiting_.front()].deadline;
    for (size_t index : started_order_) {
      if (!calls_[index].done) return std::min(next, calls_[index].deadline);
    }
    return next;
  }

  int64_t Outstanding() const { return outstanding_; }

  // Closed loop: the chains whose call finished since the last call, emptied.
  std::vector<int> TakeChains() { return std::exchange(chains_, {}); }

  void Write(const char* path) const {
    FILE* out = std::fopen(path, "wb");
    if (out == nullptr ||
        std::fwrite(records_.data(), sizeof(records_[0]), records_.size(), out) != records_.size()) {
      std::perror(path);
      std::exit(1);
    }
    std::fclose(out);
  }

 private:
  void Start(size_t index, int64_t now) {
    Call& call = calls_[index];
    if (!connection_->Usable()) {
      Finish(index, kUnavailable, now);
      return;
    }
    call.stream = connection_->StartCall(payloads_[call.payload], call.deadline - now);
    size_t slot = call.stream >> 1;
    if (slot >= by_stream_.size()) by_stream_.resize(std::max(slot + 1, by_stream_.size() * 2), -1);
    by_stream_[slot] = int64_t(index);
    started_order_.push_back(index);
    ++started_;
  }

  void StartWaiting(int64_t now) {
    while (!waiting_.empty() && started_ < connection_->MaxStreams()) {
      size_t index = waiting_.front();
      waiting_.pop_front();
      if (calls_[index].deadline <= now) {
        Finish(index, kDeadlineExceeded, now);
      } else {
        Start(index, now);
      }
    }
  }

  void Finish(size_t index, int64_t code, int64_t now) {
    Call& call = calls_[index];
    call.done = true;
    records_.push_back({call.intended, call.sent, now, code});
    --outstanding_;
    if (call.stream != 0) {
      by_stream_[call.stream >> 1] = -1;
      --started_;
    }
    if (call.chain >= 0 && connection_->Usable()) chains_.push_back(call.chain);
  }

  h2::Connection* connection_;
  std::vector<std::string> payloads_;
  int64_t deadline_ns_;
  int64_t max_inflight_;
  size_t next_payload_ = 0;
  int64_t outstanding_ = 0;
  uint32_t started_ = 0;
  std::vector<Call> calls_;
  std::deque<size_t> waiting_;        // sent, waiting for a stream, oldest first
  std::deque<size_t> started_order_;  // started, oldest first (finished ones are skipped)
  std::vector<int64_t> by_stream_;    // stream id / 2 -> call index, -1 once finished
  std::vector<h2::Finished> finished_;
  std::vector<int> chains_;
  std::vector<std::array<int64_t, 4>> records_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 11) {
    std::fprintf(stderr, "usage: see the header of loadtests/native/load.cc\n");
    return 2;
  }
  std::string target = argv[1];
  std::vector<std::string> payloads = ReadPayloads(argv[3]);
  int64_t deadline_ns = std::atoll(argv[4]), end_ns = std::atoll(argv[5]), drain_ns = std::atoll(argv[6]);
  int64_t max_inflight = std::atoll(argv[7]);
  const char* out = argv[8];
  std::string mode = argv[9];
  if (payloads.empty() || (mode != "open" && mode != "closed") || (mode == "closed" && argc < 12)) {
    std::fprintf(stderr, "bad arguments (no payloads, or unknown mode)\n");
    return 2;
  }
  h2::Connection connection;
  std::string error;
  if (!connection.Connect(target, 10000000000LL, &error)) {
    std::fprintf(stderr, "could not connect to %s in 10 s: %s\n", target.c_str(), error.c_str());
    return 1;
  }
  connection.SetMethod(argv[2]);
  if (mode == "open") {
    std::string raw = ReadFile(argv[10]);
    std::vector<int64_t> schedule(raw.size() / 8);
    std::copy(raw.data(), raw.data() + schedule.size() * 8, reinterpret_cast<char*>(schedule.data()));
    Engine engine(&connection, std::move(payloads), deadline_ns, max_inflight, schedule.size());
    size_t next = 0;
    int64_t drain_limit = kNever;
    while (true) {
      int64_t now = Now();
      while (next < schedule.size() && schedule[next] <= now) engine.Submit(schedule[next++], -1);
      if (next == schedule.size() && drain_limit == kNever) drain_limit = Now() + deadline_ns + drain_ns;
      engine.Expire(now);
      if (next == schedule.size() && engine.Outstanding() == 0) break;
      if (now >= drain_limit) {
        engine.FinishAll(kDrainTimeout, now);
        break;
      }
      int64_t due = next < schedule.size() ? schedule[next] : kNever;
      engine.Poll(std::min({due, engine.NextDeadline(), drain_limit}));
    }
    engine.Write(out);
  } else {
    int concurrency = std::atoi(argv[10]);
    int64_t start_ns = std::atoll(argv[11]);
    const int64_t drain_limit = end_ns + deadline_ns + drain_ns;
    Engine engine(&connection, std::move(payloads), deadline_ns, max_inflight, 1 << 16);
    SleepUntil(start_ns);
    for (int chain = 0; chain < concurrency; ++chain) engine.Submit(Now(), chain);
    while (true) {
      int64_t now = Now();
      for (int chain : engine.TakeChains()) {
        if (now < end_ns) engine.Submit(Now(), chain);
      }
      engine.Expire(now);
      if (now >= end_ns && engine.Outstanding() == 0) break;
      if (now >= drain_limit) {
        engine.FinishAll(kDrainTimeout, now);
        break;
      }
      engine.Poll(std::min(engine.NextDeadline(), now < end_ns ? end_ns : drain_limit));
    }
    engine.Write(out);
  }
  return 0;
}
