// HPACK decoding for infergate-load's native engine (contract in hpack.h).
#include "hpack.h"

#include <cstring>

namespace hpack {
namespace {

// RFC 7541 Appendix A: the static table, entries 1 to 61.
constexpr const char* kStatic[61][2] = {
    {":authority", ""}, {":method", "GET"}, {":method", "POST"}, {":path", "/"}, {":path", "/index.html"},
    {":scheme", "http"}, {":scheme", "https"}, {":status", "200"}, {":status", "204"}, {":status", "206"},
    {":status", "304"}, {":status", "400"}, {":status", "404"}, {":status", "500"}, {"accept-charset", ""},
    {"accept-encoding", "gzip, deflate"}, {"accept-language", ""}, {"accept-ranges", ""}, {"accept", ""},
    {"access-control-allow-origin", ""}, {"age", ""}, {"allow", ""}, {"authorization", ""},
    {"cache-control", ""}, {"content-disposition", ""}, {"content-encoding", ""}, {"content-language", ""},
    {"content-length", ""}, {"content-location", ""}, {"content-range", ""}, {"content-type", ""},
    {"cookie", ""}, {"date", ""}, {"etag", ""}, {"expect", ""}, {"expires", ""}, {"from", ""}, {"host", ""},
    {"if-match", ""}, {"if-modified-since", ""}, {"if-none-match", ""}, {"if-range", ""},
    {"if-unmodified-since", ""}, {"last-modified", ""}, {"link", ""}, {"location", ""}, {"max-forwards", ""},
    {"proxy-authenticate", ""}, {"proxy-authorization", ""}, {"range", ""}, {"referer", ""}, {"refresh", ""},
    {"retry-after", ""}, {"server", ""}, {"set-cookie", ""}, {"strict-transport-security", ""},
    {"transfer-encoding", ""}, {"user-agent", ""}, {"vary", ""}, {"via", ""}, {"www-authenticate", ""},
};
constexpr uint64_t kStaticSize = 61;
constexpr size_t kEntryOverhead = 32;  // RFC 7541 4.1

// Reads an integer with an N-bit prefix at ``*at``; false when the block ends first or it overflows.
bool ReadInteger(const uint8_t* data, size_t size, size_t* at, int prefix_bits, uint64_t* value) {
  if (*at >= size) return false;
  const uint64_t limit = (1u << prefix_bits) - 1;
  *value = data[(*at)++] & limit;
  if (*value < limit) return true;
  for (int shift = 0; shift < 56; shift += 7) {
    if (*at >= size) return false;
    uint8_t byte = data[(*at)++];
    *value += uint64_t(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Reads a string literal; ``huffman`` says whether its bytes are Huffman-coded (left undecoded).
bool ReadString(const uint8_t* data, size_t size, size_t* at, std::string* out, bool* huffman) {
  if (*at >= size) return false;
  *huffman = (data[*at] & 0x80) != 0;
  uint64_t length;
  if (!ReadInteger(data, size, at, 7, &length) || length > size - *at) return false;
  out->assign(reinterpret_cast<const char*>(data + *at), length);
  *at += length;
  return true;
}

// A decimal status, or -1 when ``text`` is not one.
int ParseStatus(const std::string& text) {
  if (text.empty() || text.size() > 4) return -1;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return -1;
    value = value * 10 + (c - '0');
  }
  return value;
}

}  // namespace

bool Decoder::Lookup(uint64_t index, Entry* entry, std::string* error) const {
  if (index >= 1 && index <= kStaticSize) {
    entry->name = kStatic[index - 1][0];
    entry->value = kStatic[index - 1][1];
    entry->huffman_value = false;
    return true;
  }
  if (index > kStaticSize && index - kStaticSize <= table_.size()) {
    *entry = table_[index - kStaticSize - 1];
    return true;
  }
  *error = "HPACK index " + std::to_string(index) + " is out of range";
  return false;
}

void Decoder::Evict() {
  while (size_ > max_size_ && !table_.empty()) {
    size_ -= table_.back().name.size() + table_.back().value.size() + kEntryOverhead;
    table_.pop_back();
  }
}

void Decoder::Insert(Entry entry) {
  size_t entry_size = entry.name.size() + entry.value.size() + kEntryOverhead;
  if (entry_size > max_size_) {  // RFC 7541 4.4: an entry larger than the table empties it
    table_.clear();
    size_ = 0;
    return;
  }
  size_ += entry_size;
  table_.push_front(std::move(entry));
  Evict();
}

bool Decoder::Decode(const uint8_t* data, size_t size, Fields* fields, std::string* error) {
  size_t at = 0;
  Entry entry;
  while (at < size) {
    uint8_t first = data[at];
    uint64_t index;
    if (first & 0x80) {  // indexed field
      if (!ReadInteger(data, size, &at, 7, &index) || !Lookup(index, &entry, error)) {
        if (error->empty()) *error = "truncated HPACK block";
        return false;
      }
    } else if ((first & 0xe0) == 0x20) {  // dynamic table size update
      if (!ReadInteger(data, size, &at, 5, &index) || index > 4096) {
        *error = "bad HPACK table size update";
        return false;
      }
      max_size_ = size_t(index);
      Evict();
      continue;
    } else {  // literal: with incremental indexing (01), without (0000) or never indexed (0001)
      bool indexing = (first & 0xc0) == 0x40;
      if (!ReadInteger(data, size, &at, indexing ? 6 : 4, &index)) {
        *error = "truncated HPACK block";
        return false;
      }
      bool huffman_name = false;
      if (index == 0) {
        if (!ReadString(data, size, &at, &entry.name, &huffman_name)) {
          *error = "truncated HPACK block";
          return false;
        }
        if (huffman_name) {
          *error = "the server sent a Huffman-coded header name, which this client does not decode";
          return false;
        }
      } else if (!Lookup(index, &entry, error)) {
        return false;
      }
      if (!ReadString(data, size, &at, &entry.value, &entry.huffman_value)) {
        *error = "truncated HPACK block";
        return false;
      }
      if (indexing) {
        if (entry.huffman_value && max_size_ > 0) {
          *error = "the server indexed a Huffman-coded value, which this client does not decode";
          return false;
        }
        Insert(entry);
      }
    }
    bool http = entry.name == ":status", grpc = entry.name == "grpc-status";
    if ((http || grpc) && entry.huffman_value) {
      *error = "the server Huffman-coded " + entry.name + ", which this client does not decode";
      return false;
    }
    if (http) fields->http_status = ParseStatus(entry.value);
    if (grpc) fields->grpc_status = ParseStatus(entry.value);
  }
  return true;
}

}  // namespace hpack
