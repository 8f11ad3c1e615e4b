// HPACK (RFC 7541) as far as infergate-load's native engine needs it: encoding a request's header block
// from literals and the static table, and decoding a response's block far enough to read `:status` and
// `grpc-status` while keeping the dynamic table in step with the server's encoder.
//
// Contract: Decode() walks every field of a block (the dynamic table must see them all) and reports
// the two it knows. It refuses (returns false with a reason) what it cannot follow: a Huffman-coded
// header name, a Huffman-coded value of a field it must read or insert into a non-empty table, an index
// out of range. The engine advertises SETTINGS_HEADER_TABLE_SIZE = 0, so a conforming encoder keeps no
// dynamic entries; gRPC core's encoder never Huffman-codes names or non-binary values.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <utility>

namespace hpack {

// Appends ``value`` as an HPACK integer with an N-bit prefix; ``first`` holds the bits above the prefix.
inline void AppendInteger(std::string* out, uint8_t first, int prefix_bits, uint64_t value) {
  const uint64_t limit = (1u << prefix_bits) - 1;
  if (value < limit) {
    out->push_back(char(first | value));
    return;
  }
  out->push_back(char(first | limit));
  value -= limit;
  while (value >= 128) {
    out->push_back(char(0x80 | (value & 0x7f)));
    value >>= 7;
  }
  out->push_back(char(value));
}

// A literal field whose name is static-table entry ``index`` (0: a new literal name), without indexing or,
// with ``indexing``, added to the peer's dynamic table (RFC 7541 6.2).
inline void AppendLiteral(std::string* out, int index, const std::string& name, const std::string& value,
                          bool indexing = false) {
  if (indexing) {
    AppendInteger(out, 0x40, 6, uint64_t(index));
  } else {
    AppendInteger(out, 0x00, 4, uint64_t(index));
  }
  if (index == 0) {
    AppendInteger(out, 0x00, 7, name.size());
    out->append(name);
  }
  AppendInteger(out, 0x00, 7, value.size());
  out->append(value);
}

// The size a field takes in a dynamic table (RFC 7541 4.1).
inline size_t EntrySize(const std::string& name, const std::string& value) { return name.size() + value.size() + 32; }

// What a decoded block said: -1 where the field was absent.
struct Fields {
  int http_status = -1;
  int grpc_status = -1;
};

class Decoder {
 public:
  // Decodes one complete header block (HEADERS plus CONTINUATIONs, padding removed).
  bool Decode(const uint8_t* data, size_t size, Fields* fields, std::string* error);

 private:
  struct Entry {
    std::string name;
    std::string value;
    bool huffman_value = false;
  };
  bool Lookup(uint64_t index, Entry* entry, std::string* error) const;
  void Insert(Entry entry);
  void Evict();

  std::deque<Entry> table_;  // newest first (index 62 is table_[0])
  size_t size_ = 0;
  size_t max_size_ = 4096;  // the protocol default until the encoder signals an update
};

}  // namespace hpack
