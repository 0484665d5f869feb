// recserve-cli: talk to a running recserve.
//
//   recserve-cli recommend --events=1017:click,2044:view,3001:purchase@1700000000000 --n=10
//   recserve-cli recommend --events=85123A:purchase,71053:view --exclude_types=view,click
//   recserve-cli status
//   recserve-cli health [--service=recserve.v1.Recommender]
//   recserve-cli reload                 (scan the model directory now; waits for the load)
//   recserve-cli pin --version=N        (serve version N; --version=0 returns to the newest)
//   recserve-cli rollout --version=N --action=canary|shadow|promote|abort [--share=0.1]
//                                       (change, promote or abort the roll-out of version N)
//
// Events are item[:type][@unix_ms], comma-separated, oldest first; item is the item's
// key (a SKU such as 85123A, sent as Event.item) or a canonical number (sent as
// item_id); type is view, click (default), cart or purchase; without @time the events
// are spaced one minute apart ending now. Keys holding ',' cannot be given here; in a
// key holding ':' or '@', the last one separates.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "recserve/v1/recommender.grpc.pb.h"

ABSL_FLAG(std::string, address, "localhost:8500", "recserve address (Recommender, health)");
ABSL_FLAG(std::string, admin_address, "localhost:8501", "recserve admin address (status)");
ABSL_FLAG(std::string, user, "", "User id sent with the request");
ABSL_FLAG(std::string, events, "", "Events: item[:type][@unix_ms],... oldest first");
ABSL_FLAG(int, n, 10, "Items wanted");
ABSL_FLAG(std::string, device, "", "mobile, desktop or tablet");
ABSL_FLAG(int, hour, -1, "Hour of day 0..23");
ABSL_FLAG(int, per_category_cap, 0, "At most this many items per category (0 = no cap)");
ABSL_FLAG(bool, keep_purchased, false, "Keep items the user purchased");
ABSL_FLAG(std::string, exclude_types, "",
          "recommend: drop items the user has events of these types on: view,click,cart,purchase "
          "(empty: the model's default)");
ABSL_FLAG(std::string, exclude_items, "",
          "recommend: never return these items, comma-separated keys or ids (e.g. already shown)");
ABSL_FLAG(std::string, service, "recserve.v1.Recommender", "health: service to check (\"\" = liveness)");
ABSL_FLAG(int, timeout_ms, 0, "Deadline of the call (0: 5000, or 120000 for reload and pin, which wait for a load)");
ABSL_FLAG(int64_t, version, -1, "pin: version to serve (0 = back to the newest); rollout: the version rolling out");
ABSL_FLAG(std::string, action, "", "rollout: canary, shadow (set its share or switch roles), promote or abort");
ABSL_FLAG(double, share, 0, "rollout canary|shadow: its new share (0: keep it)");

namespace {

using recserve::v1::EventType;

bool ParseType(absl::string_view s, EventType* type) {
  if (s == "view") *type = recserve::v1::VIEW;
  else if (s == "click") *type = recserve::v1::CLICK;
  else if (s == "cart") *type = recserve::v1::CART;
  else if (s == "purchase") *type = recserve::v1::PURCHASE;
  else return false;
  return true;
}

// A canonical decimal item id ("71053", not "071053"): CanonicalNumericKey of
// engine/item_key.h, repeated here because the CLI links only the protos.
bool CanonicalId(absl::string_view s, uint64_t* id) {
  if (s.empty() || s.size() > 19 || (s.size() > 1 && s[0] == '0')) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(s, id) && (*id >> 63) == 0;
}

bool ParseEvents(const std::string& text, recserve::v1::RecommendRequest* request, std::string* error) {
  std::vector<std::string> parts = absl::StrSplit(text, ',', absl::SkipWhitespace());
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string part = parts[i];
    recserve::v1::Event* e = request->add_events();
    int64_t ts = now_ms - static_cast<int64_t>(parts.size() - 1 - i) * 60000;
    if (auto at = part.rfind('@'); at != std::string::npos) {
      if (!absl::SimpleAtoi(part.substr(at + 1), &ts)) {
        *error = absl::StrFormat("event %d '%s': time '%s' is not unix milliseconds", i + 1, parts[i],
                                 part.substr(at + 1));
        return false;
      }
      part = part.substr(0, at);
    }
    EventType type = recserve::v1::CLICK;
    if (auto colon = part.rfind(':'); colon != std::string::npos) {
      if (!ParseType(part.substr(colon + 1), &type)) {
        *error = absl::StrFormat("event %d '%s': type '%s' is not view, click, cart or purchase", i + 1,
                                 parts[i], part.substr(colon + 1));
        return false;
      }
      part = part.substr(0, colon);
    }
    uint64_t item = 0;
    if (part.empty()) {
      *error = absl::StrFormat("event %d '%s': no item", i + 1, parts[i]);
      return false;
    }
    if (CanonicalId(part, &item)) {
      e->set_item_id(item);
    } else {
      e->set_item(part);  // a key; the server checks it
    }
    e->set_type(type);
    e->set_timestamp_ms(ts);
  }
  return true;
}

std::string Sources(uint32_t bits) {
  std::vector<std::string> names;
  if (bits & recserve::v1::EMBEDDING) names.push_back("embedding");
  if (bits & recserve::v1::COVISIT) names.push_back("covisit");
  if (bits & recserve::v1::POPULARITY) names.push_back("popularity");
  return absl::StrJoin(names, "+");
}

// "serving", "canary", "shadow" ("" for ROLE_NONE).
std::string RoleName(recserve::v1::ServingRole role) {
  if (role == recserve::v1::ROLE_NONE) return "";
  return absl::AsciiStrToLower(recserve::v1::ServingRole_Name(role).substr(5));  // drop "ROLE_"
}

// The roll-out lines under a version of `status`: mode, share, rules, figures, verdict.
void PrintRollout(const recserve::v1::VersionStatus& v) {
  if (!v.has_rollout()) return;
  const auto& r = v.rollout();
  std::printf("%8s  rollout: %s %.4g of %s, %.0f of %.0f s observed; rules: %s\n", "", RoleName(r.mode()).c_str(),
              r.share(), r.mode() == recserve::v1::ROLE_CANARY ? "users" : "requests", r.observed_seconds(),
              r.window_seconds(), r.rules().c_str());
  for (const auto* side : {&r.canary(), &r.serving()}) {
    std::printf("%8s    %-7s v%lld: %lld calls, %lld errors, p99 %.2f ms, %lld scores\n", "",
                side == &r.canary() ? RoleName(r.mode()).c_str() : "serving", static_cast<long long>(side->version()),
                static_cast<long long>(side->calls()), static_cast<long long>(side->errors()), side->p99_ms(),
                static_cast<long long>(side->scores()));
  }
  std::printf("%8s    error ratio %.2f, p99 ratio %.2f, score PSI %.3f, top-k overlap %.3f (%lld samples)\n", "",
              r.error_ratio(), r.p99_ratio(), r.score_psi(), r.topk_overlap(),
              static_cast<long long>(r.overlap_samples()));
  std::printf("%8s    verdict: %s\n", "", r.verdict().c_str());
}

void SetDeadline(grpc::ClientContext* ctx, int default_ms = 5000) {
  const int ms = absl::GetFlag(FLAGS_timeout_ms) > 0 ? absl::GetFlag(FLAGS_timeout_ms) : default_ms;
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

int Fail(const std::string& what, const grpc::Status& status, const std::string& address) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::fprintf(stderr, "recserve-cli: %s: cannot reach recserve at %s (%s)\n", what.c_str(),
                 address.c_str(), status.error_message().c_str());
  } else {
    std::fprintf(stderr, "recserve-cli: %s: %s: %s\n", what.c_str(),
                 absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())).c_str(),
                 status.error_message().c_str());
  }
  return 1;
}

int Recommend() {
  recserve::v1::RecommendRequest request;
  request.set_user_id(absl::GetFlag(FLAGS_user));
  request.set_n(absl::GetFlag(FLAGS_n));
  std::string error;
  if (!ParseEvents(absl::GetFlag(FLAGS_events), &request, &error)) {
    std::fprintf(stderr, "recserve-cli: --events: %s\n", error.c_str());
    return 2;
  }
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device == "mobile") request.mutable_context()->set_device(recserve::v1::MOBILE);
  else if (device == "desktop") request.mutable_context()->set_device(recserve::v1::DESKTOP);
  else if (device == "tablet") request.mutable_context()->set_device(recserve::v1::TABLET);
  else if (!device.empty()) {
    std::fprintf(stderr, "recserve-cli: --device: '%s' is not mobile, desktop or tablet\n", device.c_str());
    return 2;
  }
  request.mutable_context()->set_hour(absl::GetFlag(FLAGS_hour));
  request.mutable_options()->set_per_category_cap(absl::GetFlag(FLAGS_per_category_cap));
  request.mutable_options()->set_keep_purchased(absl::GetFlag(FLAGS_keep_purchased));
  request.mutable_options()->set_include_timings(true);
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_exclude_types), ',', absl::SkipWhitespace())) {
    EventType type;
    if (!ParseType(name, &type)) {
      std::fprintf(stderr, "recserve-cli: --exclude_types: '%s' is not view, click, cart or purchase\n",
                   std::string(name).c_str());
      return 2;
    }
    request.mutable_options()->add_exclude_event_types(type);
  }
  for (absl::string_view item : absl::StrSplit(absl::GetFlag(FLAGS_exclude_items), ',', absl::SkipWhitespace())) {
    uint64_t id = 0;
    if (CanonicalId(item, &id)) {
      request.mutable_options()->add_exclude_item_ids(id);
    } else {
      request.mutable_options()->add_exclude_items(std::string(item));
    }
  }

  const std::string address = absl::GetFlag(FLAGS_address);
  auto stub = recserve::v1::Recommender::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  recserve::v1::RecommendResponse response;
  grpc::Status status = stub->Recommend(&ctx, request, &response);
  if (!status.ok()) return Fail("recommend", status, address);
  std::printf("model %s version %lld (%s), %d candidates, %d unknown items, request %s\n",
              response.model_name().c_str(), static_cast<long long>(response.model_version()),
              RoleName(response.model_role()).c_str(), response.candidates(), response.unknown_items(),
              response.request_id().c_str());
  if (response.degraded() != recserve::v1::DEGRADED_NONE) {
    // The deadline (--timeout_ms) left no time for the whole pipeline.
    std::printf("degraded: %s\n", recserve::v1::Degraded_Name(response.degraded()).c_str());
  }
  std::printf("%4s  %12s  %8s  %8s  %s\n", "rank", "item", "score", "category", "sources");
  for (int i = 0; i < response.items_size(); ++i) {
    const auto& it = response.items(i);
    // The key (servers before keys existed send none: the id then).
    const std::string item = it.item().empty() ? std::to_string(it.item_id()) : it.item();
    std::printf("%4d  %12s  %8.4f  %8d  %s\n", i + 1, item.c_str(), it.score(), it.category(),
                Sources(it.sources()).c_str());
  }
  const auto& t = response.timings();
  std::printf("timings: recall %.2f ms, features %.2f ms, rank %.2f ms, total %.2f ms\n", t.recall_ms(),
              t.features_ms(), t.rank_ms(), t.total_ms());
  return 0;
}

int Status() {
  const std::string address = absl::GetFlag(FLAGS_admin_address);
  auto stub = recserve::v1::Admin::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  recserve::v1::GetModelStatusResponse response;
  grpc::Status status = stub->GetModelStatus(&ctx, {}, &response);
  if (!status.ok()) return Fail("status", status, address);
  const std::string policy = response.pinned_version() == 0
                                 ? std::string("newest; no pin")
                                 : absl::StrFormat("pinned to version %d", response.pinned_version());
  std::printf("model %s at %s, serving version %lld (%s)\n", response.model_name().c_str(),
              response.base_path().c_str(), static_cast<long long>(response.serving_version()),
              policy.c_str());
  std::printf("%8s  %-10s  %-14s  %8s  %10s  %8s  %9s  %s\n", "version", "state", "role", "items", "params",
              "load s", "auc delta", "ranker / error");
  for (const auto& v : response.versions()) {
    const auto& f = v.figures();
    const std::string role = v.role() == recserve::v1::ROLE_CANARY || v.role() == recserve::v1::ROLE_SHADOW
                                 ? absl::StrFormat("%s %.4g", RoleName(v.role()), v.share())
                                 : RoleName(v.role());
    std::printf("%8lld  %-10s  %-14s  %8lld  %10lld  %8.2f  %9.5f  %s\n", static_cast<long long>(v.version()),
                recserve::v1::VersionState_Name(v.state()).c_str(), role.c_str(), static_cast<long long>(f.items()),
                static_cast<long long>(f.parameters()), v.load_seconds(), f.auc_delta(),
                v.error().empty() ? absl::StrFormat("%s, %s (recall@100 %.3f)", f.compression(), f.embedding_index(), f.index_recall()).c_str()
                                  : v.error().c_str());
    if (!f.compression_fallback_reason().empty()) {
      // The accuracy gate refused the asked compression (or its first int8 ranges) and the
      // form above serves instead.
      std::printf("%8s  asked %s%s; refused: %s\n", "", f.compression_requested().c_str(),
                  f.int8_calibration().empty() ? ""
                                               : absl::StrFormat(", serves %s int8 ranges", f.int8_calibration()).c_str(),
                  f.compression_fallback_reason().c_str());
    }
    PrintRollout(v);
    if (v.has_shadow()) {
      // Scored as the shadow: its comparison with the serving version (docs/operations.md).
      const auto& s = v.shadow();
      std::printf("%8s  shadow vs version %lld: %lld sampled, %lld scored, %lld dropped, %lld failed; top-k overlap "
                  "%.3f, score PSI %.4f; p99 %.2f ms vs %.2f ms served (%.2fx)\n",
                  "", static_cast<long long>(s.serving_version()), static_cast<long long>(s.sampled()),
                  static_cast<long long>(s.scored()), static_cast<long long>(s.dropped()),
                  static_cast<long long>(s.failed()), s.topk_overlap_mean(), s.score_psi(),
                  s.shadow_p99_seconds() * 1e3, s.served_p99_seconds() * 1e3, s.latency_ratio_p99());
    }
    if (f.training().has_distillation()) {
      // A distilled ranker, as its trainer measured it against its teacher and the
      // same-size ranker trained without one, on the same held-out rows.
      const auto& d = f.training().distillation();
      std::printf("%8s  distilled (alpha %.2f, T %.1f) from %s; on %d held-out rows:\n", "", d.alpha(),
                  d.temperature(), d.teacher().c_str(), d.held_out_rows());
      for (const auto& r : d.rankers()) {
        std::printf("%8s    %-8s AUC %.4f  NDCG@10 %.4f  %lld MACs  %.1f ns/candidate as %s\n", "", r.name().c_str(),
                    r.auc(), r.ndcg10(), static_cast<long long>(r.macs_per_row()), r.served_ns_per_candidate(),
                    r.served_form().c_str());
      }
    }
  }
  return 0;
}

int Rollout() {
  const std::string address = absl::GetFlag(FLAGS_admin_address);
  const std::string action = absl::GetFlag(FLAGS_action);
  recserve::v1::SetRolloutRequest request;
  if (action == "canary") request.set_action(recserve::v1::ROLLOUT_CANARY);
  else if (action == "shadow") request.set_action(recserve::v1::ROLLOUT_SHADOW);
  else if (action == "promote") request.set_action(recserve::v1::ROLLOUT_PROMOTE);
  else if (action == "abort") request.set_action(recserve::v1::ROLLOUT_ABORT);
  else {
    std::fprintf(stderr, "recserve-cli rollout: --action='%s' is not canary, shadow, promote or abort\n", action.c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_version) <= 0) {
    std::fprintf(stderr, "recserve-cli rollout: give --version=N, the version rolling out\n");
    return 2;
  }
  request.set_version(absl::GetFlag(FLAGS_version));
  request.set_share(absl::GetFlag(FLAGS_share));
  auto stub = recserve::v1::Admin::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  recserve::v1::SetRolloutResponse response;
  grpc::Status status = stub->SetRollout(&ctx, request, &response);
  if (!status.ok()) return Fail("rollout", status, address);
  const auto& v = response.version();
  std::printf("version %lld: %s%s, serving version %lld\n", static_cast<long long>(v.version()),
              recserve::v1::VersionState_Name(v.state()).c_str(),
              v.role() == recserve::v1::ROLE_NONE ? "" : absl::StrFormat(" (%s)", RoleName(v.role())).c_str(),
              static_cast<long long>(response.serving_version()));
  PrintRollout(v);
  return 0;
}

int Reload() {
  const std::string address = absl::GetFlag(FLAGS_admin_address);
  auto stub = recserve::v1::Admin::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, /*default_ms=*/120000);  // may wait for a model load
  recserve::v1::ReloadModelsResponse response;
  grpc::Status status = stub->ReloadModels(&ctx, {}, &response);
  if (!status.ok()) return Fail("reload", status, address);
  std::printf("serving version %lld\n", static_cast<long long>(response.serving_version()));
  return 0;
}

int Pin() {
  const std::string address = absl::GetFlag(FLAGS_admin_address);
  const int64_t version = absl::GetFlag(FLAGS_version);
  if (version < 0) {
    std::fprintf(stderr, "recserve-cli pin: give --version=N (N > 0 pins it, 0 returns to the newest)\n");
    return 2;
  }
  auto stub = recserve::v1::Admin::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, /*default_ms=*/120000);  // may wait for a model load
  recserve::v1::SetServingVersionRequest request;
  request.set_version(version);
  recserve::v1::SetServingVersionResponse response;
  grpc::Status status = stub->SetServingVersion(&ctx, request, &response);
  if (!status.ok()) return Fail("pin", status, address);
  std::printf("serving version %lld%s\n", static_cast<long long>(response.serving_version()),
              version == 0 ? " (newest)" : " (pinned)");
  return 0;
}

int Health() {
  const std::string address = absl::GetFlag(FLAGS_address);
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&ctx, request, &response);
  if (!status.ok()) return Fail("health", status, address);
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "recserve-cli recommend|status|health|reload|pin|rollout [flags]\n"
      "  recommend --events=1017:click,85123A:view@1700000000000 --n=10 [--exclude_types=view]\n"
      "            [--exclude_items=85123A,2044]\n"
      "  status    (admin listener)\n"
      "  health    [--service=recserve.v1.Recommender | --service=]\n"
      "  reload    (admin listener: scan the model directory now)\n"
      "  pin       --version=N (admin listener; 0 = back to the newest)\n"
      "  rollout   --version=N --action=canary|shadow|promote|abort [--share=0.1] (admin listener)");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  const std::string command = args[1];
  if (command == "recommend") return Recommend();
  if (command == "status") return Status();
  if (command == "health") return Health();
  if (command == "reload") return Reload();
  if (command == "pin") return Pin();
  if (command == "rollout") return Rollout();
  std::fprintf(stderr, "recserve-cli: unknown command '%s' (recommend, status, health, reload, pin, rollout)\n",
               command.c_str());
  return 2;
}
