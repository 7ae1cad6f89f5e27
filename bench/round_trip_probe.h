// What the machine probes (wakeup_probe, wire_probe) share: each measures
// microseconds per round trip in a few placements, as rounds after one
// untimed warm-up, and writes every round and their median as one JSON
// object for the bench report's machine section.
//
// Thread safety: each function may be called from one thread at a time.
#ifndef RAMSTER_BENCH_ROUND_TRIP_PROBE_H_
#define RAMSTER_BENCH_ROUND_TRIP_PROBE_H_

#include <functional>
#include <string>
#include <vector>

namespace ramster {

// False (after saying why on stderr, prefixed with `tool`) unless rounds is
// 1..1000 and round_trips 1..10000000.
bool RoundTripFlagsValid(const char* tool, int rounds, int round_trips);

// Runs `round` once with a tenth of `round_trips` (warm-up), then `rounds`
// times with `round_trips`; `round` returns microseconds per round trip, or
// a negative number if it failed. Appends "<key>_us" (the median) and
// "<key>_rounds_us" (every round) to `json_fields` and logs the median. If a
// round fails, logs "<tool>: <key>: <failure>" and returns false.
bool MeasureRoundTrips(const char* tool, const std::string& key, int rounds, int round_trips,
                       const std::function<double(int round_trips)>& round, const char* failure,
                       std::vector<std::string>* json_fields);

// Writes {json_fields} to `path`, or to stdout if it is empty. Returns the
// process's exit status: 0, or 1 if the file could not be written.
int WriteRoundTripJson(const char* tool, const std::vector<std::string>& json_fields,
                       const std::string& path);

}  // namespace ramster

#endif  // RAMSTER_BENCH_ROUND_TRIP_PROBE_H_
