#include "bench/round_trip_probe.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ramster {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

bool RoundTripFlagsValid(const char* tool, int rounds, int round_trips) {
  if (rounds >= 1 && rounds <= 1000 && round_trips >= 1 && round_trips <= 10000000) return true;
  fprintf(stderr, "%s: --rounds must be 1..1000, --round_trips 1..10000000\n", tool);
  return false;
}

bool MeasureRoundTrips(const char* tool, const std::string& key, int rounds, int round_trips,
                       const std::function<double(int round_trips)>& round, const char* failure,
                       std::vector<std::string>* json_fields) {
  round(std::max(1, round_trips / 10));  // warm-up
  std::vector<double> us;
  for (int r = 0; r < rounds; ++r) {
    const double u = round(round_trips);
    if (u < 0) {
      fprintf(stderr, "%s: %s: %s\n", tool, key.c_str(), failure);
      return false;
    }
    us.push_back(u);
  }
  const double median = Median(us);
  json_fields->push_back(absl::StrCat("\"", key, "_us\": ", median, ", \"", key,
                                      "_rounds_us\": [", absl::StrJoin(us, ", "), "]"));
  fprintf(stderr, "%s: %s %.1f us per round trip (median of %d)\n", tool, key.c_str(), median,
          rounds);
  return true;
}

int WriteRoundTripJson(const char* tool, const std::vector<std::string>& json_fields,
                       const std::string& path) {
  const std::string json = absl::StrCat("{", absl::StrJoin(json_fields, ", "), "}\n");
  if (path.empty()) {
    fputs(json.c_str(), stdout);
    return 0;
  }
  FILE* f = fopen(path.c_str(), "w");
  bool ok = f != nullptr && fputs(json.c_str(), f) >= 0;
  if (f != nullptr) ok = fclose(f) == 0 && ok;
  if (!ok) {
    fprintf(stderr, "%s: cannot write %s\n", tool, path.c_str());
    return 1;
  }
  return 0;
}

}  // namespace ramster
