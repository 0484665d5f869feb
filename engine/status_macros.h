// Small helpers for absl::Status plumbing inside recserve. Open-source Abseil has no
// RETURN_IF_ERROR / ASSIGN_OR_RETURN; these are the usual two.
#ifndef RECSERVE_ENGINE_STATUS_MACROS_H_
#define RECSERVE_ENGINE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RECSERVE_CONCAT_INNER(a, b) a##b
#define RECSERVE_CONCAT(a, b) RECSERVE_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status recserve_status_ = (expr);      \
    if (!recserve_status_.ok()) return recserve_status_; \
  } while (0)

// `lhs = value of rexpr` (an absl::StatusOr<T>), or returns its error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL(RECSERVE_CONCAT(recserve_statusor_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                          \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // RECSERVE_ENGINE_STATUS_MACROS_H_
