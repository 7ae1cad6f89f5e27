// The two status macros Debian's Abseil (20220623) does not ship.
#ifndef RAMSTER_COMMON_STATUS_MACROS_H_
#define RAMSTER_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RAMSTER_RETURN_IF_ERROR(expr)               \
  do {                                              \
    ::absl::Status _ramster_status = (expr);        \
    if (!_ramster_status.ok()) return _ramster_status; \
  } while (0)

#define RAMSTER_CONCAT_INNER_(a, b) a##b
#define RAMSTER_CONCAT_(a, b) RAMSTER_CONCAT_INNER_(a, b)

// `lhs = *expr` if `expr` (an absl::StatusOr) is OK; otherwise returns its
// status from the enclosing function.
#define RAMSTER_ASSIGN_OR_RETURN(lhs, expr) \
  RAMSTER_ASSIGN_OR_RETURN_IMPL_(RAMSTER_CONCAT_(_ramster_or, __LINE__), lhs, expr)

#define RAMSTER_ASSIGN_OR_RETURN_IMPL_(var, lhs, expr) \
  auto var = (expr);                                   \
  if (!var.ok()) return var.status();                  \
  lhs = std::move(*var)

#endif  // RAMSTER_COMMON_STATUS_MACROS_H_
