#include "kernel-shim/write_behind_device.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/mutex.h"
#include "gtest/gtest.h"
#include "kernel-shim/nbd_test_device.h"

namespace ramster {
namespace {

constexpr size_t kPage = 4096;
constexpr uint64_t kDeviceBytes = 4 << 20;  // 1024 slots

// The real device the shim's tests use (a tier stack over a cache and a
// file), with a gate in front of its writes and injected write failures, so
// that a test can hold a flush in flight or make the device behind fail.
class GatedDevice final : public BlockDevice {
 public:
  explicit GatedDevice(const std::string& file) {
    absl::StatusOr<NbdTestDevice> d = MakeNbdTestDevice(kDeviceBytes, 1 << 20, file);
    EXPECT_TRUE(d.ok()) << d.status();
    real_ = std::move(*d);
  }
  BlockDevice* real() { return real_.device.get(); }

  void Close() {
    MutexLock l(&mu_);
    open_ = false;
  }
  void Open() {
    MutexLock l(&mu_);
    open_ = true;
    cv_.SignalAll();
  }
  void FailWrites(bool fail) { fail_ = fail; }
  // Waits until a write batch is held at the closed gate.
  bool WaitForHeldWrite(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    MutexLock l(&mu_);
    while (held_ == 0) {
      if (absl::Now() >= deadline) return false;
      cv_.WaitFor(absl::Milliseconds(5));
    }
    return true;
  }
  // First byte of every page written behind, per slot, in order.
  std::vector<uint8_t> WritesOf(uint64_t slot) {
    MutexLock l(&mu_);
    std::vector<uint8_t> out;
    for (const auto& [s, b] : log_) {
      if (s == slot) out.push_back(b);
    }
    return out;
  }
  uint64_t pages_written() {
    MutexLock l(&mu_);
    return log_.size();
  }

  uint64_t size() const override { return real_.device->size(); }
  absl::Status Read(uint64_t offset, absl::Span<uint8_t> out) override {
    return real_.device->Read(offset, out);
  }
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    Io io{offset, absl::MakeSpan(const_cast<uint8_t*>(data.data()), data.size()), {}};
    WriteBatch(absl::MakeSpan(&io, 1));
    return io.status;
  }
  absl::Status Trim(uint64_t offset, uint64_t length) override {
    return real_.device->Trim(offset, length);
  }
  absl::Status WriteZeroes(uint64_t offset, uint64_t length) override {
    return real_.device->WriteZeroes(offset, length);
  }
  void ReadBatch(absl::Span<Io> ios) override { real_.device->ReadBatch(ios); }
  void WriteBatch(absl::Span<Io> ios) override {
    {
      MutexLock l(&mu_);
      ++held_;
      cv_.SignalAll();
      while (!open_) cv_.Wait();
      --held_;
    }
    if (fail_) {
      for (Io& io : ios) io.status = absl::InternalError("injected write failure");
      return;
    }
    real_.device->WriteBatch(ios);
    MutexLock l(&mu_);
    for (const Io& io : ios) {
      for (size_t off = 0; io.status.ok() && off + kPage <= io.data.size(); off += kPage) {
        log_.push_back({(io.offset + off) / kPage, io.data[off]});
      }
    }
  }
  absl::Status Flush() override { return real_.device->Flush(); }
  bool can_multi_conn() const override { return true; }

 private:
  NbdTestDevice real_;
  Mutex mu_;
  CondVar cv_{&mu_};
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::pair<uint64_t, uint8_t>> log_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> fail_{false};
};

std::vector<uint8_t> PageOf(uint8_t fill, size_t pages = 1) {
  std::vector<uint8_t> p(pages * kPage);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(fill + (i % 7 == 0 ? i / 7 : 0));
  p[0] = fill;
  for (size_t k = 0; k < pages; ++k) p[k * kPage] = fill;
  return p;
}

std::vector<uint8_t> ReadPages(BlockDevice* d, uint64_t slot, size_t pages = 1) {
  std::vector<uint8_t> out(pages * kPage, 0xEE);
  absl::Status s = d->Read(slot * kPage, absl::MakeSpan(out));
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

class WriteBehindTest : public ::testing::Test {
 protected:
  void SetUp() override {
    file_ = absl::StrCat(::testing::TempDir(), "/wb-", getpid(), "-",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    inner_ = std::make_unique<GatedDevice>(file_);
  }
  void TearDown() override {
    dev_.reset();
    inner_.reset();
    unlink(file_.c_str());
  }
  void Make(uint64_t capacity_pages, int flushers = 2, size_t coalesce_pages = 64,
            absl::Duration coalesce_delay = absl::Milliseconds(1), bool retain = true) {
    WriteBehindOptions o;
    o.retain = retain;
    o.capacity_bytes = capacity_pages * kPage;
    o.flushers = flushers;
    o.retry_delay = absl::Milliseconds(5);
    o.coalesce_pages = coalesce_pages;
    o.coalesce_delay = coalesce_delay;
    absl::StatusOr<std::unique_ptr<WriteBehindDevice>> d = WriteBehindDevice::Create(inner_.get(), o);
    ASSERT_TRUE(d.ok()) << d.status();
    dev_ = std::move(*d);
  }

  std::string file_;
  std::unique_ptr<GatedDevice> inner_;
  std::unique_ptr<WriteBehindDevice> dev_;
};

TEST_F(WriteBehindTest, RejectsBadOptions) {
  WriteBehindOptions o;
  o.capacity_bytes = kPage;  // one page: too small
  EXPECT_EQ(WriteBehindDevice::Create(inner_.get(), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.capacity_bytes = 10 * kPage + 1;
  EXPECT_EQ(WriteBehindDevice::Create(inner_.get(), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.capacity_bytes = 10 * kPage;
  o.flushers = 0;
  EXPECT_EQ(WriteBehindDevice::Create(inner_.get(), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.flushers = 1;
  o.coalesce_delay = absl::Milliseconds(-1);
  EXPECT_EQ(WriteBehindDevice::Create(inner_.get(), o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WriteBehindTest, AcknowledgedWriteIsReadBackBeforeAndAfterItGoesOut) {
  Make(16);
  inner_->Close();
  const std::vector<uint8_t> a = PageOf(0xA1);
  ASSERT_TRUE(dev_->Write(3 * kPage, a).ok());  // returns although the device is held
  EXPECT_EQ(ReadPages(dev_.get(), 3), a);
  EXPECT_EQ(ReadPages(inner_->real(), 3), std::vector<uint8_t>(kPage, 0));  // not there yet
  EXPECT_EQ(dev_->stats().staged_pages, 1u);
  EXPECT_GE(dev_->stats().read_hits, 1u);
  inner_->Open();
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(ReadPages(inner_->real(), 3), a);
  EXPECT_EQ(ReadPages(dev_.get(), 3), a);
  WriteBehindDevice::Stats st = dev_->stats();
  EXPECT_EQ(st.staged_pages, 0u);
  EXPECT_EQ(st.flushed_pages, 1u);
  EXPECT_EQ(st.staged_writes, 1u);
}

TEST_F(WriteBehindTest, ReadMixesStagedAndBehindPagesAndPartialRanges) {
  Make(16);
  const std::vector<uint8_t> behind = PageOf(0x10, 3);
  ASSERT_TRUE(inner_->real()->Write(10 * kPage, behind).ok());
  inner_->Close();
  const std::vector<uint8_t> staged = PageOf(0x77);
  ASSERT_TRUE(dev_->Write(11 * kPage, staged).ok());
  std::vector<uint8_t> want = behind;
  std::memcpy(want.data() + kPage, staged.data(), kPage);
  EXPECT_EQ(ReadPages(dev_.get(), 10, 3), want);
  // A read that starts and ends inside pages.
  std::vector<uint8_t> part(kPage + 200);
  ASSERT_TRUE(dev_->Read(10 * kPage + kPage - 100, absl::MakeSpan(part)).ok());
  EXPECT_EQ(0, std::memcmp(part.data(), want.data() + kPage - 100, part.size()));
  // A batch of reads, one staged, one not.
  std::vector<uint8_t> r1(kPage), r2(kPage);
  BlockDevice::Io ios[2] = {{11 * kPage, absl::MakeSpan(r1), {}},
                            {12 * kPage, absl::MakeSpan(r2), {}}};
  dev_->ReadBatch(absl::MakeSpan(ios));
  ASSERT_TRUE(ios[0].status.ok() && ios[1].status.ok());
  EXPECT_EQ(r1, staged);
  EXPECT_EQ(0, std::memcmp(r2.data(), behind.data() + 2 * kPage, kPage));
  inner_->Open();
}

TEST_F(WriteBehindTest, ANewerCopyGoesOutAfterTheOneInFlight) {
  Make(16);
  inner_->Close();
  ASSERT_TRUE(dev_->Write(5 * kPage, PageOf(1)).ok());
  ASSERT_TRUE(inner_->WaitForHeldWrite());  // copy 1 is in flight
  ASSERT_TRUE(dev_->Write(5 * kPage, PageOf(2)).ok());
  ASSERT_TRUE(dev_->Write(5 * kPage, PageOf(3)).ok());  // replaces queued copy 2
  EXPECT_EQ(ReadPages(dev_.get(), 5), PageOf(3));
  inner_->Open();
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(ReadPages(inner_->real(), 5), PageOf(3));
  EXPECT_EQ(inner_->WritesOf(5), (std::vector<uint8_t>{1, 3}));
  EXPECT_GE(dev_->stats().superseded, 2u);
}

TEST_F(WriteBehindTest, TrimDropsStagedCopiesAndWaitsForTheOneInFlight) {
  Make(16);
  inner_->Close();
  ASSERT_TRUE(dev_->Write(7 * kPage, PageOf(1)).ok());
  ASSERT_TRUE(inner_->WaitForHeldWrite());
  ASSERT_TRUE(dev_->Write(7 * kPage, PageOf(2)).ok());  // queued behind it
  ASSERT_TRUE(dev_->Write(8 * kPage, PageOf(9)).ok());  // not trimmed (partly)
  std::atomic<bool> trimmed{false};
  std::thread t([&] {
    EXPECT_TRUE(dev_->Trim(7 * kPage, kPage + 100).ok());
    trimmed = true;
  });
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(trimmed.load());  // copy 1 is still on its way
  inner_->Open();
  t.join();
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(ReadPages(dev_.get(), 7), std::vector<uint8_t>(kPage, 0));
  EXPECT_EQ(ReadPages(inner_->real(), 7), std::vector<uint8_t>(kPage, 0));
  EXPECT_EQ(inner_->WritesOf(7), (std::vector<uint8_t>{1}));  // copy 2 never went out
  std::vector<uint8_t> want = PageOf(9);
  std::memset(want.data(), 0, 100);
  EXPECT_EQ(ReadPages(dev_.get(), 8), want);
  EXPECT_EQ(ReadPages(inner_->real(), 8), want);
}

TEST_F(WriteBehindTest, PartialWriteIsMergedIntoTheStagedPage) {
  Make(16);
  inner_->Close();
  const std::vector<uint8_t> a = PageOf(0x42);
  ASSERT_TRUE(dev_->Write(2 * kPage, a).ok());
  std::thread opener([&] {
    absl::SleepFor(absl::Milliseconds(30));
    inner_->Open();
  });
  const std::vector<uint8_t> patch(100, 0xCC);
  ASSERT_TRUE(dev_->Write(2 * kPage + 10, patch).ok());  // written through, after `a`
  opener.join();
  std::vector<uint8_t> want = a;
  std::memcpy(want.data() + 10, patch.data(), patch.size());
  EXPECT_EQ(ReadPages(dev_.get(), 2), want);
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(ReadPages(inner_->real(), 2), want);
  EXPECT_EQ(dev_->stats().written_through, 1u);
}

TEST_F(WriteBehindTest, AFullAreaMakesWritersWaitForRoom) {
  Make(4);
  inner_->Close();
  // Fill the area (the first page goes in flight and is held there).
  for (uint64_t s = 10; s < 14; ++s) {
    ASSERT_TRUE(dev_->Write(s * kPage, PageOf(static_cast<uint8_t>(s))).ok());
  }
  std::atomic<bool> done{false};
  std::thread w([&] {
    EXPECT_TRUE(dev_->Write(20 * kPage, PageOf(20)).ok());
    done = true;
  });
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(done.load());
  inner_->Open();
  w.join();
  ASSERT_TRUE(dev_->Flush().ok());
  for (uint64_t s : {10, 11, 12, 13, 20}) {
    EXPECT_EQ(ReadPages(inner_->real(), s), PageOf(static_cast<uint8_t>(s)));
  }
  EXPECT_GE(dev_->stats().room_waits, 1u);
}

// The tests below change the device behind directly, under the area, which
// nothing else does: that shows where a read was served from. They let
// pages gather until a FLUSH, so that each FLUSH sends one batch, and read
// before it: a batch is retained when the device was read since the one
// before.
constexpr absl::Duration kUntilFlush = absl::Hours(1);
constexpr uint64_t kOtherSlot = 500;

TEST_F(WriteBehindTest, APageThatWentOutIsReadFromItsFrameUntilTheFrameIsWanted) {
  Make(4, 1, 64, kUntilFlush);
  ReadPages(dev_.get(), kOtherSlot);
  for (uint64_t s = 0; s < 4; ++s) {
    ASSERT_TRUE(dev_->Write(s * kPage, PageOf(static_cast<uint8_t>(s))).ok());
  }
  ASSERT_TRUE(dev_->Flush().ok());
  WriteBehindDevice::Stats st = dev_->stats();
  EXPECT_EQ(st.staged_pages, 0u);
  EXPECT_EQ(st.retained_pages, 4u);
  ASSERT_TRUE(inner_->real()->Write(0, PageOf(0xEE)).ok());
  EXPECT_EQ(ReadPages(dev_.get(), 0), PageOf(0));  // from its frame
  EXPECT_EQ(dev_->stats().retained_hits, 1u);
  // Two new pages take the frames of the two oldest.
  ASSERT_TRUE(dev_->Write(10 * kPage, PageOf(10, 2)).ok());
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(ReadPages(dev_.get(), 0), PageOf(0xEE));  // from behind now
  EXPECT_EQ(ReadPages(dev_.get(), 1), PageOf(1));
  EXPECT_EQ(ReadPages(dev_.get(), 2), PageOf(2));
  EXPECT_EQ(ReadPages(dev_.get(), 10, 2), PageOf(10, 2));
  st = dev_->stats();
  EXPECT_EQ(st.retained_hits, 4u);  // pages 0 (before), 2, 10 and 11
  EXPECT_EQ(st.retained_pages, 4u);
  EXPECT_EQ(st.room_waits, 0u);  // a retained frame is as good as a free one
}

TEST_F(WriteBehindTest, ChangesBehindDropTheRetainedCopy) {
  Make(16, 1, 64, kUntilFlush);
  ReadPages(dev_.get(), kOtherSlot);
  for (uint64_t s = 1; s <= 4; ++s) {
    ASSERT_TRUE(dev_->Write(s * kPage, PageOf(static_cast<uint8_t>(s))).ok());
  }
  ASSERT_TRUE(dev_->Flush().ok());
  ASSERT_EQ(dev_->stats().retained_pages, 4u);
  const std::vector<uint8_t> patch(100, 0xCC);
  ASSERT_TRUE(dev_->Write(1 * kPage + 10, patch).ok());  // written through
  std::vector<uint8_t> want = PageOf(1);
  std::memcpy(want.data() + 10, patch.data(), patch.size());
  EXPECT_EQ(ReadPages(dev_.get(), 1), want);
  ASSERT_TRUE(dev_->Trim(2 * kPage, kPage).ok());
  EXPECT_EQ(ReadPages(dev_.get(), 2), std::vector<uint8_t>(kPage, 0));
  ASSERT_TRUE(dev_->WriteZeroes(3 * kPage, kPage).ok());
  EXPECT_EQ(ReadPages(dev_.get(), 3), std::vector<uint8_t>(kPage, 0));
  ASSERT_TRUE(dev_->Write(4 * kPage, PageOf(44)).ok());  // replaces the retained copy
  EXPECT_EQ(ReadPages(dev_.get(), 4), PageOf(44));
  WriteBehindDevice::Stats st = dev_->stats();
  EXPECT_EQ(st.retained_hits, 0u);
  EXPECT_EQ(st.superseded, 0u);  // nothing was replaced before it went out
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(ReadPages(inner_->real(), 4), PageOf(44));
  EXPECT_EQ(ReadPages(dev_.get(), 4), PageOf(44));
  EXPECT_EQ(dev_->stats().retained_pages, 1u);  // only page 4's newest copy
}

TEST_F(WriteBehindTest, AStreamOfWritesAloneRetainsNothing) {
  Make(16, 1, 64, kUntilFlush);
  for (uint64_t s = 0; s < 4; ++s) ASSERT_TRUE(dev_->Write(s * kPage, PageOf(7)).ok());
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(dev_->stats().retained_pages, 0u);
  EXPECT_EQ(ReadPages(dev_.get(), 0), PageOf(7));  // from behind
  ASSERT_TRUE(dev_->Write(5 * kPage, PageOf(8)).ok());
  ASSERT_TRUE(dev_->Flush().ok());
  WriteBehindDevice::Stats st = dev_->stats();
  EXPECT_EQ(st.retained_pages, 1u);  // read since: retained
  EXPECT_EQ(st.retained_hits, 0u);
}

TEST_F(WriteBehindTest, WithoutRetentionPagesThatWentOutAreReadFromBehind) {
  Make(16, 1, 64, kUntilFlush, /*retain=*/false);
  ReadPages(dev_.get(), kOtherSlot);
  ASSERT_TRUE(dev_->Write(6 * kPage, PageOf(6)).ok());
  ASSERT_TRUE(dev_->Flush().ok());
  ASSERT_TRUE(inner_->real()->Write(6 * kPage, PageOf(0xEE)).ok());
  EXPECT_EQ(ReadPages(dev_.get(), 6), PageOf(0xEE));
  WriteBehindDevice::Stats st = dev_->stats();
  EXPECT_EQ(st.retained_pages, 0u);
  EXPECT_EQ(st.retained_hits, 0u);
}

// True once `done()` is (polled every 2 ms), false after `timeout`.
bool Eventually(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

TEST_F(WriteBehindTest, PagesGatherUntilABatchIsQueuedOrAFlushWaits) {
  Make(64, 1, /*coalesce_pages=*/8, /*coalesce_delay=*/absl::Hours(1));
  for (uint64_t s = 0; s < 3; ++s) ASSERT_TRUE(dev_->Write(s * kPage, PageOf(1)).ok());
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(inner_->pages_written(), 0u);  // three of eight: they wait
  EXPECT_EQ(ReadPages(dev_.get(), 2), PageOf(1));
  for (uint64_t s = 3; s < 8; ++s) ASSERT_TRUE(dev_->Write(s * kPage, PageOf(1)).ok());
  EXPECT_TRUE(Eventually([&] { return inner_->pages_written() == 8; }));  // a batch: out
  for (uint64_t s = 8; s < 10; ++s) ASSERT_TRUE(dev_->Write(s * kPage, PageOf(2)).ok());
  ASSERT_TRUE(dev_->Flush().ok());  // a FLUSH does not wait for the gathering
  EXPECT_EQ(inner_->pages_written(), 10u);
  EXPECT_EQ(ReadPages(inner_->real(), 9), PageOf(2));
}

TEST_F(WriteBehindTest, AWriterWaitingForRoomEndsTheGathering) {
  Make(4, 1, /*coalesce_pages=*/64, /*coalesce_delay=*/absl::Hours(1));
  for (uint64_t s = 0; s < 4; ++s) ASSERT_TRUE(dev_->Write(s * kPage, PageOf(3)).ok());
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(inner_->pages_written(), 0u);
  std::atomic<bool> done{false};
  std::thread w([&] {
    EXPECT_TRUE(dev_->Write(9 * kPage, PageOf(4)).ok());
    done = true;
  });
  EXPECT_TRUE(Eventually([&] { return done.load(); }));
  w.join();
  EXPECT_GE(inner_->pages_written(), 1u);
  EXPECT_GE(dev_->stats().room_waits, 1u);
}

TEST_F(WriteBehindTest, GatheredPagesGoOutAfterTheDelayOnTheirOwn) {
  Make(64, 1, /*coalesce_pages=*/64, /*coalesce_delay=*/absl::Milliseconds(20));
  ASSERT_TRUE(dev_->Write(5 * kPage, PageOf(5)).ok());
  EXPECT_TRUE(Eventually([&] { return inner_->pages_written() == 1; }));
  EXPECT_EQ(ReadPages(inner_->real(), 5), PageOf(5));
}

TEST_F(WriteBehindTest, FailedFlushesKeepThePagesAndRetryThem) {
  Make(16);
  inner_->FailWrites(true);
  const std::vector<uint8_t> a = PageOf(0x5A);
  ASSERT_TRUE(dev_->Write(1 * kPage, a).ok());
  EXPECT_FALSE(dev_->Flush().ok());  // not durable while the device fails
  EXPECT_EQ(ReadPages(dev_.get(), 1), a);
  inner_->FailWrites(false);
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(ReadPages(inner_->real(), 1), a);
  EXPECT_GE(dev_->stats().flush_failures, 1u);
  EXPECT_EQ(dev_->stats().staged_pages, 0u);
}

TEST_F(WriteBehindTest, FullAndFailingWritesGoThroughAndReportTheError) {
  Make(2);
  inner_->FailWrites(true);
  ASSERT_TRUE(dev_->Write(1 * kPage, PageOf(1)).ok());
  ASSERT_TRUE(dev_->Write(2 * kPage, PageOf(2)).ok());
  EXPECT_FALSE(dev_->Flush().ok());
  absl::Status s = dev_->Write(3 * kPage, PageOf(3));  // no room, device failing
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_GE(dev_->stats().written_through, 1u);
  EXPECT_EQ(ReadPages(dev_.get(), 1), PageOf(1));  // nothing acknowledged was dropped
  EXPECT_EQ(ReadPages(dev_.get(), 2), PageOf(2));
  inner_->FailWrites(false);
  ASSERT_TRUE(dev_->Flush().ok());
  EXPECT_EQ(ReadPages(inner_->real(), 2), PageOf(2));
}

TEST_F(WriteBehindTest, DestructionDrainsTheArea) {
  Make(64);
  for (uint64_t s = 0; s < 200; ++s) {
    ASSERT_TRUE(dev_->Write(s * kPage, PageOf(static_cast<uint8_t>(s))).ok());
  }
  dev_.reset();
  for (uint64_t s = 0; s < 200; ++s) {
    ASSERT_EQ(ReadPages(inner_->real(), s), PageOf(static_cast<uint8_t>(s))) << s;
  }
}

// Threads on disjoint slot ranges run random writes (batched, partial),
// trims and reads against a small area, checking every read against their
// own model; then everything must be behind, identical to the models.
TEST_F(WriteBehindTest, ConcurrentRandomOperationsMatchAModel) {
  Make(24, /*flushers=*/3);
  constexpr int kThreads = 4;
  constexpr uint64_t kSlotsEach = 64;
  std::vector<std::vector<uint8_t>> model(kThreads, std::vector<uint8_t>(kSlotsEach * kPage, 0));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(1234 + t);
      std::vector<uint8_t>& m = model[t];
      const uint64_t base = t * kSlotsEach * kPage;
      for (int op = 0; op < 1500; ++op) {
        const uint64_t slot = rng() % kSlotsEach;
        const int kind = rng() % 10;
        if (kind < 4) {  // whole pages, 1-3, as one batch of requests
          const uint64_t n = std::min<uint64_t>(1 + rng() % 3, kSlotsEach - slot);
          std::vector<uint8_t> data = PageOf(static_cast<uint8_t>(rng()), n);
          std::vector<BlockDevice::Io> ios;
          for (uint64_t k = 0; k < n; ++k) {
            ios.push_back({base + (slot + k) * kPage, absl::MakeSpan(data.data() + k * kPage, kPage), {}});
          }
          dev_->WriteBatch(absl::MakeSpan(ios));
          for (auto& io : ios) ASSERT_TRUE(io.status.ok()) << io.status;
          std::memcpy(m.data() + slot * kPage, data.data(), data.size());
        } else if (kind < 5) {  // partial
          const uint64_t off = slot * kPage + rng() % kPage;
          const uint64_t len = std::min<uint64_t>(1 + rng() % 6000, m.size() - off);
          std::vector<uint8_t> data(len, static_cast<uint8_t>(rng()));
          ASSERT_TRUE(dev_->Write(base + off, data).ok());
          std::memcpy(m.data() + off, data.data(), len);
        } else if (kind < 6) {  // trim, maybe partial
          const uint64_t off = slot * kPage + (rng() % 2 ? 0 : rng() % kPage);
          const uint64_t len = std::min<uint64_t>(1 + rng() % (3 * kPage), m.size() - off);
          ASSERT_TRUE(dev_->Trim(base + off, len).ok());
          std::memset(m.data() + off, 0, len);
        } else if (kind < 7 && op % 50 == 0) {
          ASSERT_TRUE(dev_->Flush().ok());
        } else {
          const uint64_t n = std::min<uint64_t>(1 + rng() % 4, kSlotsEach - slot);
          std::vector<uint8_t> out(n * kPage);
          ASSERT_TRUE(dev_->Read(base + slot * kPage, absl::MakeSpan(out)).ok());
          ASSERT_EQ(0, std::memcmp(out.data(), m.data() + slot * kPage, out.size()))
              << "thread " << t << " op " << op << " slot " << slot;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(dev_->Flush().ok());
  WriteBehindDevice::Stats st = dev_->stats();
  EXPECT_EQ(st.staged_pages, 0u);
  EXPECT_GT(st.staged_writes, 0u);
  EXPECT_GT(st.read_hits, 0u);
  EXPECT_GT(st.retained_hits, 0u);
  dev_.reset();
  for (int t = 0; t < kThreads; ++t) {
    std::vector<uint8_t> out(kSlotsEach * kPage);
    ASSERT_TRUE(inner_->real()->Read(t * kSlotsEach * kPage, absl::MakeSpan(out)).ok());
    EXPECT_EQ(0, std::memcmp(out.data(), model[t].data(), out.size())) << "thread " << t;
  }
}

}  // namespace
}  // namespace ramster
