// One plaintext HTTP/2 connection carrying gRPC unary calls (contract in h2.h).
#include "h2.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace h2 {
namespace {

enum : uint8_t { kData = 0, kHeaders = 1, kRstStream = 3, kSettings = 4, kPing = 6, kGoaway = 7 };
enum : uint8_t { kWindowUpdate = 8, kContinuation = 9 };
enum : uint8_t { kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4, kPadded = 0x8, kPriority = 0x20 };
constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr int64_t kMaxWindow = 0x7fffffff;
constexpr uint32_t kOurMaxFrame = 16384;  // we advertise the default
constexpr int kGrpcPrefix = 5;            // compressed flag and a 4-byte length before each message

// gRPC codes
constexpr int kCancelled = 1, kUnknown = 2, kResourceExhausted = 8, kPermissionDenied = 7;
constexpr int kUnimplemented = 12, kInternal = 13, kUnavailable = 14, kUnauthenticated = 16;

uint32_t Read32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

void Append32(std::string* out, uint32_t value) {
  const char bytes[4] = {char(value >> 24), char(value >> 16), char(value >> 8), char(value)};
  out->append(bytes, 4);
}

int64_t Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// How gRPC clients read an HTTP status that came without a grpc-status.
int CodeOfHttpStatus(int status) {
  switch (status) {
    case 400: return kInternal;
    case 401: return kUnauthenticated;
    case 403: return kPermissionDenied;
    case 404: return kUnimplemented;
    case 429: case 502: case 503: case 504: return kUnavailable;
    default: return kUnknown;
  }
}

// How gRPC clients read a RST_STREAM error code.
int CodeOfReset(uint32_t error) {
  switch (error) {
    case 0x7: return kUnavailable;  // REFUSED_STREAM
    case 0x8: return kCancelled;    // CANCEL
    case 0xb: return kResourceExhausted;  // ENHANCE_YOUR_CALM
    case 0xc: return kPermissionDenied;   // INADEQUATE_SECURITY
    default: return kInternal;
  }
}

// grpc-timeout: at most 8 digits and a unit.
std::string Timeout(int64_t timeout_ns) {
  int64_t micros = std::max<int64_t>(1, (timeout_ns + 999) / 1000);
  if (micros <= 99999999) return std::to_string(micros) + "u";
  int64_t millis = (micros + 999) / 1000;
  if (millis <= 99999999) return std::to_string(millis) + "m";
  return std::to_string(std::min<int64_t>((millis + 999) / 1000, 99999999)) + "S";
}

}  // namespace

Connection::~Connection() {
  if (fd_ >= 0) close(fd_);
}

bool Connection::Fail(const std::string& error) {
  if (error_.empty()) error_ = error;
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  last_stream_ = 0;
  return false;
}

bool Connection::Connect(const std::string& target, int64_t timeout_ns, std::string* error) {
  size_t colon = target.rfind(':');
  if (colon == std::string::npos) {
    *error = "target " + target + " is not host:port";
    return false;
  }
  std::string host = target.substr(0, colon), port = target.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{}, *found = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
    *error = "cannot resolve " + target;
    return false;
  }
  for (addrinfo* at = found; at != nullptr && fd_ < 0; at = at->ai_next) {
    fd_ = socket(at->ai_family, at->ai_socktype | SOCK_CLOEXEC, at->ai_protocol);
    if (fd_ >= 0 && connect(fd_, at->ai_addr, at->ai_addrlen) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  freeaddrinfo(found);
  if (fd_ < 0) {
    *error = "cannot connect to " + target + ": " + std::strerror(errno);
    return false;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
  authority_ = target;
  out_.append(kPreface, sizeof kPreface - 1);
  WriteFrameHeader(18, kSettings, 0, 0);
  for (auto [id, value] : {std::pair<uint16_t, uint32_t>{0x1, 0}, {0x2, 0}, {0x4, uint32_t(kMaxWindow)}}) {
    out_.push_back(char(id >> 8));
    out_.push_back(char(id));
    Append32(&out_, value);
  }
  WriteFrameHeader(4, kWindowUpdate, 0, 0);
  Append32(&out_, uint32_t(kMaxWindow - 65535));
  int64_t limit = Now() + timeout_ns;
  std::vector<Finished> none;
  while (!settings_seen_) {
    if (!Flush() || !Read(&none)) break;
    int64_t left = limit - Now();
    if (left <= 0) {
      Fail("no HTTP/2 SETTINGS from " + target + " in time");
      break;
    }
    pollfd wait{fd_, short(POLLIN | (WantsWrite() ? POLLOUT : 0)), 0};
    timespec ts{time_t(left / 1000000000LL), long(left % 1000000000LL)};
    ppoll(&wait, 1, &ts, nullptr);
  }
  if (!settings_seen_) *error = error_.empty() ? "connection to " + target + " failed" : error_;
  return settings_seen_;
}

void Connection::SetMethod(const std::string& path) {
  // The first call adds the fixed fields to the server's dynamic table; later calls name them by index,
  // as gRPC's own clients do (literals on every call cost the server's parser).
  const std::pair<int, std::pair<std::string, std::string>> fixed[] = {
      {4, {":path", path}}, {1, {":authority", authority_}}, {31, {"content-type", "application/grpc"}},
      {0, {"te", "trailers"}}, {58, {"user-agent", "infergate-load-native"}},
  };
  size_t table = 0;
  for (const auto& field : fixed) table += hpack::EntrySize(field.second.first, field.second.second);
  const bool indexing = table <= peer_table_size_;
  first_headers_.assign({char(0x83), char(0x86)});  // :method POST, :scheme http (static 3 and 6)
  request_headers_ = first_headers_;
  uint64_t newest = 61 + std::size(fixed);  // the first field ends up oldest
  for (const auto& [index, field] : fixed) {
    hpack::AppendLiteral(&first_headers_, index, field.first, field.second, indexing);
    if (indexing) {
      hpack::AppendInteger(&request_headers_, 0x80, 7, newest--);
    } else {
      hpack::AppendLiteral(&request_headers_, index, field.first, field.second);
    }
  }
}

void Connection::WriteFrameHeader(uint32_t length, uint8_t type, uint8_t flags, uint32_t stream) {
  const char header[9] = {char(length >> 16), char(length >> 8), char(length), char(type), char(flags),
                          char(stream >> 24), char(stream >> 16), char(stream >> 8), char(stream)};
  out_.append(header, 9);
}

uint32_t Connection::StartCall(const std::string& message, int64_t timeout_ns) {
  uint32_t stream = next_stream_;
  next_stream_ += 2;
  size_t header_at = out_.size();
  WriteFrameHeader(0, kHeaders, kEndHeaders, stream);
  out_.append(stream == 1 ? first_headers_ : request_headers_);
  hpack::AppendLiteral(&out_, 0, "grpc-timeout", Timeout(timeout_ns));
  uint32_t length = uint32_t(out_.size() - header_at - 9);
  out_[header_at] = char(length >> 16);
  out_[header_at + 1] = char(length >> 8);
  out_[header_at + 2] = char(length);
  Blocked state{&message, 0, peer_initial_window_};
  SendData(stream, &state);
  if (state.at < message.size() + kGrpcPrefix) {
    blocked_.emplace(stream, state);
    blocked_order_.push_back(stream);
  }
  return stream;
}

// Sends as much of the framed message as the windows and the frame size allow.
void Connection::SendData(uint32_t stream, Blocked* state) {
  const std::string& message = *state->message;
  const size_t total = message.size() + kGrpcPrefix;
  const uint32_t size = uint32_t(message.size());
  const char prefix[kGrpcPrefix] = {0, char(size >> 24), char(size >> 16), char(size >> 8), char(size)};
  while (state->at < total) {
    int64_t room = std::min<int64_t>({int64_t(total - state->at), max_frame_, send_window_, state->window});
    if (room <= 0) return;
    size_t end = state->at + size_t(room);
    WriteFrameHeader(uint32_t(room), kData, end == total ? kEndStream : 0, stream);
    if (state->at < kGrpcPrefix) {
      size_t head = std::min<size_t>(kGrpcPrefix, end);
      out_.append(prefix + state->at, head - state->at);
      state->at = head;
    }
    if (end > state->at) out_.append(message, state->at - kGrpcPrefix, end - state->at);
    state->at = end;
    send_window_ -= room;
    state->window -= room;
  }
}

void Connection::ResumeBlocked() {
  for (auto at = blocked_order_.begin(); at != blocked_order_.end();) {
    auto found = blocked_.find(*at);
    if (found != blocked_.end()) {
      SendData(found->first, &found->second);
      if (found->second.at < found->second.message->size() + kGrpcPrefix) {
        ++at;
        continue;
      }
      blocked_.erase(found);
    }
    at = blocked_order_.erase(at);
  }
}

void Connection::Cancel(uint32_t stream) {
  if (blocked_.erase(stream) > 0) {
    blocked_order_.erase(std::find(blocked_order_.begin(), blocked_order_.end(), stream));
  }
  if (fd_ < 0) return;
  WriteFrameHeader(4, kRstStream, 0, stream);
  Append32(&out_, 0x8);  // CANCEL
}

bool Connection::Flush() {
  while (fd_ >= 0 && out_at_ < out_.size()) {
    ssize_t wrote = write(fd_, out_.data() + out_at_, out_.size() - out_at_);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return Fail(std::string("write failed: ") + std::strerror(errno));
    }
    out_at_ += size_t(wrote);
  }
  if (out_at_ == out_.size()) {
    out_.clear();
    out_at_ = 0;
  }
  return fd_ >= 0;
}

bool Connection::Read(std::vector<Finished>* finished) {
  constexpr size_t kChunk = 65536;
  for (int reads = 0; fd_ >= 0 && reads < 16; ++reads) {
    if (in_.size() - in_end_ < kChunk) in_.resize(in_end_ + kChunk);
    ssize_t got = read(fd_, in_.data() + in_end_, in_.size() - in_end_);
    if (got == 0) return Fail("the server closed the connection");
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return Fail(std::string("read failed: ") + std::strerror(errno));
    }
    in_end_ += size_t(got);
    if (in_end_ < in_.size()) break;
  }
  while (fd_ >= 0 && in_end_ - in_at_ >= 9) {
    const uint8_t* header = in_.data() + in_at_;
    uint32_t length = uint32_t(header[0]) << 16 | uint32_t(header[1]) << 8 | header[2];
    if (length > kOurMaxFrame) return Fail("frame larger than SETTINGS_MAX_FRAME_SIZE");
    if (in_end_ - in_at_ < 9 + length) break;
    uint32_t stream = Read32(header + 5) & 0x7fffffff;
    if (!HandleFrame(header[3], header[4], stream, header + 9, length, finished)) return false;
    in_at_ += 9 + length;
  }
  std::memmove(in_.data(), in_.data() + in_at_, in_end_ - in_at_);  // keep a partial frame at the front
  in_end_ -= in_at_;
  in_at_ = 0;
  return fd_ >= 0;
}

bool Connection::HandleFrame(uint8_t type, uint8_t flags, uint32_t stream, const uint8_t* payload,
                             uint32_t length, std::vector<Finished>* finished) {
  if (block_stream_ != 0) {  // a header block is open: only its CONTINUATIONs may follow
    if (type != kContinuation || stream != block_stream_) return Fail("header block interrupted");
    block_.append(reinterpret_cast<const char*>(payload), length);
    return (flags & kEndHeaders) == 0 || HandleHeaderBlock(finished);
  }
  switch (type) {
    case kData:
      received_unacknowledged_ += length;
      if (received_unacknowledged_ >= (1 << 30)) {
        WriteFrameHeader(4, kWindowUpdate, 0, 0);
        Append32(&out_, uint32_t(received_unacknowledged_));
        received_unacknowledged_ = 0;
      }
      if (flags & kEndStream) finished->push_back({stream, kInternal});  // no trailers
      return true;
    case kHeaders: {
      if (stream == 0) return Fail("HEADERS on stream 0");
      uint32_t skip = 0, padding = 0;
      if (flags & kPadded) {
        if (length < 1) return Fail("bad HEADERS padding");
        padding = payload[0];
        skip = 1;
      }
      if (flags & kPriority) skip += 5;
      if (skip + padding > length) return Fail("bad HEADERS frame");
      block_stream_ = stream;
      block_end_stream_ = (flags & kEndStream) != 0;
      block_.assign(reinterpret_cast<const char*>(payload + skip), length - skip - padding);
      return (flags & kEndHeaders) == 0 || HandleHeaderBlock(finished);
    }
    case kRstStream:
      if (length != 4) return Fail("bad RST_STREAM frame");
      finished->push_back({stream, CodeOfReset(Read32(payload))});
      return true;
    case kSettings:
      return HandleSettings(flags, payload, length);
    case kPing:
      if (length != 8) return Fail("bad PING frame");
      if ((flags & kAck) == 0) {
        WriteFrameHeader(8, kPing, kAck, 0);
        out_.append(reinterpret_cast<const char*>(payload), 8);
      }
      return true;
    case kGoaway:
      if (length < 8) return Fail("bad GOAWAY frame");
      going_away_ = true;
      last_stream_ = std::min(last_stream_, Read32(payload) & 0x7fffffff);
      return true;
    case kWindowUpdate: {
      if (length != 4) return Fail("bad WINDOW_UPDATE frame");
      int64_t increment = Read32(payload) & 0x7fffffff;
      if (stream == 0) {
        send_window_ += increment;
      } else {
        auto found = blocked_.find(stream);
        if (found != blocked_.end()) found->second.window += increment;
      }
      ResumeBlocked();
      return true;
    }
    case kContinuation:
      return Fail("CONTINUATION without HEADERS");
    default:  // PRIORITY, PUSH_PROMISE (refused by our SETTINGS, never sent), extensions: ignored
      return true;
  }
}

bool Connection::HandleSettings(uint8_t flags, const uint8_t* payload, uint32_t length) {
  if (flags & kAck) return true;
  if (length % 6 != 0) return Fail("bad SETTINGS frame");
  for (uint32_t at = 0; at < length; at += 6) {
    uint16_t id = uint16_t(payload[at] << 8 | payload[at + 1]);
    uint32_t value = Read32(payload + at + 2);
    if (id == 0x1) peer_table_size_ = value;
    if (id == 0x3) max_streams_ = value;
    if (id == 0x5) max_frame_ = value;
    if (id == 0x4) {
      int64_t delta = int64_t(value) - peer_initial_window_;
      peer_initial_window_ = value;
      for (auto& [stream, state] : blocked_) state.window += delta;
    }
  }
  WriteFrameHeader(0, kSettings, kAck, 0);
  settings_seen_ = true;
  ResumeBlocked();
  return true;
}

bool Connection::HandleHeaderBlock(std::vector<Finished>* finished) {
  hpack::Fields fields;
  std::string error;
  bool decoded = decoder_.Decode(reinterpret_cast<const uint8_t*>(block_.data()), block_.size(), &fields, &error);
  uint32_t stream = block_stream_;
  block_.clear();
  block_stream_ = 0;
  if (!decoded) return Fail("HPACK: " + error);
  if (block_end_stream_) {
    int code = fields.grpc_status >= 0 ? fields.grpc_status
               : fields.http_status >= 0 && fields.http_status != 200 ? CodeOfHttpStatus(fields.http_status)
                                                                       : kUnknown;
    finished->push_back({stream, code});
  }
  return true;
}

}  // namespace h2
