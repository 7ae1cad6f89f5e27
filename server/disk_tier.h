// The overflow tier: RocksDB on local disk, holding persistent pages that do
// not fit in RAM, and the node's small amount of metadata (clients, epochs,
// quotas, pools) so that a restart finds everything again.
//
// Keys sort so that a client, a pool or an object is one contiguous range:
//   page:   'p' client:be32 pool:be32 object:be64 index:be64   (25 bytes)
//   client: 'c' name
// A page record is a 20-byte header (version, encoding, length, generation,
// checksum) followed by the payload. RocksDB's own compression is off: the
// payloads are compressed already.
//
// Thread safety: all methods may be called concurrently (RocksDB's guarantee).
#ifndef RAMSTER_SERVER_DISK_TIER_H_
#define RAMSTER_SERVER_DISK_TIER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace rocksdb {
class DB;
class WriteBatch;
}  // namespace rocksdb

namespace ramster {

struct DiskPageKey {
  uint32_t client = 0;
  uint32_t pool = 0;
  uint64_t object = 0;
  uint64_t index = 0;
};

struct DiskPageHeader {
  uint8_t encoding = 0;
  uint16_t length = 0;
  uint64_t generation = 0;
  uint64_t checksum = 0;
};

inline constexpr size_t kDiskKeySize = 25;
inline constexpr size_t kDiskHeaderSize = 20;

// Bytes a page record takes, as charged against the disk limit.
inline uint64_t DiskRecordBytes(uint32_t payload_length) {
  return kDiskKeySize + kDiskHeaderSize + payload_length;
}

class DiskTier {
 public:
  // Opens (creating if needed) the database in `dir`.
  static absl::StatusOr<std::unique_ptr<DiskTier>> Open(const std::string& dir);
  ~DiskTier();
  DiskTier(const DiskTier&) = delete;
  DiskTier& operator=(const DiskTier&) = delete;

  // A group of writes applied atomically by Commit.
  class Batch {
   public:
    Batch();
    ~Batch();
    void PutPage(const DiskPageKey& key, const DiskPageHeader& header,
                 absl::Span<const uint8_t> payload);
    void DeletePage(const DiskPageKey& key);
    size_t count() const;
    void Clear();

   private:
    friend class DiskTier;
    std::unique_ptr<rocksdb::WriteBatch> batch_;
  };
  absl::Status Commit(Batch* batch);

  // kNotFound when absent; kDataLoss when the record is malformed.
  absl::Status GetPage(const DiskPageKey& key, DiskPageHeader* header,
                       std::string* payload);

  // Deletes every page of a client; of a pool; of an object.
  absl::Status DeleteClient(uint32_t client);
  absl::Status DeletePool(uint32_t client, uint32_t pool);
  absl::Status DeleteObject(uint32_t client, uint32_t pool, uint64_t object);

  // Visits every page record's key and header (not the payload). A record
  // that does not parse is reported through `bad` and skipped.
  absl::Status ForEachPage(
      const std::function<void(const DiskPageKey&, const DiskPageHeader&)>& fn,
      const std::function<void(absl::string_view key)>& bad);

  absl::Status PutClientMeta(absl::string_view name, absl::string_view value);
  absl::Status ForEachClientMeta(
      const std::function<void(absl::string_view name, absl::string_view value)>&
          fn);

  // Makes everything written so far durable (memtable flushed, WAL synced).
  absl::Status Flush();

 private:
  explicit DiskTier(rocksdb::DB* db);
  absl::Status DeleteRange(const std::string& begin, const std::string& end);

  std::unique_ptr<rocksdb::DB> db_;
};

// Exposed for tests.
std::string EncodeDiskPageKey(const DiskPageKey& key);
bool DecodeDiskPageKey(absl::string_view bytes, DiskPageKey* key);
bool DecodeDiskPageHeader(absl::string_view bytes, DiskPageHeader* header);

}  // namespace ramster

#endif  // RAMSTER_SERVER_DISK_TIER_H_
