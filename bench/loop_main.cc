// recserve-loop: the feedback loop on one machine (bench/feedback_loop.sh runs it).
//
//   recserve-loop --address=127.0.0.1:8500 --admin_address=127.0.0.1:8501 --world=W \
//     --model_dir=M --impressions=LOG --rounds=4
//
// The server serves M (version 1: trained on the world without served impressions) and
// logs every answer to LOG. Each round:
//   1. users of the world (a seeded sample) make sessions of requests carrying their
//      recent events (the world's, then every click simulated so far); each answer's
//      items are examined with probability 1 / (1 + position)^position_decay and clicked
//      with the world's click model (train/datagen.h ClickModel) when examined; clicks
//      join the user's events, so later requests carry them;
//   2. the round's answers are scored with the world's truth: clicks, expected clicks
//      per answer (sum over positions of examination x click probability), and the same
//      for the baseline bundle (version 1, loaded in-process as the server loads it) on
//      the identical requests, and the share of the ideal list's expected clicks (the
//      user's ten best items by the truth);
//   3. the trainer labels the whole log (train/impression_labels.h) with the world's
//      and the simulated events, trains on the world's slates plus the served ones
//      (train/served_rows.h), writes the next version into M, and waits until the
//      server serves it (Admin GetModelStatus).
// The last round only measures. One line per round on stdout. --clicks_csv keeps the
// simulated clicks as an event log, so that recserve-eval --impressions can label the
// last round's answers (which no version trained on).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "compression/compress.h"
#include "engine/onednn_util.h"
#include "engine/pipeline.h"
#include "engine/status_macros.h"
#include "recserve/v1/recommender.grpc.pb.h"
#include "train/click_truth.h"
#include "train/datagen.h"
#include "train/impression_labels.h"
#include "train/trainer.h"
#include "train/world.h"

ABSL_FLAG(std::string, address, "127.0.0.1:8500", "recserve's Recommender address");
ABSL_FLAG(std::string, admin_address, "127.0.0.1:8501", "recserve's Admin address (to see a version serve)");
ABSL_FLAG(std::string, world, "", "World directory the served bundle was trained on (recserve-datagen)");
ABSL_FLAG(std::string, model_dir, "", "The server's --model_base_path; version 1 is the baseline");
ABSL_FLAG(std::string, impressions, "", "The server's --impression_log_dir");
ABSL_FLAG(int, rounds, 4, "Rounds; each but the last ends with a training");
ABSL_FLAG(int, users, 300, "Users per round (a seeded sample)");
ABSL_FLAG(int, session, 3, "Requests per user per round, each carrying the clicks before it");
ABSL_FLAG(int, n, 10, "Items per answer");
ABSL_FLAG(int, max_events, 100, "Newest events per request");
ABSL_FLAG(double, position_decay, 1.0, "Examination of position k (0 = top): 1 / (1 + k)^decay");
ABSL_FLAG(absl::Duration, label_window, absl::Seconds(1), "Clicks this soon after an answer are its clicks");
ABSL_FLAG(std::string, hidden, "64,32", "Ranker widths (as the baseline's recserve-train --hidden)");
ABSL_FLAG(int, max_epochs, 30, "Ranker epochs at most (as the baseline's)");
ABSL_FLAG(uint64_t, seed, 11, "Training seed (as the baseline's recserve-train --seed)");
ABSL_FLAG(uint64_t, sim_seed, 7, "Seed of the users' sampling and clicks");
ABSL_FLAG(int, position_columns, 9, "Shown positions 1..N as training-only inputs (0: none, for comparison)");
ABSL_FLAG(std::string, clicks_csv, "",
          "Also write every simulated click to this events CSV (user_id,item_id,event_type,timestamp in ms), "
          "rewritten after each round: the event log recserve-eval --impressions labels the last round by");

namespace recserve {
namespace {

constexpr int64_t kHourMs = 3600 * 1000;

class Simulation {
 public:
  Simulation(World world, ClickModel truth) : world_(std::move(world)), truth_(std::move(truth)) {
    for (const auto* events : {&world_.train_events, &world_.test_events}) {
      for (const LoggedEvent& e : *events) history_[e.user_id].push_back(e);
    }
    for (auto& [user, events] : history_) {
      std::stable_sort(events.begin(), events.end(),
                       [](const LoggedEvent& a, const LoggedEvent& b) { return a.timestamp_ms < b.timestamp_ms; });
    }
    examination_ = ExaminationCurve(absl::GetFlag(FLAGS_n), absl::GetFlag(FLAGS_position_decay));
  }

  absl::Status Connect() {
    stub_ = v1::Recommender::NewStub(grpc::CreateChannel(absl::GetFlag(FLAGS_address), grpc::InsecureChannelCredentials()));
    admin_ = v1::Admin::NewStub(grpc::CreateChannel(absl::GetFlag(FLAGS_admin_address), grpc::InsecureChannelCredentials()));
    return LoadBaseline();
  }

  absl::Status Round(int round) {
    std::mt19937_64 rng(absl::GetFlag(FLAGS_sim_seed) * 1000003 + round);
    std::vector<uint64_t> users(truth_.num_users());
    for (size_t i = 0; i < users.size(); ++i) users[i] = i + 1;
    std::shuffle(users.begin(), users.end(), rng);
    users.resize(std::min<size_t>(users.size(), absl::GetFlag(FLAGS_users)));
    std::uniform_real_distribution<double> uniform(0, 1);
    int64_t requests = 0, shown = 0, clicks = 0;
    double served = 0, baseline = 0, ideal = 0, served_p = 0, baseline_p = 0;
    absl::flat_hash_map<int64_t, int64_t> versions;
    for (const uint64_t user : users) {
      for (int s = 0; s < absl::GetFlag(FLAGS_session); ++s) {
        v1::RecommendRequest request = MakeRequest(user);
        v1::RecommendResponse response;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        grpc::Status status = stub_->Recommend(&ctx, request, &response);
        if (!status.ok()) return absl::UnavailableError(absl::StrCat("Recommend: ", status.error_message()));
        ++requests;
        ++versions[response.model_version()];
        std::vector<uint64_t> items;
        for (const v1::RecommendedItem& item : response.items()) items.push_back(item.item_id());
        const int32_t device = request.context().device(), hour = request.context().hour();
        const ListScore now = Score(user, items, device, hour);
        ASSIGN_OR_RETURN(std::vector<uint64_t> base_items, BaselineAnswer(request));
        const ListScore base = Score(user, base_items, device, hour);
        served += now.expected_clicks;
        served_p += now.mean_p;
        baseline += base.expected_clicks;
        baseline_p += base.mean_p;
        ideal += Score(user, IdealList(user, device, hour), device, hour).expected_clicks;
        // The user's reaction: examined, then clicked by the world's model.
        int64_t t = absl::ToUnixMillis(absl::Now()) + 1;
        for (size_t k = 0; k < items.size(); ++k) {
          ++shown;
          const double p = examination_[k] * truth_.Probability(user, items[k], device, hour);
          if (uniform(rng) < p) {
            ++clicks;
            const LoggedEvent click{user, items[k], EventKind::kClick, t++};
            history_[user].push_back(click);
            simulated_.push_back(click);
          }
        }
        // The next request comes after these clicks, as it would: the log then sees
        // each click between the answer it followed and the next one.
        while (absl::ToUnixMillis(absl::Now()) <= t) absl::SleepFor(absl::Microseconds(200));
      }
    }
    std::string served_versions;
    for (const auto& [version, count] : versions) absl::StrAppend(&served_versions, served_versions.empty() ? "" : ",", version);
    std::printf("round %d  versions %-5s requests %5lld  CTR %.4f  expected clicks/answer %.4f (baseline %.4f, x%.3f)  "
                "mean p@%d %.4f (baseline %.4f, x%.3f)  share of ideal %.3f (baseline %.3f)\n",
                round, served_versions.c_str(), static_cast<long long>(requests),
                shown > 0 ? static_cast<double>(clicks) / shown : 0.0, served / requests, baseline / requests,
                baseline > 0 ? served / baseline : 0.0, absl::GetFlag(FLAGS_n), served_p / requests,
                baseline_p / requests, baseline_p > 0 ? served_p / baseline_p : 0.0, served / ideal, baseline / ideal);
    std::fflush(stdout);
    total_requests_ += requests;
    return WriteClicks();
  }

  // Labels the whole log, trains, writes version `version` and waits until it serves.
  absl::Status Train(int64_t version) {
    // Every answer written (the writer runs behind the request path) and every window over.
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    std::vector<v1::Impression> records;
    absl::SleepFor(absl::GetFlag(FLAGS_label_window));
    while (true) {
      ASSIGN_OR_RETURN(records, ReadImpressionLog(absl::GetFlag(FLAGS_impressions)));
      if (static_cast<int64_t>(records.size()) >= total_requests_) break;
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("the log holds ", records.size(), " records of ",
                                                        total_requests_, " answers"));
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    std::vector<LoggedEvent> events = world_.train_events;
    events.insert(events.end(), world_.test_events.begin(), world_.test_events.end());
    events.insert(events.end(), simulated_.begin(), simulated_.end());
    LabelOptions label_options;
    label_options.window = absl::GetFlag(FLAGS_label_window);
    label_options.event_log_end_ms = absl::ToUnixMillis(absl::Now());  // every simulated click is in `events`
    LabelStats stats;
    ASSIGN_OR_RETURN(std::vector<ServedSlate> slates, LabelImpressions(records, events, label_options, &stats));
    TrainerOptions options = TrainingOptions();
    options.served = std::move(slates);
    ASSIGN_OR_RETURN(TrainOutput out, TrainModel(world_, options));
    ASSIGN_OR_RETURN(std::string dir, WriteVersion(out.bundle, absl::GetFlag(FLAGS_model_dir), version));
    std::printf("trained version %lld on %lld served items (%lld clicked of %zu simulated clicks, %lld open left "
                "out) and the world's slates: test AUC %.4f, %.1f s\n",
                static_cast<long long>(version), static_cast<long long>(stats.clicked + stats.not_clicked),
                static_cast<long long>(stats.clicked), simulated_.size(), static_cast<long long>(stats.open),
                out.report.test_auc(), out.seconds);
    return WaitServing(version);
  }

 private:
  TrainerOptions TrainingOptions() const {
    TrainerOptions options;
    options.verbose = false;
    options.seed = absl::GetFlag(FLAGS_seed);
    options.mlp.seed = options.seed;
    options.item2vec.seed = options.seed;
    options.mlp.max_epochs = absl::GetFlag(FLAGS_max_epochs);
    options.position_columns = absl::GetFlag(FLAGS_position_columns);
    options.mlp.hidden.clear();
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_hidden), ',', absl::SkipEmpty())) {
      int w = 0;
      if (absl::SimpleAtoi(part, &w) && w > 0) options.mlp.hidden.push_back(w);
    }
    return options;
  }

  v1::RecommendRequest MakeRequest(uint64_t user) const {
    v1::RecommendRequest request;
    request.set_user_id(absl::StrCat(user));
    request.set_n(absl::GetFlag(FLAGS_n));
    request.mutable_context()->set_device(static_cast<v1::Device>(truth_.UserDevice(user)));
    request.mutable_context()->set_hour(static_cast<int32_t>((absl::ToUnixMillis(absl::Now()) / kHourMs) % 24));
    auto it = history_.find(user);
    if (it != history_.end()) {
      const std::vector<LoggedEvent>& all = it->second;
      const size_t first = all.size() - std::min<size_t>(all.size(), absl::GetFlag(FLAGS_max_events));
      for (size_t i = first; i < all.size(); ++i) {
        v1::Event* e = request.add_events();
        e->set_item_id(all[i].item_id);
        e->set_type(static_cast<v1::EventType>(all[i].kind));
        e->set_timestamp_ms(all[i].timestamp_ms);
      }
    }
    return request;
  }

  ListScore Score(uint64_t user, const std::vector<uint64_t>& items, int32_t device, int32_t hour) const {
    return ScoreList(truth_, examination_, user, items, {device, hour});
  }

  // The user's n items with the highest click probability (examination falls with the
  // position, so best first is the best order).
  std::vector<uint64_t> IdealList(uint64_t user, int32_t device, int32_t hour) const {
    std::vector<std::pair<double, uint64_t>> all(truth_.num_items());
    for (int i = 0; i < truth_.num_items(); ++i) {
      all[i] = {-truth_.Probability(user, i + 1, device, hour), static_cast<uint64_t>(i + 1)};
    }
    const size_t n = std::min(all.size(), examination_.size());
    std::partial_sort(all.begin(), all.begin() + n, all.end());
    std::vector<uint64_t> items(n);
    for (size_t i = 0; i < n; ++i) items[i] = all[i].second;
    return items;
  }

  absl::Status LoadBaseline() {
    const std::string path = absl::StrCat(absl::GetFlag(FLAGS_model_dir), "/1");
    ModelOptions model_options;
    auto check = InstallCompression(PolicyOverrides(), &model_options);
    ASSIGN_OR_RETURN(baseline_, Model::Load(path, 1, model_options));
    v1::ModelFigures figures;
    return check(*baseline_, &figures);
  }

  // Version 1's answer to `request`, computed in-process as the server computes it.
  absl::StatusOr<std::vector<uint64_t>> BaselineAnswer(const v1::RecommendRequest& request) {
    std::vector<QueryEvent> events;
    for (const v1::Event& e : request.events()) {
      events.push_back({e.item_id(), static_cast<EventType>(e.type()), e.timestamp_ms()});
    }
    return AnswerItems(*baseline_, events, {request.context().device(), request.context().hour()}, request.n(),
                       &scratch_);
  }

  absl::Status WriteClicks() const {
    const std::string path = absl::GetFlag(FLAGS_clicks_csv);
    if (path.empty()) return absl::OkStatus();
    std::ofstream out(path, std::ios::trunc);
    out << "user_id,item_id,event_type,timestamp\n";
    for (const LoggedEvent& e : simulated_) out << e.user_id << ',' << e.item_id << ",click," << e.timestamp_ms << "\n";
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(path, ": cannot write the clicks"));
    return absl::OkStatus();
  }

  absl::Status WaitServing(int64_t version) {
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    while (absl::Now() < deadline) {
      v1::GetModelStatusResponse status;
      grpc::ClientContext ctx;
      if (admin_->GetModelStatus(&ctx, v1::GetModelStatusRequest(), &status).ok() &&
          status.serving_version() == version) {
        return absl::OkStatus();
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    return absl::DeadlineExceededError(absl::StrCat("version ", version, " did not serve within 120 s"));
  }

  const World world_;
  const ClickModel truth_;
  std::vector<double> examination_;
  absl::flat_hash_map<uint64_t, std::vector<LoggedEvent>> history_;  // per user, oldest first
  std::vector<LoggedEvent> simulated_;
  int64_t total_requests_ = 0;
  std::unique_ptr<v1::Recommender::Stub> stub_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::shared_ptr<const Model> baseline_;
  PipelineScratch scratch_;
};

absl::Status Run() {
  ASSIGN_OR_RETURN(WorldWithTruth world, ReadWorldWithTruth(absl::GetFlag(FLAGS_world)));
  std::printf("oneDNN ISA %s; %d users x %d requests per round, examination 1 / (1 + position)^%g\n",
              CpuIsaName().c_str(), absl::GetFlag(FLAGS_users), absl::GetFlag(FLAGS_session),
              absl::GetFlag(FLAGS_position_decay));
  Simulation sim(std::move(world.world), std::move(world.truth));
  RETURN_IF_ERROR(sim.Connect());
  const int rounds = absl::GetFlag(FLAGS_rounds);
  for (int round = 0; round < rounds; ++round) {
    RETURN_IF_ERROR(sim.Round(round));
    if (round + 1 < rounds) RETURN_IF_ERROR(sim.Train(round + 2));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace recserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "The feedback loop against a running recserve: simulated users, logged answers, retraining.\n"
      "  recserve-loop --address=HOST:PORT --admin_address=HOST:PORT --world=DIR --model_dir=DIR --impressions=DIR");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_world).empty() || absl::GetFlag(FLAGS_model_dir).empty() ||
      absl::GetFlag(FLAGS_impressions).empty()) {
    std::fprintf(stderr, "recserve-loop: --world, --model_dir and --impressions are required\n");
    return 2;
  }
  if (absl::Status status = recserve::Run(); !status.ok()) {
    std::fprintf(stderr, "recserve-loop: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
