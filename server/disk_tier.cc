#include "server/disk_tier.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ramster {
namespace {

constexpr char kPagePrefix = 'p';
constexpr char kClientPrefix = 'c';
constexpr uint8_t kRecordVersion = 1;

void PutBE32(std::string* s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s->push_back(static_cast<char>(v >> (8 * i)));
}
void PutBE64(std::string* s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetBE(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string Prefix(uint32_t client) {
  std::string s(1, kPagePrefix);
  PutBE32(&s, client);
  return s;
}
std::string Prefix(uint32_t client, uint32_t pool) {
  std::string s = Prefix(client);
  PutBE32(&s, pool);
  return s;
}
std::string Prefix(uint32_t client, uint32_t pool, uint64_t object) {
  std::string s = Prefix(client, pool);
  PutBE64(&s, object);
  return s;
}

// The first key after every key that starts with `prefix`, or "" when there
// is none (all 0xFF).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    uint8_t last = static_cast<uint8_t>(prefix.back());
    if (last != 0xFF) {
      prefix.back() = static_cast<char>(last + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return prefix;
}

std::string EncodeHeader(const DiskPageHeader& h) {
  std::string s;
  s.reserve(kDiskHeaderSize);
  s.push_back(static_cast<char>(kRecordVersion));
  s.push_back(static_cast<char>(h.encoding));
  s.push_back(static_cast<char>(h.length >> 8));
  s.push_back(static_cast<char>(h.length));
  PutBE64(&s, h.generation);
  PutBE64(&s, h.checksum);
  return s;
}

absl::Status FromRocks(const rocksdb::Status& s) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsNotFound()) return absl::NotFoundError(s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(s.ToString());
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(s.ToString());
  return absl::InternalError(absl::StrCat("rocksdb: ", s.ToString()));
}

}  // namespace

std::string EncodeDiskPageKey(const DiskPageKey& key) {
  std::string s = Prefix(key.client, key.pool, key.object);
  PutBE64(&s, key.index);
  return s;
}

bool DecodeDiskPageKey(absl::string_view b, DiskPageKey* key) {
  if (b.size() != kDiskKeySize || b[0] != kPagePrefix) return false;
  key->client = static_cast<uint32_t>(GetBE(b.data() + 1, 4));
  key->pool = static_cast<uint32_t>(GetBE(b.data() + 5, 4));
  key->object = GetBE(b.data() + 9, 8);
  key->index = GetBE(b.data() + 17, 8);
  return true;
}

bool DecodeDiskPageHeader(absl::string_view b, DiskPageHeader* h) {
  if (b.size() < kDiskHeaderSize ||
      static_cast<uint8_t>(b[0]) != kRecordVersion) {
    return false;
  }
  h->encoding = static_cast<uint8_t>(b[1]);
  h->length = static_cast<uint16_t>(GetBE(b.data() + 2, 2));
  h->generation = GetBE(b.data() + 4, 8);
  h->checksum = GetBE(b.data() + 12, 8);
  return b.size() == kDiskHeaderSize + h->length;
}

DiskTier::Batch::Batch() : batch_(std::make_unique<rocksdb::WriteBatch>()) {}
DiskTier::Batch::~Batch() = default;

void DiskTier::Batch::PutPage(const DiskPageKey& key,
                              const DiskPageHeader& header,
                              absl::Span<const uint8_t> payload) {
  std::string value = EncodeHeader(header);
  value.append(reinterpret_cast<const char*>(payload.data()), payload.size());
  batch_->Put(EncodeDiskPageKey(key), value);
}

void DiskTier::Batch::DeletePage(const DiskPageKey& key) {
  batch_->Delete(EncodeDiskPageKey(key));
}

size_t DiskTier::Batch::count() const { return batch_->Count(); }

void DiskTier::Batch::Clear() { batch_->Clear(); }

DiskTier::DiskTier(rocksdb::DB* db) : db_(db) {}
DiskTier::~DiskTier() = default;

absl::StatusOr<std::unique_ptr<DiskTier>> DiskTier::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.compression = rocksdb::kNoCompression;
  options.bottommost_compression = rocksdb::kNoCompression;
  options.max_background_jobs = 2;
  options.write_buffer_size = 32 << 20;
  options.keep_log_file_num = 2;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &db);
  if (!s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open RocksDB in ", dir, ": ", s.ToString()));
  }
  return std::unique_ptr<DiskTier>(new DiskTier(db));
}

absl::Status DiskTier::Commit(Batch* batch) {
  if (batch->count() == 0) return absl::OkStatus();
  return FromRocks(db_->Write(rocksdb::WriteOptions(), batch->batch_.get()));
}

absl::Status DiskTier::GetPage(const DiskPageKey& key, DiskPageHeader* header,
                               std::string* payload) {
  std::string value;
  absl::Status s =
      FromRocks(db_->Get(rocksdb::ReadOptions(), EncodeDiskPageKey(key), &value));
  if (!s.ok()) return s;
  if (!DecodeDiskPageHeader(value, header)) {
    return absl::DataLossError("malformed page record on disk");
  }
  payload->assign(value, kDiskHeaderSize, std::string::npos);
  return absl::OkStatus();
}

absl::Status DiskTier::DeleteRange(const std::string& begin,
                                   const std::string& end) {
  return FromRocks(db_->DeleteRange(rocksdb::WriteOptions(),
                                    db_->DefaultColumnFamily(), begin, end));
}

absl::Status DiskTier::DeleteClient(uint32_t client) {
  std::string p = Prefix(client);
  return DeleteRange(p, PrefixEnd(p));
}

absl::Status DiskTier::DeletePool(uint32_t client, uint32_t pool) {
  std::string p = Prefix(client, pool);
  return DeleteRange(p, PrefixEnd(p));
}

absl::Status DiskTier::DeleteObject(uint32_t client, uint32_t pool,
                                    uint64_t object) {
  std::string p = Prefix(client, pool, object);
  return DeleteRange(p, PrefixEnd(p));
}

absl::Status DiskTier::ForEachPage(
    const std::function<void(const DiskPageKey&, const DiskPageHeader&)>& fn,
    const std::function<void(absl::string_view key)>& bad) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string start(1, kPagePrefix);
  for (it->Seek(start); it->Valid() && it->key().starts_with(start); it->Next()) {
    absl::string_view k(it->key().data(), it->key().size());
    absl::string_view v(it->value().data(), it->value().size());
    DiskPageKey key;
    DiskPageHeader header;
    if (!DecodeDiskPageKey(k, &key) || !DecodeDiskPageHeader(v, &header)) {
      bad(k);
      continue;
    }
    fn(key, header);
  }
  return FromRocks(it->status());
}

absl::Status DiskTier::PutClientMeta(absl::string_view name,
                                     absl::string_view value) {
  rocksdb::WriteOptions options;
  options.sync = true;
  std::string key = absl::StrCat(std::string(1, kClientPrefix), name);
  return FromRocks(db_->Put(options, key, rocksdb::Slice(value.data(), value.size())));
}

absl::Status DiskTier::ForEachClientMeta(
    const std::function<void(absl::string_view, absl::string_view)>& fn) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string start(1, kClientPrefix);
  for (it->Seek(start); it->Valid() && it->key().starts_with(start); it->Next()) {
    fn(absl::string_view(it->key().data() + 1, it->key().size() - 1),
       absl::string_view(it->value().data(), it->value().size()));
  }
  return FromRocks(it->status());
}

absl::Status DiskTier::Flush() {
  absl::Status s = FromRocks(db_->FlushWAL(/*sync=*/true));
  if (!s.ok()) return s;
  return FromRocks(db_->Flush(rocksdb::FlushOptions()));
}

}  // namespace ramster
