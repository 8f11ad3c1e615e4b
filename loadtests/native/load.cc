// infergate-load's native engine: unary calls over one gRPC channel from C++, for offered rates a
// Python client cannot sustain on one core. It runs one client process's share of a step that
// loadtests.native planned (the schedule, the payloads, the bounds) and writes one record per call.
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
// completes, until END_NS. Every call carries a gRPC deadline DEADLINE_NS after it is sent.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <time.h>

#include <cerrno>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace {

constexpr int64_t kDropped = 17;
constexpr int64_t kDrainTimeout = 18;

int64_t Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// Sleeps (never spins: a spinning sender would starve gRPC's own threads on the client's core).
void SleepUntil(int64_t due) {
  timespec ts{time_t(due / 1000000000LL), long(due % 1000000000LL)};
  while (Now() < due && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

std::string ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct Call {
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  int64_t intended = 0;
  int64_t sent = 0;
  int chain = -1;  // closed loop: the chain to continue
};

class Load {
 public:
  Load(std::shared_ptr<grpc::Channel> channel, std::string method, std::vector<grpc::Slice> payloads,
       int64_t deadline_ns, int64_t max_inflight)
      : stub_(channel), method_(std::move(method)), payloads_(std::move(payloads)),
        deadline_ns_(deadline_ns), max_inflight_(max_inflight) {}

  // Sends one call now (intended at ``intended``); false when MAX_INFLIGHT calls are outstanding.
  bool Send(int64_t intended, int chain) {
    int64_t sent = Now();
    if (outstanding_.load() >= max_inflight_) {
      Record({intended, sent, sent, kDropped});
      return false;
    }
    auto* call = new Call;
    call->intended = intended;
    call->sent = sent;
    call->chain = chain;
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::nanoseconds(deadline_ns_));
    grpc::ByteBuffer request(&payloads_[next_++ % payloads_.size()], 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_.insert(call);
    }
    ++outstanding_;
    call->reader = stub_.PrepareUnaryCall(&call->context, method_, request, &queue_);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, call);
    return true;
  }

  // Reaps completions until the queue shuts down; ``on_done`` may send the chain's next call.
  template <typename F>
  void Reap(F on_done) {
    void* tag;
    bool ok;
    while (queue_.Next(&tag, &ok)) {
      auto* call = static_cast<Call*>(tag);
      int64_t code = expired_.load() ? kDrainTimeout : int64_t(call->status.error_code());
      Record({call->intended, call->sent, Now(), code});
      {
        std::lock_guard<std::mutex> lock(mutex_);
        open_.erase(call);
      }
      int chain = call->chain;
      delete call;
      --outstanding_;
      on_done(chain);
    }
  }

  // Waits for outstanding calls until ``limit``, then cancels the rest (recorded as drain timeouts).
  void Drain(int64_t limit) {
    while (outstanding_.load() > 0 && Now() < limit) {
      timespec ts{0, 1000000};
      nanosleep(&ts, nullptr);
    }
    if (outstanding_.load() > 0) {
      expired_ = true;
      std::lock_guard<std::mutex> lock(mutex_);
      for (Call* call : open_) call->context.TryCancel();
    }
    while (outstanding_.load() > 0) {
      timespec ts{0, 1000000};
      nanosleep(&ts, nullptr);
    }
    queue_.Shutdown();
  }

  void Write(const char* path) {
    std::lock_guard<std::mutex> lock(records_mutex_);
    FILE* out = std::fopen(path, "wb");
    if (out == nullptr || std::fwrite(records_.data(), sizeof(records_[0]), records_.size(), out) != records_.size()) {
      std::perror(path);
      std::exit(1);
    }
    std::fclose(out);
  }

 private:
  void Record(const std::array<int64_t, 4>& record) {
    std::lock_guard<std::mutex> lock(records_mutex_);
    records_.push_back(record);
  }

  grpc::GenericStub stub_;
  grpc::CompletionQueue queue_;
  std::string method_;
  std::vector<grpc::Slice> payloads_;
  int64_t deadline_ns_;
  int64_t max_inflight_;
  std::atomic<size_t> next_{0};
  std::atomic<int64_t> outstanding_{0};
  std::atomic<bool> expired_{false};
  std::mutex mutex_;
  std::unordered_set<Call*> open_;
  std::mutex records_mutex_;
  std::vector<std::array<int64_t, 4>> records_;
};

std::vector<grpc::Slice> ReadPayloads(const char* path) {
  std::string data = ReadFile(path);
  std::vector<grpc::Slice> payloads;
  size_t at = 0;
  while (at + 4 <= data.size()) {
    uint32_t size = uint8_t(data[at]) | uint8_t(data[at + 1]) << 8 | uint8_t(data[at + 2]) << 16 |
                    uint32_t(uint8_t(data[at + 3])) << 24;
    at += 4;
    if (at + size > data.size()) break;
    payloads.emplace_back(data.data() + at, size);
    at += size;
  }
  return payloads;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 11) {
    std::fprintf(stderr, "usage: see the header of loadtests/native/load.cc\n");
    return 2;
  }
  std::string target = argv[1];
  std::vector<grpc::Slice> payloads = ReadPayloads(argv[3]);
  int64_t deadline_ns = std::atoll(argv[4]), end_ns = std::atoll(argv[5]), drain_ns = std::atoll(argv[6]);
  int64_t max_inflight = std::atoll(argv[7]);
  const char* out = argv[8];
  std::string mode = argv[9];
  if (payloads.empty() || (mode != "open" && mode != "closed") || (mode == "closed" && argc < 12)) {
    std::fprintf(stderr, "bad arguments (no payloads, or unknown mode)\n");
    return 2;
  }
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(-1);
  arguments.SetMaxSendMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "could not connect to %s in 10 s\n", target.c_str());
    return 1;
  }
  Load load(channel, argv[2], std::move(payloads), deadline_ns, max_inflight);
  if (mode == "open") {
    std::string raw = ReadFile(argv[10]);
    std::vector<int64_t> schedule(raw.size() / 8);
    std::copy(raw.data(), raw.data() + schedule.size() * 8, reinterpret_cast<char*>(schedule.data()));
    std::thread reaper([&] { load.Reap([](int) {}); });
    for (int64_t intended : schedule) {
      SleepUntil(intended);
      load.Send(intended, -1);
    }
    load.Drain(Now() + deadline_ns + drain_ns);
    reaper.join();
  } else {
    int concurrency = std::atoi(argv[10]);
    int64_t start_ns = std::atoll(argv[11]);
    SleepUntil(start_ns);
    std::thread reaper([&] {
      load.Reap([&](int chain) {
        int64_t now = Now();
        if (chain >= 0 && now < end_ns) load.Send(now, chain);
      });
    });
    for (int chain = 0; chain < concurrency; ++chain) load.Send(Now(), chain);
    SleepUntil(end_ns);
    load.Drain(end_ns + deadline_ns + drain_ns);
    reaper.join();
  }
  load.Write(out);
  return 0;
}
