// One plaintext HTTP/2 connection (RFC 9113) carrying gRPC unary calls, for infergate-load's native
// engine: no threads, no timers, no allocation per call beyond the frames it writes. The engine owns
// the clock, the deadlines and the queue of calls waiting for a stream; this class owns the wire.
//
// Contracts:
// * Connect() blocks until the server's SETTINGS arrived, so MaxStreams() is the server's limit before
//   the first call. The client advertises an empty HPACK table, no push, and the largest windows.
// * StartCall() writes HEADERS (with grpc-timeout) and the request's DATA into the output buffer, held
//   back by the server's flow-control windows where they are short; Flush() writes what it can without
//   blocking. The caller keeps at most MaxStreams() calls started.
// * Read() parses what the socket has and appends each finished call (stream id, gRPC status code) to
//   ``finished``: the trailers' grpc-status, an HTTP status mapped as gRPC clients map it, or a
//   RST_STREAM code mapped likewise. After GOAWAY or a failed socket Usable() turns false, and the
//   server answers no stream above LastStream() (0 once the socket failed): the caller finishes those.
// * ``message`` passed to StartCall() must outlive the call (the engine's payloads do).
// * Cancel() resets a started stream (RST_STREAM CANCEL); its late frames are ignored.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hpack.h"

namespace h2 {

struct Finished {
  uint32_t stream;
  int code;  // a gRPC status code
};

class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Connects to ``target`` (host:port, [v6]:port) and exchanges SETTINGS; false with ``error`` if not.
  bool Connect(const std::string& target, int64_t timeout_ns, std::string* error);
  // Sets the request line every call carries (``path``: /package.Service/Method).
  void SetMethod(const std::string& path);

  // Starts a call with ``message`` (a serialized request) and a grpc-timeout of ``timeout_ns``.
  uint32_t StartCall(const std::string& message, int64_t timeout_ns);
  void Cancel(uint32_t stream);
  // Writes buffered frames; false when the socket failed (then Usable() is false).
  bool Flush();
  bool WantsWrite() const { return out_.size() > out_at_; }
  bool Read(std::vector<Finished>* finished);

  int fd() const { return fd_; }
  bool Usable() const { return fd_ >= 0 && !going_away_; }
  uint32_t MaxStreams() const { return max_streams_; }
  uint32_t LastStream() const { return last_stream_; }
  const std::string& Error() const { return error_; }

 private:
  struct Blocked {  // a request whose DATA waits for window
    const std::string* message;
    size_t at;  // bytes of the framed message already sent
    int64_t window;
  };
  void WriteFrameHeader(uint32_t length, uint8_t type, uint8_t flags, uint32_t stream);
  void SendData(uint32_t stream, Blocked* state);
  void ResumeBlocked();
  bool HandleFrame(uint8_t type, uint8_t flags, uint32_t stream, const uint8_t* payload, uint32_t length,
                   std::vector<Finished>* finished);
  bool HandleSettings(uint8_t flags, const uint8_t* payload, uint32_t length);
  bool HandleHeaderBlock(std::vector<Finished>* finished);
  bool Fail(const std::string& error);

  int fd_ = -1;
  std::string authority_;
  std::string first_headers_;    // the first call's fixed fields, added to the server's table
  std::string request_headers_;  // later calls' fixed fields; grpc-timeout is appended per call
  std::string out_;
  size_t out_at_ = 0;
  std::vector<uint8_t> in_;  // bytes read: frames from in_at_ to in_end_
  size_t in_at_ = 0;
  size_t in_end_ = 0;
  hpack::Decoder decoder_;
  // header block being assembled (HEADERS then CONTINUATIONs)
  uint32_t block_stream_ = 0;
  bool block_end_stream_ = false;
  std::string block_;
  uint32_t next_stream_ = 1;
  uint32_t max_streams_ = 0x7fffffff;
  uint32_t max_frame_ = 16384;
  uint32_t peer_table_size_ = 4096;  // the server's HPACK table
  int64_t peer_initial_window_ = 65535;
  int64_t send_window_ = 65535;  // the connection's
  int64_t received_unacknowledged_ = 0;
  bool settings_seen_ = false;
  bool going_away_ = false;
  uint32_t last_stream_ = 0x7fffffff;
  std::unordered_map<uint32_t, Blocked> blocked_;
  std::deque<uint32_t> blocked_order_;  // oldest first; entries of unblocked streams are skipped
  std::string error_;
};

}  // namespace h2
